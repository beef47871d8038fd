"""Listening sockets for ``ragstore serve`` and the tie of its workers to it.

``ragstore serve`` binds its sockets itself before uvicorn starts, so the auth decision
rests on the addresses actually listening (``""`` binds every interface), and every worker
shares them. A worker asks the kernel for SIGTERM when the serve process dies, even by
``kill -9``, so no worker outlives it.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket

from ragstore.errors import ConfigError

PARENT_ENV = "RAGSTORE_SERVE_PARENT"


def bind_sockets(host: str, port: int) -> list[socket.socket]:
    """Listening TCP sockets for ``host`` (``""``: every IPv4 and IPv6 interface)."""
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise ConfigError(f"RAGSTORE_API_HOST={host!r} does not resolve: {exc.strerror}") from None
    sockets: list[socket.socket] = []
    seen: set[tuple[int, str]] = set()  # (family, address)
    try:
        for family, kind, proto, _, addr in infos:
            key = (int(family), str(addr[0]))
            if key in seen:
                continue
            seen.add(key)
            sock = socket.socket(family, kind, proto)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind((addr[0], port or (sockets[0].getsockname()[1] if sockets else 0)))
            except OSError:
                sock.close()
                if family == socket.AF_INET6 and not host:
                    continue  # no IPv6 on this machine: every IPv4 interface still listens
                raise
            sockets.append(sock)
            sock.listen(2048)
            sock.set_inheritable(True)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        where = f"{host or '*'}:{port}"
        raise ConfigError(
            f"cannot listen on {where}: {exc.strerror}; {bind_remedy(exc, host)}"
        ) from None
    return sockets


def bind_remedy(
    exc: OSError, host: str = "", *, host_flag: str = "--host", port_flag: str = "--port"
) -> str:
    """What to do about a bind that failed, by its cause, naming the command's own options
    (``host_flag``, ``port_flag``: the worker's metrics port has others than ``serve``).

    An IPv4-mapped address (``::ffff:127.0.0.1``) fails with EINVAL, since IPv6 sockets
    are bound to IPv6 alone: that was answered "pick another --port", which never helps.
    """
    mapped = _ipv4_mapped(host)
    if exc.errno == errno.EINVAL and mapped is not None:
        return f"an IPv4-mapped IPv6 address cannot be bound: give {host_flag} {mapped} itself"
    if exc.errno == errno.EADDRNOTAVAIL:
        return (
            f"no interface of this machine has that address: give {host_flag} one it has "
            "(`ip addr` lists them), 127.0.0.1 for this machine alone, or 0.0.0.0 for all"
        )
    if exc.errno == errno.EACCES:
        return f"ports below 1024 need privileges: pick {port_flag} 1024 or above"
    return f"pick another {port_flag} or stop what uses it"


def _ipv4_mapped(host: str) -> str | None:
    """The IPv4 address inside ``::ffff:a.b.c.d`` (``None``: not such an address)."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return None if mapped is None else str(mapped)


def bound_addresses(sockets: list[socket.socket]) -> list[str]:
    return [str(s.getsockname()[0]) for s in sockets]


def stop_with_parent() -> None:
    """In a worker: have the kernel send SIGTERM when ``ragstore serve`` dies (Linux)."""
    parent = os.environ.get(PARENT_ENV)
    if not parent or parent == str(os.getpid()) or not hasattr(os, "getppid"):
        return  # not a worker: the serve process itself (one worker) or a test server
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if str(os.getppid()) != parent:  # the parent died before the call above
        os.kill(os.getpid(), 15)
