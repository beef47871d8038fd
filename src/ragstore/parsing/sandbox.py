"""Binary formats parsed in a child process that the ingest can stop.

pypdf, python-docx, python-pptx and the EPUB reader are large codebases reading bytes
anyone may send, and not every input ends in reasonable time: a PDF page's content stream
is inflated and interpreted operator by operator, and one stream may be shared by every
page. A 4.5 KB PDF of ten pages sharing one stream took pypdf 12.6 s and gave 2.2 MB of
text; with pypdf's own limit of 75 MB a stream and a thousand pages, a file of a few
hundred kilobytes would take days. A thread cannot be stopped, so parsed in the ingesting
process such a file would hold the ingest (or an API job's worker, and the bulk load's
locks) for as long, and a parser that crashes (a C extension, the OOM killer) would take
the process with it.

So these formats are parsed by a helper process: after ``RAGSTORE_PARSE_TIMEOUT_S`` it is
killed and the file fails alone with ``parse_timeout``; if it dies, the file fails with
``corrupt_document`` saying how it ended (its exit status, or the signal that killed it),
or with ``payload_too_large`` when it ran out of its memory; the rest of the batch goes on
either way, and the next file gets a new helper (one that cannot start, for want of
descriptors, memory or a runnable Python, fails its file with ``parse_helper_unavailable``,
the machine's state, not the file's). The helper is a fresh interpreter
(``python -m ragstore.parsing.sandbox``) rather than a fork: the ingesting process runs
reader, writer and database threads whose locks a fork could copy mid-use. Helpers are kept
and lent one per thread parsing at once (one starts in about half a second; a file then
costs the pickling of its bytes and of the parsed document), and each exits when its parent
does. Plain text files are parsed in process (the parser is ours and linear) unless they
are large (``LARGE_TEXT_BYTES``), and Markdown, HTML, code and notebooks unless they are
more than a few kilobytes (``LARGE_MARKUP_BYTES``): their parsers are not ours, and slow on
hostile input. Then in a helper too, whose address space is capped
(``HELPER_MEMORY_BYTES``), and a text file that breaks into more blocks than
``BYTES_PER_BLOCK`` allows is refused before its blocks reach the ingesting process.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from multiprocessing.reduction import ForkingPickler
from pathlib import Path
from typing import Any

from ragstore.errors import (
    CorruptDocumentError,
    FileTooLargeError,
    ParseHelperUnavailableError,
    ParseTimeoutError,
    RagstoreError,
)
from ragstore.models import ParsedDocument
from ragstore.parsing.limits import HELPER_MEMORY_BYTES, mark_parse_helper, out_of_memory
from ragstore.parsing.registry import BYTES_PARSERS, parse_bytes

__all__ = ["HELPER_MEMORY_BYTES", "ISOLATED_FORMATS", "parse_file", "stop_helpers"]

ISOLATED_FORMATS = frozenset(BYTES_PARSERS)  # pdf, docx, pptx, epub
# Text files from this size are parsed in a helper too. Parsing holds about 1.3 KB of
# memory a block (1.5 MB of "a\n\n": 500,000 paragraphs, 630 MB; 2 MB of "- a\n" list
# items, about 1 GB in markdown-it), so a degenerate file at the 50 MB limit would take
# some 20 GB: in a helper it meets HELPER_MEMORY_BYTES instead of the OOM killer. And
# BeautifulSoup, Pygments and markdown-it's tables are linear but slow on a file of one
# element or token every few bytes: 750 KB of nested <div> took 24 s, 900 KB of "{" in a
# .js file 32 s, 350 KB of one wide Markdown table 12 s (a loaded 2-core machine); with
# 1 MB here such a file held the ingest (or an API worker) that long without a limit.
LARGE_TEXT_BYTES = 256 << 10
# ... and Markdown, HTML, source code and notebooks from this size: their parsers are not
# ours (markdown-it, BeautifulSoup on lxml, Pygments), and at up to 100 us a byte on a
# loaded machine a file under LARGE_TEXT_BYTES still held the ingest for seconds: 255 KB
# of "<p>a" took 25 s, of "<b>" 18 s, of "(" in a .py 19 s, of "{" in a .js 13 s, of
# "a\n\n" in a .md 10 s (bench/parse_worst.py). Below this size such a file parses in
# under a second; above it the helper costs little (a 12 KB README: 23 ms through one,
# 32 ms in process, on the same loaded machine).
LARGE_MARKUP_BYTES = 8 << 10
IN_PROCESS_LIMITS = {"text": LARGE_TEXT_BYTES, "plain": LARGE_TEXT_BYTES}  # others: MARKUP
# what the helper is asked: a file's bytes, its name, its format, its text limit
Request = tuple[bytes, str, str, int | None]
BYTES_PER_BLOCK = 32  # a text file may hold one block (paragraph, heading ...) per 32 bytes
STARTUP_TIMEOUT_S = 120.0  # a helper not ready by then is given up
# a start that failed for want of descriptors (EMFILE, ENFILE), memory or a process slot
# (ENOMEM, EAGAIN from fork) may work once other work ends: the API says when to retry
NO_DESCRIPTOR = frozenset({errno.EMFILE, errno.ENFILE})
NO_MEMORY = frozenset({errno.ENOMEM, errno.EAGAIN})
START_RETRY_AFTER_S = 5.0
READY = b"ready"
# A helper whose pipe closed is given this long to end by itself before it is killed: its
# exit status says what happened, which killing it first replaced with "signal 9" (Python
# closes the pipe while it shuts down after a traceback, before the process has ended)
EXIT_WAIT_S = 5.0
# the status a helper exits with when a MemoryError ends it: neither Python's own (1, 2,
# 120) nor one of sysexits' (64-78)
OUT_OF_MEMORY_STATUS = 86
# signals that mean the process crashed by itself (a bug in a C library), by name: not every
# platform has them all
CRASH_SIGNALS = frozenset({"SIGSEGV", "SIGBUS", "SIGILL", "SIGFPE"})


def parse_file(
    data: bytes, name: str, fmt: str, timeout_s: float, max_chars: int | None = None
) -> ParsedDocument:
    """:func:`parse_bytes`, in a helper process for a binary format, a plain text of
    ``LARGE_TEXT_BYTES`` or more or another text format of ``LARGE_MARKUP_BYTES`` or more
    when ``timeout_s`` is above 0 (0, or a Python without an interpreter to start: in this
    process, without a time limit); a text file's blocks are counted either way, and a
    file whose text grows past ``max_chars`` characters is stopped there (in the helper:
    a 31 KB deck of 3 GB of text ran it out of memory handing the text back)."""
    isolated = fmt in ISOLATED_FORMATS or len(data) >= in_process_limit(fmt)
    if timeout_s <= 0 or not isolated or not sys.executable:
        return _counted(parse_bytes(data, name, fmt, max_chars=max_chars), data, name, fmt)
    with _helpers.lent(name) as helper:
        ok, value = _ask(helper, (data, name, fmt, max_chars), timeout_s)
    if ok:
        assert isinstance(value, ParsedDocument)
        return value
    assert isinstance(value, RagstoreError)
    raise value  # the file's own error; the helper went back to the idle ones


def in_process_limit(fmt: str) -> int:
    """The size from which a text file of format ``fmt`` is parsed in a helper."""
    return IN_PROCESS_LIMITS.get(fmt, LARGE_MARKUP_BYTES)


def _counted(parsed: ParsedDocument, data: bytes, name: str, fmt: str) -> ParsedDocument:
    """``parsed``, unless a text file broke into more blocks than ``BYTES_PER_BLOCK``
    allows: each costs memory here and a row in the store (2.5 MB of "# a" lines were
    500,000 heading chunks). Binary formats are bounded by the text they unpack to."""
    limit = max(1000, len(data) // BYTES_PER_BLOCK)
    if fmt not in ISOLATED_FORMATS and len(parsed.blocks) > limit:
        raise FileTooLargeError(
            f"{name}: {len(parsed.blocks)} paragraphs, headings and other blocks in "
            f"{len(data)} bytes, more than one per {BYTES_PER_BLOCK} bytes ({limit}); "
            "is it a real document? Join its tiny paragraphs, or split the file"
        )
    return parsed


class _Helper:
    """One helper process and the two pipes to it, owned by the process that started it.
    Made, its process runs; :meth:`wait_ready` then waits until it can parse, where
    :meth:`_Helpers.lent` already holds it: an interrupt or :func:`stop_helpers` during
    that half second (seconds on a loaded machine) left a process running, or a parse
    that the interrupted ingest waited for, when the wait was part of making it."""

    def __init__(self, name: str) -> None:
        """Start a helper for file ``name`` (named by the error when it cannot start)."""
        self.owner = os.getpid()
        self.abandoned = False  # killed by stop_helpers(), not by its file
        try:
            self.proc, self.outbox, self.inbox = _spawn()
        except OSError as exc:  # no interpreter there; no process, pipe or memory left
            raise _spawn_failed(name, exc) from exc

    def wait_ready(self, name: str) -> None:
        """Wait until the helper says it is ready: a file's time limit counts its parse,
        not the helper's start (0.45 s idle, and seconds on a loaded machine).
        KeyboardInterrupt when :func:`stop_helpers` stopped it meanwhile;
        ``parse_helper_unavailable`` naming file ``name`` when it ended or hung first."""
        closed = False
        try:
            ready = self.inbox.poll(STARTUP_TIMEOUT_S) and self.inbox.recv_bytes() == READY
        except (EOFError, OSError):
            ready, closed = False, True
        if self.abandoned:  # the ingest was interrupted: it must not wait for this parse
            raise KeyboardInterrupt
        if not ready:
            if closed:  # it ended (an import failed?): its own status, not our kill's
                self.end()
            how = self.stop()
            raise _not_ready(name, closed, how, self.proc.returncode)

    def usable(self) -> bool:
        return self.owner == os.getpid() and self.proc.poll() is None

    def ask(self, request: Request, timeout_s: float) -> tuple[bool, Any]:
        """The helper's answer; TimeoutError after ``timeout_s``, EOFError or OSError when
        it died."""
        self.outbox.send(request)
        if not self.inbox.poll(timeout_s):
            raise TimeoutError
        answer: tuple[bool, Any] = self.inbox.recv()
        return answer

    def stop(self) -> str:
        """Kill the helper (once; again is a no-op); how it ended, in words."""
        if self.owner == os.getpid() and not self.outbox.closed:
            self.proc.kill()
            self.proc.wait()
            self.outbox.close()
            self.inbox.close()
        return self.ending()

    def end(self) -> bool:
        """Wait up to ``EXIT_WAIT_S`` for a helper whose pipe closed to end by itself, and
        kill it if it has not; True when it had to be killed."""
        if self.owner != os.getpid() or self.outbox.closed:
            return False
        try:
            self.proc.wait(EXIT_WAIT_S)
        except subprocess.TimeoutExpired:
            self.stop()
            return True
        self.stop()  # closes the pipes; the process has ended
        return False

    def ending(self) -> str:
        """How the helper's process ended, in words."""
        code = self.proc.returncode
        if code is None:
            return "still running"
        return f"killed by signal {-code}" if code < 0 else f"exit status {code}"


class _Helpers:
    """The helpers of this process: one lent to each thread parsing at once, up to one
    per core (a file that runs to the limit holds one helper, not every caller); idle ones
    are kept for the next file, a killed one is replaced when next needed."""

    def __init__(self) -> None:
        self.owner = os.getpid()
        self.lock = threading.Lock()
        self.idle: list[_Helper] = []
        self.busy: set[_Helper] = set()
        self.slots = threading.BoundedSemaphore(max(2, os.cpu_count() or 1))
        # how many times stop() ran: a helper being started (or just taken from the idle
        # ones) while it ran is in neither list, and is abandoned once it is in busy
        self.stops = 0

    @contextmanager
    def lent(self, name: str) -> Iterator[_Helper]:
        """A helper for file ``name``: an idle one, or one started for it."""
        with self.slots:
            with self.lock:
                helper = self.idle.pop() if self.idle else None
                stops = self.stops
            starting = False
            if helper is None or not helper.usable():
                if helper is not None:
                    helper.stop()  # it died while idle
                helper = _Helper(name)  # its process runs: from here it is stopped on the way out
                starting = True
            with self.lock:
                self.busy.add(helper)
                if self.stops != stops:  # stop() ran while it started, or was taken from idle
                    helper.abandoned = True
            answered = False
            try:
                if helper.abandoned:
                    raise KeyboardInterrupt
                if starting:
                    helper.wait_ready(name)
                yield helper
                answered = True
            finally:
                with self.lock:
                    self.busy.discard(helper)
                    if answered:
                        self.idle.append(helper)
                if not answered:
                    helper.stop()  # killed, dead, or interrupted mid-answer: never reused

    def stop(self) -> None:
        """Stop every helper: the idle ones here, the busy ones (starting ones too) by
        killing their process (the thread waiting on each then raises KeyboardInterrupt
        and cleans up)."""
        with self.lock:
            idle, self.idle = self.idle, []
            busy = list(self.busy)
            self.stops += 1
        for helper in idle:
            if helper.usable():
                helper.stop()
        for helper in busy:
            if helper.usable():
                helper.abandoned = True
                helper.proc.kill()


_helpers = _Helpers()


def stop_helpers() -> None:
    """Stop this process's helpers, busy ones too: an interrupted ingest must not wait for
    a parse whose result it will throw away (a slow file held Ctrl-C for 100 s)."""
    _helpers.stop()


def _spawn() -> tuple[subprocess.Popen[bytes], Connection, Connection]:
    """A helper's process (``python -m ragstore.parsing.sandbox``, not yet ready) and the
    ends of its two pipes this process keeps, to it and from it. Nothing is left open when
    this fails or is interrupted: a failed start kept two descriptors each time (a missing
    interpreter: 6 open became 16 in five files)."""
    to_helper_r, to_helper_w = os.pipe()
    try:
        from_helper_r, from_helper_w = os.pipe()
    except BaseException:
        _close(to_helper_r, to_helper_w)
        raise
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", __name__, str(to_helper_r), str(from_helper_w)],
            pass_fds=(to_helper_r, from_helper_w),
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # a Ctrl-C reaches the ingest, which decides
        )
    except BaseException:
        _close(to_helper_w, from_helper_r)
        raise
    finally:
        _close(to_helper_r, from_helper_w)  # the helper's ends: it has its own copies
    return proc, Connection(to_helper_w, readable=False), Connection(from_helper_r, writable=False)


def _close(*fds: int) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def _spawn_failed(name: str, exc: OSError) -> ParseHelperUnavailableError:
    """The error of file ``name`` whose helper's process could not be made (``exc``): no
    descriptor for its pipes, no memory or process slot for it (these pass: retryable), or
    no interpreter to run (which does not)."""
    if exc.errno in NO_DESCRIPTOR:
        return _not_started(
            name,
            f"could not start: no file descriptor left for its pipes ({exc})",
            "raise the open-files limit (ulimit -n; LimitNOFILE for a service) or ingest "
            "fewer files at once",
            passes=True,
        )
    if exc.errno in NO_MEMORY:
        return _not_started(
            name,
            f"could not start: no memory or process left to start it with ({exc})",
            "free memory, or raise the limit of processes (ulimit -u) if it is reached",
            passes=True,
        )
    return _not_started(
        name,
        f"could not start: its Python cannot be run ({exc})",
        "check that this Python (the ingesting process's own) exists and runs",
        passes=False,
    )


def _not_ready(name: str, ended: bool, how: str, code: int | None) -> ParseHelperUnavailableError:
    """The error of file ``name`` whose helper ``ended`` (``how``, status ``code``) before
    it said it was ready, or was killed for not being ready in time. A helper killed by a
    signal (the out-of-memory killer) or a slow start may do better later; one that exited
    (it cannot import ragstore, say) will exit again."""
    if not ended:
        return _not_started(
            name,
            f"was not ready within {STARTUP_TIMEOUT_S:g} s, so it was stopped",
            "the machine may be overloaded: ingest it again when it is less busy",
            passes=True,
        )
    return _not_started(
        name,
        f"ended before it was ready ({how}; its traceback, if any, is on standard error)",
        "check that this Python runs and can import ragstore"
        + (", and that memory is left" if code is not None and code < 0 else ""),
        passes=code is not None and code < 0,
    )


def _not_started(name: str, what: str, fix: str, *, passes: bool) -> ParseHelperUnavailableError:
    """The error of file ``name`` whose parse helper ``what`` (could not start, and the
    OS's reason), with ``fix``; ``passes``: the cause may pass with time (``Retry-After``)."""
    return ParseHelperUnavailableError(
        f"{name}: not parsed, so not stored: the parse helper ({sys.executable} -m "
        f"{__name__}) {what}; {fix}, or set RAGSTORE_PARSE_TIMEOUT_S=0 to parse in the "
        "ingesting process (without a time limit)",
        retry_after=START_RETRY_AFTER_S if passes else None,
    )


def _ask(helper: _Helper, request: Request, timeout_s: float) -> tuple[bool, Any]:
    """The helper's answer, or the file's error when it ran out of time or died (the
    helper is then killed on the way out of :meth:`_Helpers.lent`)."""
    _, name, fmt, _ = request
    try:
        return helper.ask(request, timeout_s)
    except TimeoutError:
        raise ParseTimeoutError(
            f"{name}: parsing this {fmt} file took longer than {timeout_s:g} s, so it was "
            "stopped and the file was not stored (a damaged or hostile file?); if it is "
            "genuine, raise RAGSTORE_PARSE_TIMEOUT_S"
        ) from None
    except (EOFError, OSError):
        killed = helper.end()
        if helper.abandoned:  # the ingest was interrupted: no outcome for this file
            raise KeyboardInterrupt from None
        raise _death(name, fmt, helper.proc.returncode, killed) from None


def _death(name: str, fmt: str, code: int | None, killed: bool) -> RagstoreError:
    """The error of file ``name`` whose helper ended (exit status or minus the signal:
    ``code``) without answering, worded by how it ended; ``killed``: by ragstore, after
    its pipe closed and it did not end. Only a MemoryError is a limit of ours
    (``payload_too_large``); every other death is the file's ``corrupt_document``."""
    check = "check that the file is complete and well-formed"
    if killed or code is None:
        return CorruptDocumentError(
            f"{name}: the {fmt} parser's process stopped answering while reading it (its "
            f"pipe closed) and had not ended {EXIT_WAIT_S:g} s later, so ragstore stopped "
            f"it; {check}"
        )
    if code == OUT_OF_MEMORY_STATUS:
        return out_of_memory(name, fmt, _memory_limit())
    if code < 0:
        signum = -code
        try:
            sig = signal.Signals(signum)
        except ValueError:
            sig_name = "an unknown signal"
        else:
            sig_name = sig.name
        if sig_name in CRASH_SIGNALS:
            why = f"{sig_name}: the parser library crashed"
        elif sig_name == "SIGABRT":
            why = f"{sig_name}: the parser library or Python aborted"
        elif sig_name == "SIGKILL":
            why = (
                f"{sig_name}, not from ragstore: the system's out-of-memory killer (see "
                "dmesg) or another process"
            )
        else:
            why = f"{sig_name}, not from ragstore: another process"
        return CorruptDocumentError(
            f"{name}: the {fmt} parser's process was killed by signal {signum} ({why}) "
            f"while reading it; {check}"
        )
    return CorruptDocumentError(
        f"{name}: the {fmt} parser's process exited with status {code} while reading it, "
        "without answering (its traceback, if any, is on the ingest's standard error); "
        f"{check}"
    )


def _forget_after_fork() -> None:
    """A forked child (an ingest's parse workers) starts its own helpers when it needs
    them: the parent's pipes are not its own, and its locks may have been copied held."""
    global _helpers
    _helpers = _Helpers()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_forget_after_fork)
atexit.register(lambda: _helpers.stop())


def _memory_limit() -> int:
    """The address space a helper may take: ``HELPER_MEMORY_BYTES``, at most half the
    machine's memory (and this process's own hard limit)."""
    pages, page = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    limit = min(HELPER_MEMORY_BYTES, pages * page // 2)
    try:
        import resource
    except ImportError:  # not POSIX
        return limit
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    return limit if hard == resource.RLIM_INFINITY else min(limit, hard)


def _limit_memory() -> None:
    """Cap the helper's address space: a parser that would take all the machine's memory
    fails its file with MemoryError instead (``payload_too_large``, whether the parser
    raises it or it ends the helper)."""
    try:
        import resource
    except ImportError:  # not POSIX
        return
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (_memory_limit(), hard))
    mark_parse_helper()


def _out_of_memory() -> None:
    """End the helper after a MemoryError no parser caught, with the status that tells
    its parent so (a traceback's status 1 would call the file corrupt)."""
    with contextlib.suppress(BaseException):
        traceback.print_exc()
    os._exit(OUT_OF_MEMORY_STATUS)


def _serve(inbox: Connection, outbox: Connection) -> None:
    """The helper's loop: parse what comes in until the parent closes the pipe."""
    parent = os.getppid()

    def orphaned() -> None:
        # a parse may run for long; the helper must not outlive an ingest killed meanwhile
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=orphaned, daemon=True).start()
    _limit_memory()
    outbox.send_bytes(READY)
    while True:
        try:
            if not _serve_one(inbox, outbox):
                return
        except MemoryError:
            _out_of_memory()


def _serve_one(inbox: Connection, outbox: Connection) -> bool:
    """Parse one file and answer; False when the parent closed the pipe."""
    try:
        data, name, fmt, max_chars = inbox.recv()
    except EOFError:
        return False
    try:
        answer: tuple[bool, Any] = (
            True,
            _counted(parse_bytes(data, name, fmt, max_chars=max_chars), data, name, fmt),
        )
    except RagstoreError as exc:
        # parse_bytes maps the parsers' own failures (PARSER_FAILURES) and MemoryError;
        # anything else ends the helper with its traceback, and the file fails as
        # corrupt_document (a MemoryError outside the parse: payload_too_large)
        answer = (False, exc)
    outbox.send_bytes(_pickled(answer, name, fmt))
    return True  # nothing of this file is held while waiting for the next


def _pickled(answer: tuple[bool, Any], name: str, fmt: str) -> Any:
    """``answer`` pickled to send (what ``Connection.send`` sends), or, when that needs
    more memory than the helper may take, the file's error: a document parsed within the
    memory limit can still be too large to copy into a pickle (3 GB of text from a 31 KB
    deck died here with a traceback, and the file was called corrupt)."""
    try:
        return ForkingPickler.dumps(answer)
    except MemoryError:
        ok, value = answer
        chars = sum(len(b.text) for b in value.blocks) if ok else 0
        return ForkingPickler.dumps(
            (
                False,
                FileTooLargeError(
                    f"{name}: its text ({chars} characters) is more than the {fmt} parse "
                    "helper can hand back within its memory limit; check the file, or "
                    "split it"
                ),
            )
        )


if __name__ == "__main__":
    _serve(
        Connection(int(sys.argv[1]), writable=False),
        Connection(int(sys.argv[2]), readable=False),
    )
