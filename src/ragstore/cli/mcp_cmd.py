"""``ragstore mcp``: serve ragstore's tools to LLM agents over MCP (stdio or HTTP)."""

from __future__ import annotations

import functools
import logging
import socket

import typer
from typer._click.core import ParameterSource

from ragstore.errors import ConfigError, InputError

log = logging.getLogger(__name__)

KEY_ON_COMMAND_LINE = (
    "--api-key on the command line can be read by every user of this machine while the "
    "server runs (ps, /proc/PID/cmdline); set RAGSTORE_API_KEY in its environment instead"
)


def listening(host: str, port: int, *, keyed: bool) -> list[socket.socket]:
    """The sockets ``ragstore mcp --transport http`` serves on, bound here by ``ragstore
    serve``'s own code; without a key (``keyed`` false) refused unless every address
    bound is loopback or the Unix socket ``--host unix:PATH`` names.

    A Unix socket is made owner-only (0600) and a path that exists and is not a stale
    socket of this user refused (:func:`ragstore.http.listen.bind_unix`): without a key
    only its owner connects, which loopback TCP cannot promise (every local user reaches
    a port). With a key it is opened to every local user, as serve opens its own, each
    request presenting the key.

    The check compared the host as typed with ``127.0.0.1``, ``::1`` and ``localhost``:
    ``127.1``, ``127.0.0.2`` or ``[::1]`` (loopback all) were refused as another address,
    and ``localhost`` was let by whatever it resolved to. Judged from the addresses
    bound, the sockets uvicorn then serves on, nothing else can listen."""
    from ragstore.http.listen import bind_sockets, bound_addresses, open_unix_sockets
    from ragstore.profiles import is_loopback

    sockets = bind_sockets(host, port, setting="--host")
    bound = bound_addresses(sockets)
    if keyed:
        open_unix_sockets(sockets)  # the key is the credential
        return sockets
    if all(is_loopback(address) for address in bound):  # a unix: one included
        return sockets
    for sock in sockets:
        sock.close()
    raise InputError(
        f"serving MCP on {host} without an API key would let anyone on the network read "
        f"every collection (it listens on {', '.join(bound)}, not on loopback alone); set "
        "RAGSTORE_API_KEY to a key from `ragstore keys create`, or bind 127.0.0.1"
    )


def keyless_warning(sockets: list[socket.socket]) -> str | None:
    """The start-up line of keyless MCP on loopback TCP (None on its owner-only Unix
    socket): every user of this machine reaches a loopback port, as ``ragstore serve``
    warns with keys off. It started without a word."""
    from ragstore.http.listen import open_to_local_users, tcp_endpoint

    endpoints = [
        tcp_endpoint(str(s.getsockname()[0]), int(s.getsockname()[1]))
        for s in sockets
        if s.family != socket.AF_UNIX
    ]
    if not endpoints:
        return None
    return "MCP is served without an API key: " + open_to_local_users(
        endpoints,
        "can search and read every collection",
        "serve it on an owner-only Unix socket (--host unix:PATH), or set RAGSTORE_API_KEY "
        "to a key from `ragstore keys create`",
    )


def register(app: typer.Typer) -> None:
    @app.command("mcp")
    def mcp(
        ctx: typer.Context,
        transport: str = typer.Option(
            "stdio",
            "--transport",
            metavar="stdio|http",
            help="stdio (spawned by an agent) or http (streamable HTTP).",
        ),
        host: str = typer.Option(
            "127.0.0.1",
            "--host",
            metavar="ADDR",
            help="Bind address for http, or unix:PATH for an owner-only Unix socket.",
        ),
        port: int = typer.Option(8765, "--port", min=0, max=65535, help="Port for http."),
        path: str = typer.Option("/mcp", "--path", metavar="PATH", help="Endpoint path for http."),
        api_key: str | None = typer.Option(
            None,
            "--api-key",
            envvar="RAGSTORE_API_KEY",
            metavar="KEY",
            show_envvar=True,
            help="A key from `ragstore keys create`: its scope "
            "and collection bound every tool; add_document "
            "is offered only with a write key. Over http every "
            "request must present it (Authorization: Bearer). "
            "Set RAGSTORE_API_KEY rather than the option: every "
            "local user can read a command line.",
        ),
    ) -> None:
        """Serve search, list_collections, list_fields, get_document, get_section (and
        add_document with a write key) as Model Context Protocol tools."""
        from ragstore.cli.remote import refuse_remote

        if api_key and ctx.get_parameter_source("api_key") == ParameterSource.COMMANDLINE:
            log.warning("%s", KEY_ON_COMMAND_LINE)

        # its tools use a Store on the database, not the Client: an agent whose environment
        # names a server would search (and add documents to) another database
        refuse_remote("mcp")
        if transport not in ("stdio", "http"):
            raise InputError(f"--transport {transport!r} is not stdio or http")
        from ragstore.http.listen import bound_addresses, release_sockets

        sockets = listening(host, port, keyed=bool(api_key)) if transport == "http" else []
        warning = None if api_key else keyless_warning(sockets)
        if warning is not None:
            log.warning("%s", warning)
        # taken while they are open: uvicorn closes the sockets it served on
        bound = bound_addresses(sockets)
        try:
            _serve(transport, host, path, api_key, sockets)
        finally:
            release_sockets(sockets, bound)  # a Unix socket's file removed


def _serve(
    transport: str, host: str, path: str, api_key: str | None, sockets: list[socket.socket]
) -> None:
    """Serve the tools over ``transport``: over http on ``sockets`` (:func:`listening`),
    ``host`` being what they were bound to (the SDK judges DNS rebinding by it); a Unix
    socket among them is this command's own, owner-only, answered without a key."""
    try:
        from ragstore.integrations.mcp import build_server, http_app, key_for, serve_stdio
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"ragstore mcp needs the MCP SDK ({exc.name} is missing): pip install 'ragstore[mcp]'"
        ) from None
    from ragstore.store import Store

    with Store() as store:
        key = key_for(store, api_key)
        server = build_server(store, key)
        if transport == "stdio":
            import anyio

            from ragstore.cli.signals import until_stopped

            anyio.run(until_stopped, functools.partial(serve_stdio, server))
            return
        import uvicorn

        from ragstore.api.server import server_config
        from ragstore.cli.signals import stop_signals_end_cleanly
        from ragstore.profiles import get_settings

        own_socket = any(sock.family == socket.AF_UNIX for sock in sockets)
        app = http_app(server, store, key, path=path, host=host, own_socket=own_socket)
        config = server_config(app, get_settings(), log_level="warning", access_log=False)
        http_server = uvicorn.Server(config)
        with stop_signals_end_cleanly(http_server):
            http_server.run(sockets=sockets)
