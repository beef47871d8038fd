"""Listening sockets for ``ragstore serve`` and the tie of its workers to it.

``ragstore serve`` binds its sockets itself before uvicorn starts, so the auth decision
rests on the addresses actually listening (``""`` binds every interface), and every worker
shares them. A worker asks the kernel for SIGTERM when the serve process dies, even by
``kill -9``, so no worker outlives it.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import socket

from ragstore.errors import ConfigError

PARENT_ENV = "RAGSTORE_SERVE_PARENT"


UNIX_PREFIX = "unix:"


def bind_sockets(
    host: str, port: int, *, setting: str = "RAGSTORE_API_HOST"
) -> list[socket.socket]:
    """Listening TCP sockets for ``host`` (``""``: every IPv4 and IPv6 interface), or the
    Unix socket ``unix:PATH`` names (:func:`bind_unix`); ``setting`` names where ``host``
    was given, in the error of one that does not resolve or names no socket path
    (``ragstore mcp``'s ``--host``)."""
    if host.startswith(UNIX_PREFIX):
        return [bind_unix(host[len(UNIX_PREFIX) :], setting=setting)]
    # ``[::1]``, ``[::]``: an IPv6 address as a URL writes it, which getaddrinfo reads as a
    # name ("does not resolve")
    name = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        infos = socket.getaddrinfo(
            name or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise ConfigError(f"{setting}={host!r} does not resolve: {exc.strerror}") from None
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
            # the whole address getaddrinfo gave, port aside: an IPv6 one keeps its flow
            # info and scope id (``fe80::1%eth0``), without which a link-local address
            # failed to bind (EINVAL) with the advice to pick another port
            bound_port = port or (sockets[0].getsockname()[1] if sockets else 0)
            try:
                sock.bind((addr[0], bound_port, *addr[2:]))
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


def bind_unix(path: str, *, setting: str = "RAGSTORE_API_HOST") -> socket.socket:
    """A listening Unix socket at ``path``, owner-only (0600) from its creation; shared by
    ``ragstore serve`` and ``ragstore mcp --transport http`` (``setting``: where the path
    was given, for the error of an empty one).

    uvicorn's ``--uds`` makes its socket 0666: with keys off (``RAGSTORE_AUTH=auto`` judges
    a Unix socket local) every user of the machine had admin rights through it. Created
    under a umask of 0177, no other user can connect between the bind and a chmod; a
    server with keys on opens it to them (:func:`open_unix_sockets`), the key being the
    credential. A socket file this user left (its server died) is replaced; one a live server
    listens on, one of another user, or a path that is not a socket, is refused."""
    if not path:
        raise ConfigError(f"{setting}='unix:' names no socket: give unix:/PATH")
    _clear_stale_socket(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    mask = os.umask(0o177)
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot listen on unix:{path}: {exc.strerror}; give a path in a folder this "
            "user may write"
        ) from None
    finally:
        os.umask(mask)
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _clear_stale_socket(path: str) -> None:
    """Remove a socket file of this user at ``path`` that nothing listens on; refuse a live
    one, one of another user, or a path that is not a socket (never deleted: it may be
    anything).

    Another user's socket is not ours to replace, stale or not: its unlink failed in a
    sticky folder (/tmp) with a bare PermissionError, and as root it went, leaving its
    owner's clients on a socket they cannot open."""
    import stat

    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise ConfigError(
            f"cannot listen on unix:{path}: the path exists and is not a socket; give "
            "another path or remove it"
        )
    if info.st_uid != os.geteuid():
        raise ConfigError(
            f"cannot listen on unix:{path}: a socket of another user (uid {info.st_uid}) is "
            "there; give another path (in a folder of your own, such as $XDG_RUNTIME_DIR)"
        )
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        # a socket whose server died: nothing answers on it (one this user may not remove
        # stays, and the bind says to give a path in a folder this user may write)
        with contextlib.suppress(OSError):
            os.unlink(path)
        return
    except OSError:
        return  # not ours to judge: the bind says what is wrong
    finally:
        probe.close()
    raise ConfigError(
        f"cannot listen on unix:{path}: a server already listens there; stop it or give "
        "another path"
    )


def open_unix_sockets(sockets: list[socket.socket]) -> None:
    """With keys on, let every user of the machine connect to the Unix sockets (0666, as
    uvicorn makes them): a reverse proxy running as another user reaches the server, and
    each request still needs a key."""
    for sock in sockets:
        if sock.family == socket.AF_UNIX:
            os.chmod(sock.getsockname(), 0o666)


def release_sockets(sockets: list[socket.socket], bound: list[str]) -> None:
    """Close ``sockets`` and remove the files of the Unix ones among ``bound`` (their
    :func:`bound_addresses`, taken while they were open: uvicorn closes the sockets it
    served on): a stopped server's socket file left behind only misleads."""
    for sock in sockets:
        sock.close()
    for address in bound:
        if address.startswith(UNIX_PREFIX):
            with contextlib.suppress(OSError):
                os.unlink(address[len(UNIX_PREFIX) :])


def bound_addresses(sockets: list[socket.socket]) -> list[str]:
    """Each socket's address as ``RAGSTORE_API_HOST`` spells it (``unix:PATH`` for a Unix
    socket), for the settings' ``api_bound``."""
    return [
        f"{UNIX_PREFIX}{s.getsockname()}" if s.family == socket.AF_UNIX else str(s.getsockname()[0])
        for s in sockets
    ]


def tcp_endpoint(host: str, port: int) -> str:
    """``host:port``, an IPv6 address in brackets (``[::1]:8080``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def open_to_local_users(endpoints: list[str], rights: str, remedy: str) -> str:
    """The start-up warning's sentence for a server without keys on loopback TCP, shared
    by ``ragstore serve`` and ``ragstore mcp``: a loopback port has no owner and the
    server cannot tell one local user from another (peer credentials exist for Unix
    sockets only), so every user of the machine has ``rights`` there."""
    return (
        f"every request to {', '.join(endpoints)} {rights}, from any user of this machine; "
        f"on a machine shared with other users {remedy}"
    )


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
