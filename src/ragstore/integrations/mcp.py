"""``ragstore mcp``: ragstore's search as Model Context Protocol tools for LLM agents.

Built with the official ``mcp`` SDK (extra ``[mcp]``), served over stdio (what desktop
agents spawn) or streamable HTTP. Tools:

- ``search``: ranked chunks for a query, with ``mode``, a ``where`` filter, ``context``
  (neighbouring chunks, or the whole section) and maximal marginal relevance (``mmr``,
  ``fetch_k``, ``lambda_mult``: search/mmr.py);
- ``list_collections``;
- ``get_document``: a document's record and text; ``get_section``: one section of it;
- ``add_document``: only when the server was started with a write-scoped API key
  (``RAGSTORE_API_KEY``, or ``--api-key``); otherwise the tool is not offered at all.

With a key, every tool call is checked against its scope and collection, as the HTTP API
does. Over HTTP (:func:`http_app`) the key is also the server's password: every request must
present it (``Authorization: Bearer rsk_...``), or anyone who reached the port would use it
(read every collection it may read, add documents with a write key). A failing call
answers the agent with the error's one-line message, arguments the tool's schema refuses
(:func:`argument_error`) and a tool the server does not offer (:class:`_Server`) too; an
argument a tool does not take is refused (:func:`closed`), not dropped; over stdio a line
that is no message is answered (:func:`serve_stdio`). A search the agent abandons
(``notifications/cancelled``, its own timeout, a closed session, over HTTP its
connection closed: :class:`~ragstore.integrations.mcp_http.CancelOnDisconnect`) is
cancelled in PostgreSQL, as an HTTP search whose client goes away is
(``api/disconnect.py``), instead of running on to ``RAGSTORE_SEARCH_TIMEOUT_S``.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import logging
import types
from collections.abc import Callable
from typing import Annotated, Any, TypeVar, cast

import anyio
import anyio.to_thread
from mcp.server.lowlevel import Server
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.server.mcpserver.tools import Tool
from mcp.server.mcpserver.utilities.func_metadata import ArgModelBase
from mcp.server.stdio import stdio_server
from mcp.shared.message import SessionMessage
from mcp.types import (
    INVALID_REQUEST,
    PARSE_ERROR,
    CallToolResult,
    ErrorData,
    InputRequiredResult,
    JSONRPCError,
)
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from starlette.types import ASGIApp, Receive, Scope, Send

from ragstore import __version__
from ragstore.auth.keys import ApiKey, KeyStore, is_live
from ragstore.db.cancel import Cancellation, cancelling
from ragstore.db.errors import translated
from ragstore.db.inspection import document_chunks, section_chunks, sections_named
from ragstore.errors import (
    AnswerTooLargeError,
    AuthenticationError,
    CollectionNotFoundError,
    ConfigError,
    InputError,
    NotFoundError,
    PermissionDeniedError,
    RagstoreError,
    RequestTooLargeError,
    public_detail,
    pydantic_message,
)
from ragstore.http.bearer import bearer_token
from ragstore.http.guard import foreign_party, foreign_sender, unowned_socket
from ragstore.http.limits import BodyLimitMiddleware
from ragstore.http.problems import send_problem
from ragstore.integrations.mcp_http import CancelOnDisconnect, ReadableReplies, SessionCap
from ragstore.integrations.stdin_lines import claimed_stdin
from ragstore.store import Store
from ragstore.validation import row_id, storable_text

__all__ = ["MAX_TEXT_CHARS", "KeyRequired", "build_server", "http_app", "key_for", "serve_stdio"]

log = logging.getLogger("ragstore.mcp")

MAX_TEXT_CHARS = 50_000  # a document's text handed to an agent at once


F = TypeVar("F", bound=Callable[..., Any])

# A tool's arguments are validated strictly: in pydantic's lax mode JSON ``true`` became
# the integer 1 (``get_document(document_id=true)`` opened document 1), ``"3"`` became 3
# and ``context=true`` one neighbouring chunk; an empty collection name fell back to the
# default collection while the answer named "". Now such a call is a tool error.
StrictInt = Annotated[int, Strict()]
Name = Annotated[str, Strict(), Field(min_length=1)]
# a search's where filter: any JSON value reaches the Store, which refuses one that is no
# object as every surface does (``invalid_filter``, "the filter must be a JSON object, got
# an array"); declared ``dict[str, Any]``, the SDK's argument check refused ``[1]`` or
# ``"x"`` as ``invalid_input`` first. The schema agents read still says an object (or null)
WhereArgument = Annotated[
    Any,
    WithJsonSchema({"anyOf": [{"type": "object", "additionalProperties": True}, {"type": "null"}]}),
]
T = TypeVar("T")


def answers(fn: F, key: ApiKey | None = None) -> F:
    """Our errors reach the agent as the tool's answer, ``error[code]: message``, which it
    can act on (the SDK would say only "Error executing tool"). With a key limited to one
    collection, a missing collection's message names no other. ``fn`` may be a coroutine
    function (the SDK awaits it) or a plain one (the SDK runs it on a worker thread)."""

    def sees(name: str) -> bool:
        return key is None or key.collection in (None, name)

    def tool_error(exc: RagstoreError) -> ToolError:
        if isinstance(exc, CollectionNotFoundError):
            return ToolError(f"error[{exc.code}]: {exc.seen_by(sees)}")
        # told as the HTTP API tells it (public_detail): a database that could not be
        # reached was answered with its address ("connecting to postgresql://user@host/db")
        # and no word of when to try again; now without it, with "retry in Ns", the full
        # message in the server's log (stderr over stdio)
        told = public_detail(exc)
        if told != exc.message:
            log.warning("MCP tool %s failed: %s: %s", fn.__name__, exc.code, exc.message)
        return ToolError(f"error[{exc.code}]: {told}")

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def awaited(*args: Any, **kwargs: Any) -> Any:
            try:
                return await fn(*args, **kwargs)
            except RagstoreError as exc:
                raise tool_error(exc) from None

        return awaited  # type: ignore[return-value]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RagstoreError as exc:
            raise tool_error(exc) from None

    return wrapper  # type: ignore[return-value]


async def until_abandoned(work: Callable[[], T]) -> T:
    """``work()`` on a worker thread; if the call is cancelled first (the agent's
    ``notifications/cancelled`` or timeout, the session closing), its statements are
    cancelled in PostgreSQL (:class:`ragstore.db.cancel.Cancellation`) and the call ends
    at once. A plain tool would wait for its thread: the SDK runs it with no way to stop
    it, so an abandoned search held a pooled connection to ``RAGSTORE_SEARCH_TIMEOUT_S``."""
    cancellation = Cancellation()

    def run() -> T:
        with cancelling(cancellation):
            return work()

    try:
        return await anyio.to_thread.run_sync(run, abandon_on_cancel=True)
    except anyio.get_cancelled_exc_class():
        with anyio.CancelScope(shield=True):  # a round trip per statement: off the loop
            await anyio.to_thread.run_sync(cancellation.cancel)
        raise


def closed(tool: Tool) -> Tool:
    """``tool`` refusing an argument it does not take, naming those it does. The SDK
    drops unknown arguments: an agent that guessed ``filter`` (or ``top_k``) for ``where``
    (``k``) got the whole collection's best hits, unfiltered, as though filtered, and
    could not tell. The HTTP API refuses an unknown query parameter the same way. The
    published schema says so too (``additionalProperties: false``)."""
    model = tool.fn_metadata.arg_model
    names = [f.alias or n for n, f in model.model_fields.items()]
    takes = f"it takes {', '.join(names)}" if names else "it takes no arguments"

    def known(cls: type[BaseModel], data: Any) -> Any:
        if isinstance(data, dict):
            unknown = [k for k in data if k not in names]
            if unknown:  # a key may be anything an agent made up: shown cut
                shown = ", ".join(repr(str(k)[:100]) for k in unknown[:5])
                word = "argument" if len(unknown) == 1 else "arguments"
                raise ValueError(f"unknown {word} {shown} for {tool.name}: {takes}")
        return data

    namespace = {
        "__module__": model.__module__,
        "model_config": ConfigDict(extra="forbid"),
        "known_arguments": model_validator(mode="before")(classmethod(known)),  # type: ignore[arg-type]
    }
    # a subclass under the same name, which the validation errors give ("for searchArguments")
    strict = cast(
        "type[ArgModelBase]",
        types.new_class(model.__name__, (model,), exec_body=lambda ns: ns.update(namespace)),
    )
    tool.fn_metadata.arg_model = strict
    tool.parameters = strict.model_json_schema(by_alias=True)
    return tool


def _given(value: Any) -> str:
    """What an agent gave, in JSON's words and cut (it may be megabytes): the half of a
    type error that pydantic's message leaves out (``got the string '3'``)."""
    if value is None or isinstance(value, bool):
        return f"got {json.dumps(value)}"
    if isinstance(value, int | float):
        return f"got the number {value}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:40] + "..."
        return f"got the string {shown!r}"
    return "got an array" if isinstance(value, list) else "got an object"


def argument_error(tool: str, exc: ValidationError) -> InputError:
    """The one-line ``invalid_input`` for arguments ``tool``'s schema refused, each at its
    argument as the HTTP API says a request's (``api/errors._validation_detail``): the SDK
    answered with pydantic's own report, several lines per argument with the pydantic
    version's documentation URL (``1 validation error for searchArguments / k / Input
    should be a valid integer [type=int_type, input_value='3', input_type=str] / For
    further information visit https://errors.pydantic.dev/...``), and an argument taking
    an integer or a string got one such block per type. A check of ours (the unknown
    argument of :func:`closed`) is said in its own words, without pydantic's
    ``Value error, ``."""
    said: dict[str, list[str]] = {}
    got: dict[str, str] = {}
    for err in exc.errors(include_url=False):
        loc = err.get("loc", ())
        where = str(loc[0]) if loc else ""
        msgs = said.setdefault(where, [])
        msg = pydantic_message(err)
        if msg not in msgs:
            msgs.append(msg)
        if str(err.get("type", "")).endswith("_type") and where:
            got[where] = _given(err.get("input"))
    parts = []
    for where, msgs in said.items():
        # an argument of several types (context: an integer or "section") failed each
        text = " or ".join([msgs[0], *(m.removeprefix("Input should be ") for m in msgs[1:])])
        if where in got:
            text += f", {got[where]}"
        parts.append(f"{where}: {text}" if where else text)
    detail = "; ".join(parts[:5])
    if all(where == "" for where in said):  # ours, naming what the tool takes
        return InputError(detail)
    return InputError(
        f"the arguments are invalid: {detail} (the tool's inputSchema in tools/list gives "
        "each argument's type)"
    )


class _Tool(Tool):
    """A tool whose refused arguments are told in one line (:func:`argument_error`)."""

    async def run(
        self, arguments: dict[str, Any], context: Any, convert_result: bool = False
    ) -> Any:
        try:
            return await super().run(arguments, context, convert_result=convert_result)
        except ToolError as exc:
            cause = exc.__cause__
            if isinstance(exc, UnexpectedToolError) or not isinstance(cause, ValidationError):
                raise
            told = argument_error(self.name, cause)
            # from the ValidationError still: the SDK then logs the arguments' names only
            raise ToolError(
                f"Error executing tool {self.name}: error[{told.code}]: {told.message}"
            ) from cause


class _Server(MCPServer):
    """The SDK's server, telling a call of a tool it does not offer which tools it does:
    the SDK answered ``Unknown tool: add_documents`` and left the agent to guess, and
    ``add_document`` on a server started without a write key looked like a typo."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _serve_tools_only(self)

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Any = None
    ) -> CallToolResult | InputRequiredResult:
        offered = [t.name for t in await self.list_tools()]
        if name not in offered:
            shown = name if len(name) <= 100 else name[:100] + "..."
            told: RagstoreError = NotFoundError(
                f"no tool {shown!r}; the tools are {', '.join(offered)}"
            )
            if name == "add_document":
                told = PermissionDeniedError(
                    "add_document is offered only when the MCP server was started with a "
                    "write-scoped API key (RAGSTORE_API_KEY, or ragstore mcp --api-key)"
                )
            raise ToolError(f"error[{told.code}]: {told.message}")
        return await super().call_tool(name, arguments, context)


# the methods of the prompts and resources MCPServer always serves, which ragstore has none of
_UNSERVED = (
    "prompts/list",
    "prompts/get",
    "resources/list",
    "resources/templates/list",
    "resources/read",
)


def _serve_tools_only(server: MCPServer) -> None:
    """Leave out the prompts and resources that ``server`` (the SDK's MCPServer) serves
    whether it has any or not: it advertised both capabilities with none of either, and
    answered ``prompts/get`` of any name with JSON-RPC error code 0 (no such code) after
    logging a traceback for the client's mistake. The SDK derives a server's capabilities
    from the methods its low-level server has handlers for, and MCPServer offers no way
    to leave some out, so their handlers are taken from that server (private, as
    :func:`lowlevel_server` reads it, for :data:`MCP_VERSIONS`); a call of one is then
    answered as any method the server does not serve, -32601 "Method not found". An SDK
    that keeps them elsewhere keeps advertising them, which is all it did before."""
    handlers = getattr(getattr(server, "_lowlevel_server", None), "_request_handlers", None)
    if isinstance(handlers, dict):
        for method in _UNSERVED:
            handlers.pop(method, None)


def unreadable_reply(exc: Exception, what: str = "line") -> JSONRPCError | None:
    """The JSON-RPC error answering a line the SDK could not read as a message (``exc``,
    its parse error), or None where none is due (a notification). JSON-RPC 2.0 answers
    invalid JSON -32700 and a non-message -32600, with the request's id where it can be
    read, else null. A request the SDK's parser refuses although it is JSON (nested past
    its depth, ~200 levels: a made-up ``where`` filter) is answered under its own id.
    ``what``: what the message came in, said in the answer (over HTTP a ``body``)."""
    per = "line" if what == "line" else "request"
    sent: list[Any] = []
    if isinstance(exc, ValidationError):
        for error in exc.errors():
            raw = error.get("input")
            if isinstance(raw, str | bytes):
                try:
                    raw = json.loads(raw)
                except (ValueError, RecursionError):
                    continue
            sent.append(raw)
    too_deep = "the message nests deeper than the server reads (about 200 levels); flatten it"
    nested = isinstance(exc, ValidationError) and any(
        "recursion limit" in e["msg"] for e in exc.errors()
    )
    message = next((m for m in sent if isinstance(m, dict)), None)
    if message is None:
        code, text = PARSE_ERROR, f"the {what} is not JSON; send one JSON-RPC message per {per}"
        if nested:  # too deep even to read its id
            text = too_deep
        elif sent:  # JSON, but an array or a scalar
            code, text = INVALID_REQUEST, f"the {what} is not a JSON-RPC message object"
        return JSONRPCError(jsonrpc="2.0", id=None, error=ErrorData(code=code, message=text))
    rid = message.get("id")
    if "method" in message and "id" not in message:
        return None  # a notification is never answered
    if isinstance(rid, bool) or not isinstance(rid, int | str):
        rid = None
    if not nested:
        too_deep = f"the {what} is not a valid JSON-RPC message (jsonrpc, id, method, params)"
    return JSONRPCError(
        jsonrpc="2.0", id=rid, error=ErrorData(code=INVALID_REQUEST, message=too_deep)
    )


class _Answering:
    """The SDK's stdio read stream, answering each line it could not read: the SDK
    handed those on as exceptions and its dispatcher dropped them without a word, so a
    request it could not parse (nested too deep, say) was never answered and the agent
    waited for it to its own timeout."""

    def __init__(self, read: Any, write: Any) -> None:
        self.read, self.write = read, write

    @property
    def last_context(self) -> Any:
        return getattr(self.read, "last_context", None)

    async def receive(self) -> Any:
        while True:
            item = await self.read.receive()
            if not isinstance(item, Exception):
                return item
            reply = unreadable_reply(item)
            log.warning("MCP: an unreadable line from the client: %.300s", item)
            if reply is not None:
                await self.write.send(SessionMessage(reply))

    def __aiter__(self) -> _Answering:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        await self.read.aclose()

    async def __aenter__(self) -> _Answering:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


async def serve_stdio(server: MCPServer, stdin: Any = None, stdout: Any = None) -> None:
    """``server`` over stdio (``stdin``/``stdout``: other streams, for tests), as
    ``server.run("stdio")`` serves it, each unreadable line answered (:class:`_Answering`).

    Cancelled (``ragstore mcp`` stopped by a signal), it ends without waiting for the
    host to close stdin: the process's stdin is read as :func:`claimed_stdin` reads it."""
    lowlevel = lowlevel_server(server)
    with contextlib.ExitStack() as claimed:
        if stdin is None:
            stdin = claimed.enter_context(claimed_stdin())
        async with stdio_server(stdin, stdout) as (read, write):
            await lowlevel.run(
                _Answering(read, write), write, lowlevel.create_initialization_options()
            )


# The SDK releases whose MCPServer keeps its low-level Server where lowlevel_server reads it
MCP_VERSIONS = "mcp 2.3.x"


def lowlevel_server(server: MCPServer) -> Server[Any]:
    """The low-level ``Server`` that ``server`` runs (what ``MCPServer.run_stdio_async``
    serves), or a :class:`ConfigError` saying the installed SDK is not one ragstore was
    built for.

    The SDK has no public way to it: ``run_stdio_async`` serves the process's own stdio
    and hands the dispatcher the read stream as it is, which drops an unreadable line
    without a word (:class:`_Answering` answers it), so :func:`serve_stdio` runs the
    attribute ``MCPServer`` keeps it in (``_lowlevel_server``, private). Checked before
    stdio is opened, so that an SDK that renamed it stops ``ragstore mcp`` as it starts
    with one line naming the versions to install (``error[config_invalid]``, exit 78),
    not with an AttributeError's traceback. Over HTTP the SDK's public
    ``streamable_http_app`` serves, which needs none of this."""
    lowlevel = getattr(server, "_lowlevel_server", None)
    if not isinstance(lowlevel, Server) or not callable(
        getattr(lowlevel, "create_initialization_options", None)
    ):
        raise ConfigError(
            "the installed mcp SDK keeps no low-level Server where ragstore reads it "
            f"(MCPServer._lowlevel_server): `ragstore mcp` runs with {MCP_VERSIONS} only; "
            "install it with `pip install 'ragstore[mcp]'`"
        )
    return lowlevel


class KeyRequired:
    """ASGI middleware: only requests presenting ``key`` itself reach ``app``; any other
    gets ``unauthorized`` (401), a wrong key as an unknown one (no scope is disclosed).
    Checked through :class:`KeyStore`, so a revoked key stops working at once and wrong
    guesses are throttled as at the HTTP API."""

    def __init__(self, app: ASGIApp, keys: KeyStore, key: ApiKey) -> None:
        self.app, self.keys, self.key = app, keys, key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        address = str((scope.get("client") or ("",))[0])
        try:
            presented = bearer_token(scope.get("headers", ()))
            got = await anyio.to_thread.run_sync(self.keys.authenticate, presented, address)
            if got.id != self.key.id:
                raise AuthenticationError(
                    "this MCP server answers only the API key it was started with"
                )
        except RagstoreError as exc:
            await send_problem(scope, send, exc)
            return
        await self.app(scope, receive, send)


class LocalOnly:
    """ASGI middleware of a server started without a key: only clients of this machine
    reach ``app``; any other, or one a proxy forwarded for another machine
    (``X-Forwarded-For``, ``X-Real-IP``, ``Forwarded``), gets ``forbidden`` (403).

    ``ragstore mcp`` refuses to bind another address than loopback without a key, and the
    SDK refuses other sites' pages (DNS rebinding) by their ``Host``; but a reverse proxy
    on this machine (Apache's ``ProxyPass``, an nginx) connects from loopback and names
    ``127.0.0.1`` as the ``Host``, and served every collection to the network. The
    SDK's check covers only a server bound to ``127.0.0.1``, ``localhost`` or ``::1``
    spelled so, not one on ``127.1`` or ``127.0.0.2`` (loopback, which ``ragstore mcp``
    serves without a key): the ``Host`` and ``Origin`` are checked here too, as the API
    checks them with keys off (:func:`ragstore.http.guard.foreign_party`).

    A request over a Unix socket is refused too, as the API refuses it with keys off
    (:func:`ragstore.http.guard.unowned_socket`), unless ``own_socket``: ``ragstore mcp
    --host unix:PATH`` bound it owner-only (0600), so only its user connects. Another
    socket is another server's, uvicorn's ``--uds`` one (0666) when the app is served
    that way, and every user of the machine read every collection through it. Over the
    own socket the ``Host`` is left unchecked (a proxy in front of it names its own) and
    the ``Origin`` and forwarding headers checked, as the API does."""

    def __init__(self, app: ASGIApp, *, own_socket: bool = False) -> None:
        self.app = app
        self.own_socket = own_socket

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if unowned_socket(scope, own_socket=self.own_socket):
            await send_problem(
                scope,
                send,
                PermissionDeniedError(
                    "this request came over a Unix socket that ragstore did not create "
                    "(uvicorn's --uds makes one every user of this machine can open): serve "
                    "MCP without a key on a socket with `ragstore mcp --transport http "
                    "--host unix:PATH`, which makes it owner-only, or start it with "
                    "RAGSTORE_API_KEY (or --api-key), which every request must then present"
                ),
            )
            return
        sender = foreign_sender(scope)
        # over the own socket (no client address) the Host is a proxy's to name
        unix = not scope.get("client")
        party = sender or foreign_party(dict(scope.get("headers", ())), check_host=not unix)
        if party is None:
            await self.app(scope, receive, send)
            return
        if sender is not None:
            exc = PermissionDeniedError(
                f"{party} is not this machine: an MCP server started without a key answers "
                "only clients on this machine, and no proxy may forward others to it; start "
                "it with RAGSTORE_API_KEY (or --api-key) to serve others"
            )
        else:
            exc = PermissionDeniedError(
                f"{party} is not this machine: an MCP server started without a key answers "
                "only requests to and from localhost, 127.0.0.1 or [::1] (a guard against "
                "other sites' pages); use one of those names, or start it with "
                "RAGSTORE_API_KEY (or --api-key) to serve others"
            )
        await send_problem(scope, send, exc)


def http_app(
    server: MCPServer,
    store: Store,
    key: ApiKey | None,
    *,
    path: str = "/mcp",
    host: str = "127.0.0.1",
    own_socket: bool = False,
) -> ASGIApp:
    """The streamable HTTP app of ``server``; with ``key``, one that asks every request
    for it (:class:`KeyRequired`), before any body is read. ``host`` is the bind address:
    on loopback the SDK also refuses other sites' pages (DNS rebinding). A body is held to
    ``RAGSTORE_MAX_REQUEST_BYTES`` as at the HTTP API (the SDK reads any body whole into
    memory, however large). A request whose client disconnects is cancelled
    (:class:`CancelOnDisconnect`); sessions are held to ``RAGSTORE_MCP_MAX_SESSIONS``,
    each closed after ``RAGSTORE_MCP_SESSION_IDLE_S`` idle (:class:`SessionCap`); a
    body that is no message is answered in one line as over stdio (:class:`ReadableReplies`).
    Without ``key`` only this machine's clients are served
    (:class:`LocalOnly`), over a Unix socket only where ``own_socket`` (``ragstore mcp``
    bound it owner-only: :func:`ragstore.http.listen.bind_unix`)."""
    settings = store.runtime.settings
    # the SDK's own limits (10,000 sessions, each kept 30 minutes idle) let one client
    # hold ~400 MB and then lock every other out for half an hour
    sessions = SessionCap(
        server.streamable_http_app(
            streamable_http_path=path,
            host=host,
            max_sessions=settings.mcp_max_sessions,
            session_idle_timeout=settings.mcp_session_idle_s,
        ),
        max_sessions=settings.mcp_max_sessions,
        idle_s=settings.mcp_session_idle_s,
    )
    app: ASGIApp = BodyLimitMiddleware(
        CancelOnDisconnect(ReadableReplies(sessions)),
        json_bytes=settings.max_request_bytes,
        upload_bytes=settings.max_request_bytes,
    )
    if key is None:
        return LocalOnly(app, own_socket=own_socket)
    return KeyRequired(app, KeyStore(store.runtime.db, read_only=True), key)


def key_for(store: Store, presented: str | None) -> ApiKey | None:
    """The live key behind ``presented`` (None: no key, read-only tools, no checks).

    A ``metrics`` key (it reads /metrics and nothing else) is refused: no tool checked
    the scope of ``list_collections``, so an MCP server started with a scraper's key
    listed every collection with its model and counts, which the API refuses it."""
    if not presented:
        return None
    key = KeyStore(store.runtime.db, read_only=True).authenticate(presented)
    key.require_scope("read")
    return key


def build_server(store: Store, key: ApiKey | None = None) -> MCPServer:
    """The MCP server over ``store``; ``add_document`` exists only for a write-scoped key."""
    tools: list[Tool] = []

    def tool(description: str) -> Callable[[F], F]:
        def register(fn: F) -> F:
            tools.append(closed(_Tool.from_function(fn, description=description)))
            return fn

        return register

    def allow(scope: str, collection: str | None) -> None:
        if key is not None:
            _require_live(store, key)
            key.require(scope, collection)

    def answered(fn: F) -> F:
        return answers(fn, key)

    @tool(
        description=(
            "Search a collection. mode: hybrid (default; words and meaning), vector (meaning) "
            'or fulltext (words; supports "phrases", or, -word). where: a JSON filter on '
            'metadata, e.g. {"team": "ops", "year": {"$gte": 2020}}; a metadata key named '
            "like a built-in field (source, title, page, chunk_type, created_at, collection) "
            'is filtered as document.KEY, e.g. {"document.source": "crm"} (bare, it reads '
            "the built-in); list_fields gives each field's name. context: a number "
            'of neighbouring chunks (0-50) or "section" to return each hit\'s whole section '
            "(k x (1 + 2 x context) chunks, k x 200 for a section, may be at most the "
            "server's RAGSTORE_MAX_ANSWER_CHUNKS, 20,000 by default). "
            "mmr: true picks the k hits among the ranking's best fetch_k (default 20, at "
            "least k) for relevance and for difference from each other, so near-copies of "
            "one passage do not fill the hits; lambda_mult (0-1, default 0.5) weighs them: "
            "1 relevance alone (the plain ranking), 0 difference alone."
        )
    )
    @answered
    async def search(
        collection: Name,
        query: Annotated[str, Strict()],
        k: StrictInt = 10,  # as for Store.search, the Client and the CLI
        mode: Annotated[str, Strict()] = "hybrid",
        where: WhereArgument = None,
        context: StrictInt | Annotated[str, Strict()] | None = None,
        mmr: Annotated[bool, Strict()] = False,
        fetch_k: StrictInt | None = None,
        lambda_mult: Annotated[float, Strict()] | None = None,
    ) -> dict[str, Any]:

        def searched() -> dict[str, Any]:
            # the key's check is a pooled read: on the event loop, it blocked every other
            # session while it waited for a connection (the SDK awaits this tool there)
            allow("read", collection)
            # the values are checked by the search (search/mmr.py), as for every surface
            return store.search(
                collection,
                query,
                k=k,
                mode=mode,
                where=where,
                context=context,
                mmr=mmr,
                fetch_k=fetch_k,
                lambda_mult=lambda_mult,
            )

        out = await until_abandoned(searched)
        hits = []
        for h in out["data"]:
            hit = {
                "document_id": h["document_id"],
                "chunk_id": h["chunk_id"],
                "source": h["source"],
                "name": h["name"],  # an upload's name (null for a file from disk)
                "title": h["title"],
                "score": h["score"],
                "section": " > ".join(h["section_path"]),
                # its headings, as get_section takes them: a heading may hold a ">"
                "section_path": list(h["section_path"]),
                "page": h["page"],
                "text": h["text"],
                "metadata": h["metadata"],
            }
            if h.get("context"):
                hit["context"] = "\n\n".join(c["text"] for c in h["context"])
            hits.append(hit)
        return {"collection": collection, "query": query, "hits": hits}

    @tool(description="The collections: name, embedding model, documents, chunks.")
    @answered
    def list_collections() -> dict[str, Any]:
        if key is not None:
            _require_live(store, key)
        rows = [
            c
            for c in store.list_collections()
            if key is None or key.collection in (None, c["name"])
        ]
        return {
            "collections": [
                {k: c[k] for k in ("name", "model", "documents", "chunks")} for c in rows
            ]
        }

    @tool(
        description=(
            "The fields a search's where filter can name in a collection: the built-ins "
            "(source, title, chunk_type, created_at, page) and the metadata paths its "
            "documents carry, with their JSON types and a few example values. Call it "
            "before filtering on metadata, and filter by each path's field as listed: a "
            "metadata key named like a built-in is listed as document.KEY (or chunk.KEY), "
            "which reads the key, not the built-in."
        )
    )
    @answered
    def list_fields(collection: Name) -> dict[str, Any]:
        allow("read", collection)
        return store.fields(collection)

    @tool(
        description=(
            "A document by its id (document_id in search hits): its name, title, metadata and "
            "text (long texts are cut at 50000 characters)."
        )
    )
    @answered
    def get_document(collection: Name, document_id: StrictInt) -> dict[str, Any]:
        allow("read", collection)
        doc = store.get_document(collection, document_id)
        texts, more = _document_text(store, collection, document_id)
        text = "\n\n".join(texts)
        return {
            "id": doc["id"],
            "name": doc["name"],
            "title": doc["title"],
            "format": doc["format"],
            "metadata": doc["metadata"],
            "truncated": more or len(text) > MAX_TEXT_CHARS,
            "text": text[:MAX_TEXT_CHARS],
        }

    @tool(
        description=(
            "One section of a document: section is its heading path as a search hit "
            'gives it, the hit\'s section_path (a list of headings, ["Guide", "Rollback"]) '
            'or its section (the headings joined with " > ", "Guide > Rollback"); the '
            "section's text with its subsections."
        )
    )
    @answered
    def get_section(
        collection: Name,
        document_id: StrictInt,
        section: list[Annotated[str, Strict()]] | Annotated[str, Strict()],
    ) -> dict[str, Any]:
        allow("read", collection)
        # refused as get_document (the Store) refuses it: read, -1 was "not in the
        # collection" (an id no document can have) and 2**63 a database error
        row_id(document_id, "document")
        _check_section(section)
        path, text, more = _section_text(store, collection, document_id, section)
        return {
            "document_id": document_id,
            "section": " > ".join(path),
            "section_path": path,
            "truncated": more,
            "text": text,
        }

    if key is not None and key.allows("write"):

        @tool(
            description=(
                "Add (or update) a document in a collection, created if missing. name: a file "
                "name whose suffix picks the parser (notes.md, page.html, memo.txt)."
            )
        )
        @answered
        def add_document(
            collection: Name,
            name: Annotated[str, Strict()],
            text: Annotated[str, Strict()],
            metadata: dict[str, Any] | None = None,
        ) -> dict[str, Any]:
            allow("write", collection)
            _check_call_size(store, collection, name, text, metadata)
            doc = store.add_document(collection, name, text, metadata=metadata)
            return {k: doc[k] for k in ("id", "name", "status", "chunks")}

    return _Server(
        name="ragstore",
        version=__version__,  # serverInfo.version, which the SDK leaves "" unless given
        instructions=(
            "Search the user's documents stored in ragstore. Call list_collections "
            "first, then search; list_fields says what a where filter can name; open a "
            "hit's document or section for more."
        ),
        tools=tools,
    )


def _check_call_size(
    store: Store, collection: str, name: str, text: str, metadata: dict[str, Any] | None
) -> None:
    """Refuse an ``add_document`` call larger than ``RAGSTORE_MAX_REQUEST_BYTES``, its
    arguments counted as JSON (as the body of the same call over HTTP is held to it).
    Over stdio nothing held it: an agent's 10 MB text was chunked and embedded (minutes,
    thousands of chunks), and then, with the text held, 10 MB of metadata was stored on
    the document and on each of its chunks, where the same call over HTTP is refused."""
    limit = store.runtime.settings.max_request_bytes
    call = {"collection": collection, "name": name, "text": text, "metadata": metadata}
    size = len(json.dumps(call, ensure_ascii=False).encode("utf-8", "surrogatepass"))
    if size > limit:
        raise RequestTooLargeError(
            f"the call is {size} bytes (its text and metadata as JSON); add_document takes "
            f"at most {limit} (RAGSTORE_MAX_REQUEST_BYTES, as over HTTP): add a larger "
            f"file with `ragstore ingest PATH -c {collection}` (its metadata with --meta-json)"
        )


def _document_text(store: Store, collection: str, document_id: int) -> tuple[list[str], bool]:
    """The texts of a document's first chunks, at most ``RAGSTORE_MAX_ANSWER_CHUNKS`` of
    them (the bound of every answer), and whether it has more (its text is then cut). Read
    as a call of the Store (:meth:`Store.in_call`), so that its close waits for it."""
    with store.in_call() as rt:
        coll = rt.collection(collection)
        limit = rt.settings.max_answer_chunks
        with rt.db.connection() as conn, translated(f"reading document {document_id}"):
            rows = document_chunks(conn, coll, document_id, after=None, limit=limit + 1)
    return [c["text"] for c in rows[:limit]], len(rows) > limit


def _check_section(section: list[str] | str) -> None:
    """Refuse a ``get_section`` section that names none: empty, or holding what
    PostgreSQL text cannot (a NUL was refused as "reading document 1: a value cannot be
    stored", a write's words naming no argument), told as ``search`` tells its query's."""
    if isinstance(section, str):
        if not section.strip():
            raise InputError("section is empty; give a heading path such as 'Guide > Setup'")
        storable_text(section, "section")
        return
    if not section:
        raise InputError("section is an empty list; give a heading path such as ['Guide', 'Setup']")
    for i, heading in enumerate(section):
        storable_text(heading, f"section[{i}]")


def _section_text(
    store: Store, collection: str, document_id: int, section: list[str] | str
) -> tuple[list[str], str, bool]:
    """A document's section: its heading path, text and whether that was cut at
    :data:`MAX_TEXT_CHARS`, read as a call of the Store (:meth:`Store.in_call`).
    ``section`` is a path (a list of headings) or a string naming one, its headings
    joined with " > " (:func:`ragstore.db.inspection.sections_named`); a string that two
    paths read as is refused asking for the list. A section of more chunks than
    ``RAGSTORE_MAX_ANSWER_CHUNKS`` is refused with its size; one not found is refused
    naming it."""
    given = section.strip() if isinstance(section, str) else section
    shown = repr(given)  # it may be megabytes
    shown = shown if len(shown) <= 200 else shown[:200] + "..."
    with store.in_call() as rt:
        coll = rt.collection(collection)
        limit = rt.settings.max_answer_chunks
        with rt.db.connection() as conn, translated(f"reading document {document_id}"):
            if isinstance(given, str):
                named = sections_named(conn, coll, document_id, given)
            else:
                named = [list(given)]
            texts: list[str] = []
            total = 0
            if len(named) == 1:
                texts, total = section_chunks(conn, coll, document_id, named[0], limit=limit)
    if len(named) > 1:
        paths = ", ".join(repr(p) for p in named[:5])
        raise InputError(
            f"section {shown} names {len(named)} sections of document {document_id} "
            f"({paths}): a heading holds ' > '; give the section as a list of its "
            "headings, a search hit's section_path"
        )
    if not total:
        raise InputError(
            f"document {document_id} has no section {shown}; use the section or "
            "section_path of a search hit"
        )
    if total > limit:
        raise AnswerTooLargeError(
            f"section {shown} of document {document_id} is too large to answer at once: "
            f"{total:,} chunks, at most {limit:,} (RAGSTORE_MAX_ANSWER_CHUNKS); ask for one "
            "of its subsections (a search hit's section), or raise "
            "RAGSTORE_MAX_ANSWER_CHUNKS where the MCP server runs"
        )
    text = "\n\n".join(texts)
    return named[0], text[:MAX_TEXT_CHARS], len(text) > MAX_TEXT_CHARS


def _require_live(store: Store, key: ApiKey) -> None:
    """Refuse a call once ``key`` is revoked (or deleted). Over stdio no request carries
    the key: it was checked once when the server started, so a revoked write key went
    on adding documents until the agent restarted the server. Over HTTP
    :class:`KeyRequired` checks it too; this is one indexed read per call."""
    with (
        store.in_call() as rt,
        rt.db.connection() as conn,
        translated("checking the API key"),
    ):
        live = is_live(conn, key.id)
    if not live:
        raise AuthenticationError(
            f"API key {key.key_id} was revoked; restart the MCP server with a live key "
            "(`ragstore keys create`)"
        )
