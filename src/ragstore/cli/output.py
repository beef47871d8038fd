"""What every command prints through: tables, JSON, errors, deprecations, confirmations and
progress. rich is imported on first use, so commands that print one line never pay for it."""

from __future__ import annotations

import json
import re
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from ragstore.errors import RagstoreError


@cache
def console() -> Console:
    """stdout: the data a command prints (hits, tables). Into a pipe or file tables are
    never wrapped, so that long keys and checksums stay whole on one line."""
    from rich.console import Console

    out = Console(highlight=False, soft_wrap=True)
    return out if out.is_terminal else Console(highlight=False, soft_wrap=True, width=4096)


@cache
def err_console() -> Console:
    """stderr: progress, summaries and errors, so that stdout stays pipeable."""
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


# C0 controls but tab and newline, DEL and C1: a file name or document text holding ESC
# sequences must not clear the user's screen or rewrite lines when a report names it
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def escape(text: str) -> str:
    """``text`` with rich markup made literal and terminal control characters shown as
    ``\\xNN``."""
    from rich.markup import escape as rich_escape

    visible = _CONTROLS.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return rich_escape(visible)


# every control character, tab and newline too
_LINE_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_NAMED_CONTROLS = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str) -> str:
    """``text`` on one line: every control character, newline and tab included, shown as
    Python's ``repr`` shows it (``\\n``, ``\\t``, ``\\x1b``), the rest as it is. For what
    the CLI prints but did not choose (a path, a file's failure): a file named
    ``$'a.md\\n  failed [x] b.md'`` made its failure line two, the second a spoof."""
    return _LINE_CONTROLS.sub(
        lambda m: _NAMED_CONTROLS.get(m.group()) or f"\\x{ord(m.group()):02x}", text
    )


def shown_value(value: object) -> str:
    """A field of a ``show`` command as its human output prints it: ``-`` for a value
    that is not there, as ``keys list`` prints it (``status None`` and ``started_at None``
    showed Python's name for it), JSON for a list or an object, the rest as text."""
    if value is None:
        return "-"
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    return str(value)


def echo_json(value: Any) -> None:
    """Print ``value`` as indented JSON on stdout (dates and paths as strings)."""
    typer.echo(json.dumps(value, indent=2, default=str))


def print_table(columns: list[str], rows: list[list[str]]) -> None:
    """A table on stdout whose cells are never cut: long keys and checksums wrap whole."""
    from rich.table import Table

    table = Table(*columns, box=None)
    for column in table.columns:
        column.overflow = "fold"
    for row in rows:
        table.add_row(*(escape(printable(cell)) for cell in row))
    console().print(table)


def print_more(
    command: list[str],
    options: dict[str, str | None],
    after: object,
    *,
    flag: str = "--after",
) -> None:
    """The ``more:`` line (standard error) after a listing's full page: the command for its
    next page, each of ``options`` given a value kept, then ``flag`` with ``after`` (the
    last row's id, or the page's cursor for ``--cursor``). A hint without the listing's
    filters listed other rows, and without its ``--limit`` pages of another size."""
    words = list(command)
    for option, value in options.items():
        if value is not None:
            words += [option, value]
    words += [flag, str(after)]
    err_console().print(f"more: {escape(shlex.join(words))}")


def print_error(exc: RagstoreError) -> None:
    """The one line a failed command ends with: ``error[code]: message``. A newline or
    control character in it (a path the user gave, ``$'a\\nb.md'``) is shown escaped as
    :func:`printable` shows it: made a space, the error named a path that does not exist."""
    message = printable(exc.message)
    err_console().print(f"[bold red]error\\[{exc.code}][/]: {escape(message)}")


def deprecated(old: str, new: str) -> None:
    """Tell the user once, on stderr, that a spelling still works but will go."""
    typer.echo(f"deprecated: {old} still works but will be removed; use {new}", err=True)


def confirm(question: str, *, yes: bool) -> None:
    """Ask before a destructive step unless ``--yes``; a 'no' (or end of input) aborts
    with exit status 1 and nothing changed. The question goes to stderr, so stdout holds
    only the command's data (``--json``)."""
    if yes:
        return
    sys.stderr.write(f"{question} (pass --yes to skip this question) [y/N]: ")
    sys.stderr.flush()
    # a closed stdin (``<&-``, some service managers) is None: no answer, so no; reading
    # it ended the command with an AttributeError traceback
    stdin = sys.stdin
    answer = stdin.readline() if stdin is not None else ""
    if stdin is None or not stdin.isatty():  # the answer read from a pipe was not echoed
        sys.stderr.write("\n")
    if answer.strip().lower() not in ("y", "yes"):
        raise typer.Abort()


class ProgressLine:
    """Progress for non-terminals (CI logs, pipes): one line every ``every`` items or
    ``every_s`` seconds, whichever comes first, so long work is never silent. Work that
    ends within ``quiet_s`` seconds (default: ``every_s``) prints nothing, so short
    commands keep their output to their result."""

    def __init__(
        self,
        label: str,
        unit: str,
        *,
        every: int = 100,
        every_s: float = 10.0,
        quiet_s: float | None = None,
        write: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label, self.unit = label, unit
        self.every, self.every_s = every, every_s
        self.quiet_s = every_s if quiet_s is None else quiet_s
        self._write = write or (lambda line: print(line, file=sys.stderr, flush=True))
        self._clock = clock
        self._start = self._last_time = clock()
        self._last_done = 0
        self._printed = False
        self._latest: tuple[int, int | None, str] | None = None  # not printed yet

    def update(self, done: int, total: int | None = None, extra: str = "") -> None:
        now = self._clock()
        self._latest = (done, total, extra)
        if now - self._start < self.quiet_s:
            return
        if done - self._last_done < self.every and now - self._last_time < self.every_s:
            return
        self._print(now)

    def close(self) -> None:
        """Print the latest count if a line was printed before and that count was not: a
        log's last progress line then says how far the work got, not where it was at the
        last periodic line. Short work stays silent."""
        if self._printed and self._latest is not None:
            self._print(self._clock())

    def _print(self, now: float) -> None:
        assert self._latest is not None
        done, total, extra = self._latest
        self._latest = None
        self._printed = True
        self._last_done, self._last_time = done, now
        of = f"/{total}" if total else ""
        more = f", {extra}" if extra else ""
        self._write(f"{self.label}: {done}{of} {self.unit}{more} ({now - self._start:.0f}s)")


@contextmanager
def progress(label: str, unit: str) -> Iterator[Callable[[int, int | None, str], None]]:
    """A progress callback ``update(done, total, extra)``: a bar on a terminal, a
    :class:`ProgressLine` anywhere else."""
    err = err_console()
    if not err.is_terminal:
        line = ProgressLine(label, unit)
        try:
            yield line.update
        finally:
            line.close()
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit + "{task.fields[extra]}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=None, extra="")

        def update(done: int, total: int | None = None, extra: str = "") -> None:
            bar.update(
                task, completed=done, total=total or None, extra=f", {extra}" if extra else ""
            )

        yield update
