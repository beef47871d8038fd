"""The root typer app and the one place ragstore errors become an exit status.

Exit statuses (documented in TROUBLESHOOTING.md, "Exit codes"): 0 done; 1 some files
failed or a confirmation was declined; 64 a usage error (unknown command or option, a bad
or missing value); every :class:`~ragstore.errors.RagstoreError` its own ``exit_code``
(65-78, sysexits style); 74 (EX_IOERR) the output could not be written to stdout (closed,
a full disk); 141 stdout was a pipe its reader closed (``| head``: quiet, as a tool killed
by SIGPIPE); 130 interrupted; 143 an ingest stopped by SIGTERM.

The pinned typer ships its own copy of click (``typer._click``): its exceptions are not
click's, so they are caught here by typer's classes, never by ``click``'s.

Command modules import only typer at module level; everything heavy (the database
driver, the model, numpy) is imported inside the command that needs it, so that
``ragstore config show`` or ``ragstore search --mode fulltext`` start in a fraction of
a second and never import torch.
"""

from __future__ import annotations

import errno
import inspect
import logging
import os
import signal
import sys
from typing import Any, TextIO

import typer
from typer import exceptions as typer_exceptions
from typer._click import exceptions as click_exceptions
from typer._click.core import Context

from ragstore.errors import RagstoreError
from ragstore.stdfds import fill_closed_std_fds

EXIT_FAILED = 1
EXIT_USAGE = 64  # EX_USAGE
EXIT_INTERRUPTED = 130
EXIT_IOERR = 74  # EX_IOERR: the command's output could not be written
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE  # 141, what a shell reports for `yes | head`

app = typer.Typer(
    name="ragstore",
    help="Document retrieval on PostgreSQL + pgvector.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from ragstore import __version__

        typer.echo(f"ragstore {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False,
        "--version",
        callback=_print_version,
        is_eager=True,
        help="Print the version and exit.",
    ),
) -> None:
    """Document retrieval on PostgreSQL + pgvector."""


def _register() -> None:
    """Attach every command group; one line per group so that new groups merge cleanly."""
    from ragstore.cli import (
        backup_cmd,
        collections_cmd,
        config_cmd,
        db_cmd,
        documents_cmd,
        eval_cmd,
        import_cmd,
        ingest_cmd,
        jobs_cmd,
        keys_cmd,
        mcp_cmd,
        models_cmd,
        search_cmd,
        sections_cmd,
        serve_cmd,
        worker_cmd,
    )

    app.add_typer(db_cmd.app, name="db")
    app.add_typer(config_cmd.app, name="config")
    app.add_typer(models_cmd.app, name="models")
    app.add_typer(collections_cmd.app, name="collections")
    app.add_typer(documents_cmd.app, name="documents")
    app.add_typer(jobs_cmd.app, name="jobs")
    ingest_cmd.register(app)
    search_cmd.register(app)
    eval_cmd.register(app)
    sections_cmd.register(app)
    app.add_typer(keys_cmd.app, name="keys")
    serve_cmd.register(app)
    mcp_cmd.register(app)
    worker_cmd.register(app)
    import_cmd.register(app)
    backup_cmd.register(app)


def _metavar(param: Any) -> str:
    """A readable placeholder for help and errors (``QUERY``, ``N``, ``PATH``), never a
    Python type name such as ``<list[str]>`` or ``<int range>``."""
    name = str(param.name or "value").upper()
    bare = param.bare_type() if hasattr(param, "bare_type") else ""
    if bare in ("int", "list[int]"):
        word = "N"
    elif bare in ("float", "list[float]"):
        word = "NUMBER"
    elif "Path" in bare:
        word = "PATH" if param.param_type_name == "option" else name
    else:
        word = name
    return word


def _no_type(ctx: Any) -> None:
    """An argument's help row shows its metavar only (typer adds ``<str>`` otherwise)."""


def _readable_metavars(command: Any) -> None:
    help_option = command.get_help_option(Context(command))
    for param in [*getattr(command, "params", []), help_option]:
        if param is None:
            continue
        if param.param_type_name == "argument":
            param.display_type_rich = _no_type
        if param.metavar is not None:
            continue
        if getattr(param, "is_flag", False):
            param.metavar = ""
        else:
            param.metavar = _metavar(param)
    for sub in getattr(command, "commands", {}).values():
        _readable_metavars(sub)


def _named_collection(ctx: Any, param: Any, value: Any) -> Any:
    """An empty ``--collection`` is a usage error: left to fall back to the default
    collection (``-c "$UNSET_VAR"``), an ingest or a delete would act on the wrong one."""
    if isinstance(value, str) and not value:
        raise click_exceptions.BadParameter(
            "the collection name is empty; name one, or leave the option out to use "
            "RAGSTORE_COLLECTION",
            ctx=ctx,
            param=param,
        )
    return value


def _checked_collections(command: Any) -> None:
    """Every ``--collection`` option of the tree refuses an empty name."""
    for param in getattr(command, "params", []):
        if param.name == "collection" and param.callback is None:
            param.callback = _named_collection
    for sub in getattr(command, "commands", {}).values():
        _checked_collections(sub)


# The parameters that name what ragstore stores or looks up by name (collections, models,
# keys, labels, metadata fields and values): never a path, so never bytes that are not
# UTF-8. A path, a document (named by its path), a source prefix and the query keep
# theirs: a document or a query says what is wrong with them itself.
_NAMES = frozenset(
    {"collection", "positional", "name", "model", "to", "key_id", "field", "meta", "meta_json"}
)


def _undecodable(value: object) -> str | None:
    """The first byte of ``value`` that was not UTF-8 on the command line (Python holds it
    as a lone surrogate, U+DC80-U+DCFF), and where, or ``None``."""
    for text in value if isinstance(value, (list, tuple)) else [value]:
        if not isinstance(text, str):
            continue
        for at, char in enumerate(text):
            if "\udc80" <= char <= "\udcff":
                return f"the byte 0x{ord(char) - 0xDC00:02X} at character {at + 1}"
            if "\ud800" <= char <= "\udfff":
                return f"a lone surrogate (U+{ord(char):04X}) at character {at + 1}"
    return None


def _utf8_name(previous: Any) -> Any:
    def check(ctx: Any, param: Any, value: Any) -> Any:
        bad = _undecodable(value)
        if bad is not None:
            raise click_exceptions.BadParameter(
                f"it holds {bad}, which is not UTF-8 text; type it in UTF-8",
                ctx=ctx,
                param=param,
            )
        return previous(ctx, param, value) if previous is not None else value

    return check


def _checked_names(command: Any) -> None:
    """Every name parameter of the tree refuses bytes that are not UTF-8: such a name
    (``-c $'x\\xff'``) reached the database driver, which cannot encode it, and the
    command ended with a UnicodeEncodeError traceback."""
    for param in getattr(command, "params", []):
        if param.name in _NAMES:
            param.callback = _utf8_name(param.callback)
    for sub in getattr(command, "commands", {}).values():
        _checked_names(sub)


def _one_line_summaries(command: Any) -> None:
    """Each command's line in its group's list is its docstring's first paragraph on one
    line: typer's rich help keeps the docstring's line breaks there, and a summary
    wrapped at 88 columns in the source came out broken mid-sentence in the table."""
    for sub in getattr(command, "commands", {}).values():
        first = inspect.cleandoc(sub.help or "").split("\n\n")[0]
        if sub.short_help is None and "\n" in first:
            sub.short_help = " ".join(first.split())
        _one_line_summaries(sub)


def build_command() -> Any:
    """The click command tree of the whole CLI, with readable metavars, one-line command
    summaries, every ``--collection`` checked for an empty name and every name for bytes
    that are not UTF-8."""
    if not app.registered_groups:
        _register()
    command = typer.main.get_command(app)
    _readable_metavars(command)
    _one_line_summaries(command)
    _checked_collections(command)
    _checked_names(command)
    return command


def _usage_line(exc: click_exceptions.UsageError) -> str:
    message = " ".join(exc.format_message().split())
    ctx = getattr(exc, "ctx", None)
    if isinstance(exc, click_exceptions.NoSuchOption) and not exc.option_name.startswith("--"):
        # `ragstore search "-tape backups"` (a query that starts with an excluded word, the
        # documented -word syntax) answered "No such option: -t", which names neither the
        # query nor a way to pass it
        message += "; a value that starts with '-' goes after '--'"
        if ctx is not None and ctx.info_name == "search":
            message += " (a query's -word, say), e.g. ragstore search -- '-tape backups'"
    where = ctx.command_path if ctx is not None else "ragstore"
    return f"error[usage]: {message} (see '{where} --help')"


def _printable_streams() -> None:
    """stdout and stderr write what their encoding cannot hold as ``\\xNN`` escapes: on a
    terminal or pipe that is not UTF-8 (``PYTHONIOENCODING=ascii``, a Latin-1 locale), a
    document named ``café-日本.md`` in a listing or an error ended the command with a
    UnicodeEncodeError traceback. ``--json`` output is ASCII (``\\uNNNN``) already."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        encoding = str(getattr(stream, "encoding", "") or "").lower().replace("-", "")
        if reconfigure is not None and encoding not in ("utf8", "utf_8"):
            reconfigure(errors="backslashreplace")


class OutputLost(Exception):
    """A write to stdout failed (``cause``, an OSError). Not an OSError itself: typer turns
    a broken pipe into exit status 1 and nothing said, and commands that catch OSError
    around their files must not take it for theirs."""

    def __init__(self, cause: OSError) -> None:
        super().__init__(str(cause))
        self.cause = cause


class _GuardedStdout:
    """``sys.stdout`` for the length of a command: a write or flush that fails raises
    :class:`OutputLost`. ``stream`` None is a stdout closed when Python started
    (``ragstore ... >&-``), where print and typer wrote nothing without a word."""

    def __init__(self, stream: TextIO | None) -> None:
        self._stream = stream

    def _closed(self) -> OutputLost:
        return OutputLost(OSError(errno.EBADF, "stdout is closed"))

    def write(self, text: str) -> int:
        if self._stream is None:
            raise self._closed()
        try:
            return self._stream.write(text)
        except OSError as exc:
            raise OutputLost(exc) from None

    def flush(self) -> None:
        if self._stream is None:
            return
        try:
            self._stream.flush()
        except OSError as exc:
            raise OutputLost(exc) from None

    def isatty(self) -> bool:
        return self._stream is not None and self._stream.isatty()

    def __getattr__(self, name: str) -> Any:
        if self._stream is None:  # as None has no such attribute; a write raises
            raise AttributeError(name)
        return getattr(self._stream, name)


def _output_lost(exc: OutputLost, stream: TextIO | None) -> int:
    """Say why the output was lost, once, and return the exit status. A reader that went
    away (``| head -c1``) is no error of ours: nothing is said, as standard tools say
    nothing, and stdout goes to /dev/null so that Python's own flush at exit does not
    print an "Exception ignored" traceback."""
    if exc.cause.errno == errno.EPIPE:
        if stream is not None:
            try:
                null = os.open(os.devnull, os.O_WRONLY)
                os.dup2(null, stream.fileno())
                os.close(null)
            except (OSError, ValueError, AttributeError):  # no file descriptor (a test)
                pass
        return EXIT_BROKEN_PIPE
    reason = exc.cause.strerror or str(exc.cause)
    typer.echo(
        f"error[output_failed]: could not write the output to stdout ({reason}); "
        "what the command printed there is lost: run it with stdout to a file or pipe "
        "that can be written",
        err=True,
    )
    return EXIT_IOERR


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI; every failure is one line on stderr and its exit status.

    A command whose output could not be written (stdout closed, a full disk, a reader that
    went away) never ends with 0: its data is lost (:func:`_output_lost`)."""
    closed = fill_closed_std_fds()
    stdin, stderr = sys.stdin, sys.stderr
    _streams_over_filled_fds(closed)
    stdout = sys.stdout
    # a stdout closed at the start stays one: what the command prints is lost (exit 74),
    # not written to the /dev/null that now holds its place
    sys.stdout = _GuardedStdout(None if 1 in closed else stdout)
    try:
        try:
            _main(argv)
        finally:
            sys.stdout.flush()  # what is still buffered fails here, not at exit unsaid
    except OutputLost as exc:
        sys.stdout = stdout
        sys.exit(_output_lost(exc, stdout))
    finally:
        sys.stdout = stdout
        sys.stdin, sys.stderr = stdin, stderr  # ours are flushed as they are dropped


def _streams_over_filled_fds(closed: set[int]) -> None:
    """``sys.stdin`` and ``sys.stderr`` over the /dev/null that
    :func:`ragstore.stdfds.fill_closed_std_fds` put on a closed fd 0 or 2
    (``ragstore ... <&- 2>&-``, cron, a service manager).

    Python started with one of them closed leaves it None: the confirmation question
    (``sys.stderr.write``) ended the command with an AttributeError, exit 1 whatever was
    answered, and a progress line (``print(file=sys.stderr)``, which is stdout when that
    is None) went into the command's data on stdout. stdout is not made one here: its
    output is lost, which :class:`_GuardedStdout` reports (exit 74)."""
    for fd, name, mode in ((0, "stdin", "r"), (2, "stderr", "w")):
        if fd not in closed or getattr(sys, name) is not None:
            continue
        try:
            os.fstat(fd)  # not filled (no /dev/null, a bare chroot): left None
            stream = open(  # noqa: SIM115 - the process's stream, closed at exit
                fd,
                mode,
                buffering=1 if mode == "w" else -1,
                closefd=False,
                errors="backslashreplace",
            )
        except OSError:
            continue
        setattr(sys, name, stream)


def _main(argv: list[str] | None) -> None:
    _printable_streams()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    command = build_command()
    try:
        status = command.main(args=argv, prog_name="ragstore", standalone_mode=False)
    except RagstoreError as exc:
        from ragstore.cli.output import print_error

        print_error(exc)
        sys.exit(exc.exit_code)
    except click_exceptions.NoArgsIsHelpError:
        sys.exit(EXIT_USAGE)  # typer printed the help when it raised this
    except click_exceptions.UsageError as exc:
        typer.echo(_usage_line(exc), err=True)
        sys.exit(EXIT_USAGE)
    except click_exceptions.ClickException as exc:
        typer.echo(f"error[usage]: {' '.join(exc.format_message().split())}", err=True)
        sys.exit(EXIT_USAGE)
    except typer_exceptions.Abort:
        typer.echo("aborted: nothing was changed", err=True)
        sys.exit(EXIT_FAILED)
    if isinstance(status, int) and status:
        if status == EXIT_INTERRUPTED:
            typer.echo("interrupted", err=True)
        sys.exit(status)
