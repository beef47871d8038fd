"""The standard file descriptors 0, 1 and 2 of a process started with some of them closed.

The CLI fills all three before anything is opened (cli/app.py ``main``); logging fills fd 2
where a process without ``sys.stderr`` configures it (observability/logging.py). One
function for both, so the two cannot drift apart.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable


def fill_closed_std_fds(fds: Iterable[int] = (0, 1, 2)) -> set[int]:
    """Open /dev/null on each of ``fds`` (of 0, 1 and 2) that is closed
    (``ragstore backup x.dump >&-``); return those that were.

    The kernel gives the lowest free number to the next file opened: with fd 1 closed, the
    backup's lock file or the connection to PostgreSQL became fd 1 (with fd 2 closed, the
    connection became fd 2), and what a library's C code writes to stdout or stderr (a
    Rust or C++ warning, a fatal error's report) went into that file or connection. Filled
    here, before anything is opened, those files get numbers of their own."""
    closed: set[int] = set()
    for fd in fds:
        try:
            os.fstat(fd)
            continue
        except OSError as exc:
            if exc.errno != errno.EBADF:
                continue
        closed.add(fd)
        try:
            null = os.open(os.devnull, os.O_RDONLY if fd == 0 else os.O_WRONLY)
        except OSError:  # no /dev/null (a bare chroot): left as it was
            continue
        if null != fd:  # not the lowest free number after all: put it in its place
            os.dup2(null, fd)
            os.close(null)
        # inherited, as a standard stream is: a child process (the parse helper) started
        # with it closed had the same hole for its own first file
        os.set_inheritable(fd, True)
    return closed
