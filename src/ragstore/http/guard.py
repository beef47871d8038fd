"""With authentication off, answer only requests that come from this machine's own pages.

Shared by the three HTTP surfaces a server started without keys may offer: the API
(:class:`LoopbackGuardMiddleware`), MCP over HTTP (:func:`foreign_sender`) and a
worker's metrics port (:func:`foreign_party`).

``RAGSTORE_AUTH=auto`` turns keys off for the embedded database served on loopback: being
on this machine is then the only credential. A web page of another site, open in a browser
on the same machine, could still use the server in two ways:

* DNS rebinding: the page's own name is made to resolve to 127.0.0.1, so the browser
  treats the server as that site and lets the page read every answer. Its requests carry
  ``Host: evil.example``.
* A cross-site form post (multipart upload) is a "simple" request the browser sends
  without asking first; it carries ``Origin: https://evil.example`` (or ``null``).

:class:`LoopbackGuardMiddleware` refuses both with ``forbidden`` unless the ``Host`` and
any ``Origin`` name a loopback host (``localhost``, ``*.localhost``, ``127.0.0.0/8``,
``[::1]``). Requests without those headers (curl, the Python client over HTTP/1.0) pass.
It also refuses any client whose address is not loopback (:func:`foreign_client`), and
any request a proxy forwarded for a client of another machine (:func:`foreign_forwarded`).
A request over a Unix socket (no client address) has its ``Host`` left unchecked (a proxy
in front of the socket names its own), but its ``Origin`` and any forwarded client are
checked: a browser reaches such a socket through a local proxy. It is answered only over
the owner-only socket ``ragstore serve`` binds for ``RAGSTORE_API_HOST=unix:PATH``: a
socket made by another (uvicorn's ``--uds``: mode 0666) lets every user of the machine
in, so its requests are refused (:func:`unowned_socket`; MCP over HTTP without a key
answers only over the owner-only socket ``ragstore mcp --host unix:PATH`` binds).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from ragstore.errors import PermissionDeniedError
from ragstore.http.problems import send_problem


def is_loopback_name(host: str) -> bool:
    """Whether ``host`` (no port; IPv6 in brackets or not) can only mean this machine."""
    host = host.strip().lower().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host == "localhost" or host.endswith(".localhost"):
        return True  # RFC 6761: browsers resolve these to loopback themselves
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1, as a dual-stack proxy names it
    return address.is_loopback


def _host_of_authority(authority: str) -> str:
    """``example:8080`` -> ``example``; ``[::1]:8080`` -> ``[::1]``."""
    if authority.startswith("["):
        return authority.split("]", 1)[0] + "]"
    return authority.rsplit(":", 1)[0] if authority.count(":") == 1 else authority


def foreign_party(headers: dict[bytes, bytes], *, check_host: bool = True) -> str | None:
    """What names a non-loopback party in these request headers (``None``: none does);
    ``check_host=False`` looks at the ``Origin`` only."""
    host = headers.get(b"host")
    if host is not None and check_host:
        name = _host_of_authority(host.decode("latin-1"))
        if not is_loopback_name(name):
            return f"Host {name!r}"
    origin = headers.get(b"origin")
    if origin is not None:
        text = origin.decode("latin-1").strip()
        try:
            origin_host = urlsplit(text).hostname if text != "null" else None
        except ValueError:
            origin_host = None
        if origin_host is None or not is_loopback_name(origin_host):
            return f"Origin {text!r}"
    return None


def foreign_client(client: tuple[str, int] | None) -> str | None:
    """The client's address when it is not this machine's (``None``: it is, or unknown).

    The ``Host`` check stops browsers only: any other client names the ``Host`` it likes.
    A server that judged itself on loopback can still be reached from elsewhere (the app
    served by uvicorn or gunicorn on ``0.0.0.0`` rather than by ``ragstore serve``, or a
    reverse proxy on this machine forwarding the network, whose client address comes from
    ``RAGSTORE_TRUSTED_PROXIES``' ``X-Forwarded-For``): with keys off, those clients would
    have admin rights. No client address at all (a Unix socket) is judged by
    :class:`LoopbackGuardMiddleware` (only ragstore's own owner-only socket is answered).
    """
    if not client:
        return None
    peer = str(client[0])
    try:
        address = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        return f"client {peer!r}"
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return None if address.is_loopback else f"client {peer!r}"


_FORWARDING_HEADERS = (b"x-forwarded-for", b"forwarded", b"x-real-ip")


def _forwarded_for(name: bytes, value: str) -> list[str]:
    """The client addresses one forwarding header names, ports and brackets dropped.

    ``X-Forwarded-For: 203.0.113.9, 127.0.0.1``; ``X-Real-IP: 203.0.113.9``;
    ``Forwarded: for=203.0.113.9;proto=https, for="[2001:db8::1]:4711"`` (RFC 7239: only
    its ``for`` parameters name clients; ``unknown`` and ``_hidden`` ones are kept, and
    are no loopback address)."""
    if name != b"forwarded":
        entries = [e.strip() for e in value.split(",")]
    else:
        entries = []
        for pair in value.replace(",", ";").split(";"):
            key, _, given = pair.partition("=")
            if key.strip().lower() == "for":
                entries.append(given.strip().strip('"'))
    hosts = []
    for entry in filter(None, entries):
        if entry.startswith("["):
            hosts.append(entry[1:].split("]", 1)[0])
        elif entry.count(":") == 1:  # IPv4 with a port; a bare IPv6 has several colons
            hosts.append(entry.split(":", 1)[0])
        else:
            hosts.append(entry)
    return hosts


def foreign_forwarded(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The first client of another machine that a forwarding header names (``None``: none).

    A reverse proxy on this machine connects from loopback, and with
    ``RAGSTORE_TRUSTED_PROXIES`` unset (the default) its ``X-Forwarded-For`` is not
    believed, so the client address stays the proxy's: Apache's ``ProxyPass`` (which sends
    ``Host: 127.0.0.1:PORT`` and ``X-Forwarded-For``) or an nginx that adds the header put
    the network in front of a server with keys off, and every client got admin rights. A
    proxy says it forwards someone else; a client on this machine that names another one
    only refuses itself."""
    for name, raw in headers:
        name = name.lower()
        if name not in _FORWARDING_HEADERS:
            continue
        for host in _forwarded_for(name, raw.decode("latin-1")):
            if not is_loopback_name(host):
                return f"{name.decode()} {host!r}"
    return None


def foreign_sender(scope: Scope) -> str | None:
    """The client of another machine behind a request: its address (:func:`foreign_client`)
    or one a proxy on this machine forwarded it for (:func:`foreign_forwarded`)."""
    return foreign_client(scope.get("client")) or foreign_forwarded(list(scope.get("headers", ())))


def unowned_socket(scope: Scope, *, own_socket: bool) -> bool:
    """Whether a request came over a Unix socket (no client address) that ragstore did not
    bind owner-only itself (``own_socket``: ``ragstore serve`` or ``ragstore mcp`` did,
    :func:`ragstore.http.listen.bind_unix`).

    Such a socket was made by another server: uvicorn's ``--uds`` makes it 0666, so every
    user of the machine can connect. A surface that answers without a key (the API with
    keys off, MCP over HTTP started without one) refuses its requests."""
    return not scope.get("client") and not own_socket


class LoopbackGuardMiddleware:
    """Refuses requests addressed to, or sent from, another site (see the module doc).

    ``own_socket``: whether ``ragstore serve`` bound the Unix socket this app may be
    served on (``unix:`` in the settings' ``api_bound``, which only serve passes), owner-only
    (:func:`ragstore.http.listen.bind_unix`). A request over any other Unix socket is
    refused: uvicorn's ``--uds`` makes its socket 0666, so with keys off every user of
    the machine had admin rights through it."""

    def __init__(self, app: ASGIApp, *, own_socket: bool = False) -> None:
        self.app = app
        self.own_socket = own_socket

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = list(scope.get("headers", ()))
        client = foreign_sender(scope)
        # a Unix socket's client (none) names the Host it likes: a proxy in front of the
        # socket sends its own (nginx: localhost). A browser's page behind such a proxy
        # still says where it comes from, so the Origin is checked.
        unix = not scope.get("client")
        if unowned_socket(scope, own_socket=self.own_socket):
            await send_problem(
                scope,
                send,
                PermissionDeniedError(
                    "this request came over a Unix socket that ragstore did not create "
                    "(uvicorn's --uds makes one every user of this machine can open): with "
                    "authentication off, serve the socket with `ragstore serve` and "
                    "RAGSTORE_API_HOST=unix:PATH, which makes it owner-only, or turn "
                    "authentication on (RAGSTORE_AUTH=on and `ragstore keys create`)"
                ),
            )
            return
        party = client or foreign_party(dict(headers), check_host=not unix)
        if party is None:
            await self.app(scope, receive, send)
            return
        if client is not None:
            exc = PermissionDeniedError(
                f"{client} is not this machine: with authentication off this server answers "
                "only clients on this machine, and no proxy may forward others to it; turn "
                "authentication on (RAGSTORE_AUTH=on and `ragstore keys create`) to serve "
                "others"
            )
            await send_problem(scope, send, exc)
            return
        exc = PermissionDeniedError(
            f"{party} is not this machine: with authentication off this server answers only "
            "requests to and from localhost, 127.0.0.1 or [::1] (a guard against other "
            "sites' pages using it); use one of those names, or turn authentication on "
            "(RAGSTORE_AUTH=on) to serve other names"
        )
        await send_problem(scope, send, exc)
