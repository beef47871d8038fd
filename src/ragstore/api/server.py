"""How uvicorn serves the app: one :func:`server_config` for ``ragstore serve``, ``ragstore
mcp`` and the tests, so every server runs with the same guards.

uvicorn's httptools protocol, left alone, reads a request head without limit (a client that
sent 96 MB of headers kept the event loop busy for 13.6 s, every other client waiting) and
waits for it without end (a head sent a byte a second holds a connection forever; so does
a connection that never sends anything). :class:`GuardedHttpToolsProtocol` keeps
httptools' speed and adds two bounds:

* ``RAGSTORE_MAX_HEADER_BYTES``: once more bytes than this arrived without the parser
  finishing a head (or a chunked body's trailers), the client is answered 431
  ``headers_too_large`` and disconnected. Bytes are counted as they arrive, before the
  parser would buffer more of them, so a flood costs one read buffer (256 KiB) at most.
* ``RAGSTORE_HEADER_TIMEOUT_S``: a connection must deliver a whole head within this many
  seconds of opening, or of its last response ending, else it is closed. A request body
  gets the same time plus a second for every :data:`BODY_MIN_BYTES_PER_S` bytes it
  delivered (time while the app is not reading does not count): a body trickled in a byte
  at a time no longer holds a connection and its task forever, a slow upload still passes.

* ``RAGSTORE_MAX_CONNECTIONS``: a server process holds at most this many connections open
  (and at most half its open-file limit, ``ulimit -n``). Without a cap a client opening
  thousands of idle or half-sent connections (each held up to the header timeout, and
  opened again) used up the process's descriptors: the database pool's new connections,
  an upload's spooled file and the accept of every good client then failed. A connection
  past the cap is answered at once with a 503 ``not_ready`` problem (``Retry-After``) and
  closed, so a client or proxy learns the server is full instead of waiting on a silent
  socket. uvicorn's ``limit_concurrency`` does not do this: it counts the connections but
  answers only once a whole request head arrived (a slow head holds its descriptor till
  then), and in ``text/plain``.
* ``RAGSTORE_MAX_CONNECTIONS_PER_ADDRESS`` (unset: a quarter of the cap in effect; 0: none):
  a server process holds at most this many of them from one client address, answered past
  it like the cap. Without it one host opening idle connections took every slot, and every
  other client got the 503. An IPv6 client counts by its /64 (one host usually holds a
  whole /64, and picks a new address from it at will); an IPv4-mapped IPv6 address is its
  IPv4 address. A peer in ``RAGSTORE_TRUSTED_PROXIES`` carries many clients (whose own
  addresses are known only once a head arrived), and a Unix-socket peer has no address:
  neither is capped per address, only by the cap.

A connection refused by either cap never reaches the app (no request metric, no access-log
line): it counts in ``ragstore_http_connections_refused_total{reason="server_cap"}`` or
``{reason="address_cap"}``, so an operator can see and alert on refusals.

An answer the client does not read is bounded the same way: while bytes of it wait in the
server's write buffer, the client must take ``RAGSTORE_HEADER_TIMEOUT_S`` times
:data:`BODY_MIN_BYTES_PER_S` bytes (or all that is left) in every such span, else the
connection is dropped. A close waits for that buffer to drain, so a client that asked for
a large answer and never read it held its connection (and a place under the cap), and the
answer's bytes in memory, for good.

A request the parser cannot read at all (a NUL in a header, a path outside ASCII, two
``Content-Length`` headers) is answered 400 ``malformed_request`` as problem+json, like
every other error, where uvicorn wrote a ``text/plain`` line. These answers written by the
protocol (400, 431, 503) carry the security headers of every other answer
(:data:`ragstore.console.security.BASE_HEADERS`).

``X-Forwarded-For`` / ``X-Forwarded-Proto`` are read only from the addresses in
``RAGSTORE_TRUSTED_PROXIES`` (none by default): with uvicorn's default any local process
could name another client address and so dodge the per-address throttle of failed keys.
"""

from __future__ import annotations

import asyncio
import fcntl
import ipaddress
import json
import logging
import resource
import struct
import termios
import time
import uuid
import weakref
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from ragstore.config import Settings, proxy_network_forms
from ragstore.errors import (
    HeadersTooLargeError,
    MalformedRequestError,
    NotReadyError,
    RagstoreError,
)
from ragstore.observability.metrics import record_connection_refused, record_error

log = logging.getLogger("ragstore.api")

_DEFAULTS = Settings.model_fields

BODY_MIN_BYTES_PER_S = 1024  # a request body slower than this is cut off (see the module doc)
_OUTQ: int | None = getattr(termios, "TIOCOUTQ", None)  # SIOCOUTQ: a socket's unsent bytes
REFUSAL_LOG_EVERY_S = 10.0  # connections refused over the cap are logged at most this often
IPV6_CLIENT_PREFIX = 64  # an IPv6 client is counted by this network (see the module doc)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# open connections per client address, per server (the protocols of one server share its
# ServerState); an address's entry goes once its last connection closed
_ADDRESS_COUNTS: weakref.WeakKeyDictionary[ServerState, dict[str, int]] = (
    weakref.WeakKeyDictionary()
)


class _Tally:
    """A warning about connections the server cut off, written at most once per
    :data:`REFUSAL_LOG_EVERY_S` with how many there were since the last one, as for the
    connections refused over a cap. Each was logged on its own: a burst of 200 slow
    clients wrote 200 lines at once, burying the rest of the log."""

    def __init__(self, message: str) -> None:
        self.message = message  # its %d: how many connections
        self.count = 0
        self.logged: float | None = None  # time.monotonic() of the last line

    def happened(self) -> None:
        self.count += 1
        now = time.monotonic()
        if self.logged is None or now - self.logged >= REFUSAL_LOG_EVERY_S:
            log.warning(self.message, self.count)
            self.count = 0
            self.logged = now


_SLOW_BODIES = _Tally(
    f"closed %d connection(s) whose request body arrived slower than "
    f"{BODY_MIN_BYTES_PER_S} bytes/s (RAGSTORE_HEADER_TIMEOUT_S)"
)
_SLOW_READERS = _Tally(
    f"dropped %d connection(s) whose client took its answer slower than "
    f"{BODY_MIN_BYTES_PER_S} bytes/s (RAGSTORE_HEADER_TIMEOUT_S)"
)


class ServeConfig(uvicorn.Config):
    """uvicorn's ``Config`` with the head limits on it: worker processes receive the config
    pickled, so the limits travel with it (a class attribute set at run time would not)."""

    def __init__(
        self,
        app: Any,
        *,
        max_header_bytes: int,
        header_timeout_s: float,
        max_connections: int,
        max_connections_per_address: int = 0,
        trusted_networks: tuple[Network, ...] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(app, **kwargs)
        self.max_header_bytes = max_header_bytes
        self.header_timeout_s = header_timeout_s
        self.max_connections = max_connections
        self.max_connections_per_address = max_connections_per_address
        self.trusted_networks = trusted_networks


def connection_cap(max_connections: int) -> int:
    """``RAGSTORE_MAX_CONNECTIONS``, lowered to half the process's open-file limit: a cap
    above what the process may open (1024 by default on Linux, 256 on macOS) protected
    nothing, the descriptors ran out first. The other half is left to the database pool,
    uploads' spooled files, parsers and logs."""
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return max_connections
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return max_connections
    cap = max(1, soft // 2)
    if cap < max_connections:
        log.warning(
            "RAGSTORE_MAX_CONNECTIONS=%d is over half this process's open-file limit "
            "(ulimit -n %d): at most %d connections are held open; raise the limit "
            "(ulimit -n, LimitNOFILE) to hold more",
            max_connections,
            soft,
            cap,
        )
        return cap
    return max_connections


def per_address_cap(per_address: int | None, cap: int) -> int:
    """``RAGSTORE_MAX_CONNECTIONS_PER_ADDRESS`` in effect under the connection cap ``cap``:
    unset, a quarter of it (at least one), so that one host never takes every slot however
    the cap is set; 0 (no per-address cap) as it is."""
    if per_address is None:
        return max(1, cap // 4)
    return per_address


def trusted_networks(trusted: str) -> tuple[Network, ...]:
    """``RAGSTORE_TRUSTED_PROXIES`` (already validated by the settings) as networks, an
    IPv4 one in its IPv4-mapped IPv6 form too and the reverse (``proxy_network_forms``),
    so a proxy matches however the listener sees its address."""
    forms = (proxy_network_forms(item.strip()) for item in trusted.split(",") if item.strip())
    return tuple(dict.fromkeys(network for group in forms for network in group))


def address_key(host: str | None, trusted: tuple[Network, ...] = ()) -> str | None:
    """What a connection from ``host`` counts under for the per-address cap, or None where
    it is not capped per address: no address (a Unix socket), a trusted proxy (many
    clients behind one address), or one that is not an IP address. An IPv4-mapped IPv6
    address is its IPv4 address (a dual-stack listener sees IPv4 clients so); another
    IPv6 address counts by its /64 (see the module doc)."""
    if not host:
        return None
    try:
        peer = ipaddress.ip_address(host.split("%", 1)[0])  # a link-local's zone dropped
    except ValueError:
        return None
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address = peer
    if isinstance(peer, ipaddress.IPv6Address) and peer.ipv4_mapped is not None:
        ip = peer.ipv4_mapped
    if any(ip in net or peer in net for net in trusted):
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((ip, IPV6_CLIENT_PREFIX), strict=False))
    return str(ip)


def server_config(app: Any, settings: Settings, **kwargs: Any) -> ServeConfig:
    """The uvicorn config that serves ``app`` (an app, or an import string with
    ``factory=True``) under ``settings``' limits; ``kwargs`` go to uvicorn as they are."""
    networks = trusted_networks(settings.trusted_proxies)
    cap = connection_cap(settings.max_connections)
    # no route takes a websocket: with uvicorn's default ("auto") an upgrade request was
    # handed to the websockets library, past GuardedHttpToolsProtocol's bounds, and
    # refused there with a bare text/plain 403; with "none" it is a plain HTTP request
    kwargs.setdefault("ws", "none")
    return ServeConfig(
        app,
        http=GuardedHttpToolsProtocol,
        max_header_bytes=settings.max_header_bytes,
        header_timeout_s=settings.header_timeout_s,
        max_connections=cap,
        max_connections_per_address=per_address_cap(settings.max_connections_per_address, cap),
        trusted_networks=networks,
        proxy_headers=bool(networks),
        # uvicorn compares the peer with each entry as written, in one form, and takes an
        # entry with host bits set (10.0.0.1/24) for a name that no peer matches
        forwarded_allow_ips=[str(network) for network in networks] if networks else None,
        **kwargs,
    )


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bound on the size and the time of a request head
    and on the connections held open (see the module doc)."""

    refused = 0  # connections refused over the cap since the last log line (one loop)
    refusal_logged = 0.0  # when that line was last written (loop-independent clock)
    refused_per_address = 0  # the same for the per-address cap
    per_address_logged = 0.0

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        if isinstance(config, ServeConfig):
            self.max_head = config.max_header_bytes
            self.head_timeout = config.header_timeout_s
            self.max_connections = config.max_connections
            self.per_address = config.max_connections_per_address
            self.trusted: tuple[Network, ...] = config.trusted_networks
        else:  # a plain uvicorn.Config naming this class: the settings' defaults
            self.max_head = int(_DEFAULTS["max_header_bytes"].default)
            self.head_timeout = float(_DEFAULTS["header_timeout_s"].default)
            self.max_connections = connection_cap(int(_DEFAULTS["max_connections"].default))
            self.per_address = per_address_cap(None, self.max_connections)
            self.trusted = ()
        self.address: str | None = None  # what this connection counts under, while it does
        self.unparsed = 0  # bytes received since the parser last finished something
        self.progressed = False
        self.head_timer: asyncio.TimerHandle | None = None
        self.body_timer: asyncio.TimerHandle | None = None
        self.body_deadline = 0.0
        self.in_body = False  # between a head's end and its message's end
        self.write_timer: asyncio.TimerHandle | None = None
        self.write_left = 0  # bytes not taken by the client at the last check
        self.write_deadline = 0.0

    # the clock of a head: from the connection's start or its last response, to the head's end
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.per_address:
            self.address = address_key(self.client[0] if self.client else None, self.trusted)
        if self.address is not None:  # counted till connection_lost, refused or not
            counts = _ADDRESS_COUNTS.setdefault(self.server_state, {})
            counts[self.address] = counts.get(self.address, 0) + 1
            if counts[self.address] > self.per_address:
                self._refuse_address()
                return
        if len(self.connections) > self.max_connections:
            self._refuse_connection()
            return
        self._start_head_clock()

    def _refuse_address(self) -> None:
        """Answer a connection past ``RAGSTORE_MAX_CONNECTIONS_PER_ADDRESS`` like one past
        the cap (see the module doc), naming the limit it is over."""
        cls = GuardedHttpToolsProtocol
        cls.refused_per_address += 1
        record_connection_refused("address_cap")
        now = time.monotonic()
        if now - cls.per_address_logged >= REFUSAL_LOG_EVERY_S:
            log.warning(
                "refused %d connection(s) from an address holding the most "
                "RAGSTORE_MAX_CONNECTIONS_PER_ADDRESS allows (%d), the last from %s",
                cls.refused_per_address,
                self.per_address,
                self.address,
            )
            cls.refused_per_address = 0
            cls.per_address_logged = now
        self._answer_and_close(
            b"503 Service Unavailable",
            NotReadyError(
                f"your address holds as many connections as one address may "
                f"({self.per_address}: RAGSTORE_MAX_CONNECTIONS_PER_ADDRESS; an IPv6 "
                "client's /64 counts as one address); close idle connections, reuse them "
                "(keep-alive) and retry shortly, or reach the server through a proxy listed "
                "in RAGSTORE_TRUSTED_PROXIES: this request was not read"
            ),
            extra=b"retry-after: 1\r\n",
        )

    def _refuse_connection(self) -> None:
        """Answer a connection past ``RAGSTORE_MAX_CONNECTIONS`` 503 ``not_ready`` with
        Retry-After, before it sent anything, and close it (see the module doc)."""
        cls = GuardedHttpToolsProtocol
        cls.refused += 1
        record_connection_refused("server_cap")
        now = time.monotonic()
        if now - cls.refusal_logged >= REFUSAL_LOG_EVERY_S:  # a flood logs a line, not one each
            log.warning(
                "refused %d connection(s): %d open, the most RAGSTORE_MAX_CONNECTIONS allows "
                "(%d); retry later or raise it (and ulimit -n)",
                cls.refused,
                len(self.connections) - 1,
                self.max_connections,
            )
            cls.refused = 0
            cls.refusal_logged = now
        self._answer_and_close(
            b"503 Service Unavailable",
            NotReadyError(
                f"the server holds as many connections as it may ({self.max_connections}: "
                "RAGSTORE_MAX_CONNECTIONS, at most half its open-file limit); retry "
                "shortly, reuse connections (keep-alive), or raise the limit (and ulimit "
                "-n): this request was not read"
            ),
            extra=b"retry-after: 1\r\n",
        )

    def connection_lost(self, exc: Exception | None) -> None:
        if self.address is not None:  # its place under the per-address cap is free again
            counts = _ADDRESS_COUNTS.get(self.server_state, {})
            left = counts.get(self.address, 0) - 1
            if left > 0:
                counts[self.address] = left
            else:
                counts.pop(self.address, None)
            self.address = None
        self._stop_head_clock()
        self._stop_body_clock()
        if self.write_timer is not None:
            self.write_timer.cancel()
            self.write_timer = None
        super().connection_lost(exc)

    # the clock of an answer: bytes not yet taken by the client (in the write buffer or the
    # kernel's send queue) get the head's time plus a second per BODY_MIN_BYTES_PER_S taken,
    # or the connection is dropped (a close would wait for them for good)
    def pause_writing(self) -> None:
        super().pause_writing()
        self._watch_writes()

    def _unsent(self) -> int:
        """Bytes of answers the client has not taken: the transport's buffer, plus the
        kernel's send queue where it says (Linux). The buffer alone moves in lumps of a
        third of the kernel's (megabytes), however steadily the client reads."""
        left = self.transport.get_write_buffer_size()
        sock = self.transport.get_extra_info("socket")
        if _OUTQ is not None and sock is not None:
            try:
                out = fcntl.ioctl(sock.fileno(), _OUTQ, b"\0\0\0\0")
                left += int(struct.unpack("i", out)[0])
            except (OSError, ValueError):
                pass
        return left

    def _watch_writes(self) -> None:
        if self.write_timer is not None or not self.transport.get_write_buffer_size():
            return
        self.write_left = self._unsent()
        self.write_deadline = self.loop.time() + self.head_timeout
        self.write_timer = self.loop.call_at(self.write_deadline, self._write_check)

    def _write_check(self) -> None:
        self.write_timer = None
        if not self.transport.get_write_buffer_size():
            return  # all handed to the kernel: the head clock or keep-alive takes over
        now = self.loop.time()
        left = self._unsent()
        if left > self.write_left:  # more written since (a pipelined answer): time again
            self.write_deadline = max(self.write_deadline, now + self.head_timeout)
        else:
            self.write_deadline += (self.write_left - left) / BODY_MIN_BYTES_PER_S
        self.write_left = left
        if now < self.write_deadline:
            self.write_timer = self.loop.call_at(self.write_deadline, self._write_check)
            return
        _SLOW_READERS.happened()
        self.transport.abort()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch_writes()  # an answer left in the buffer: the client must take it
        if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
            self._start_head_clock()  # waiting for the next request's head

    def _start_head_clock(self) -> None:
        self._stop_head_clock()
        self.head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _stop_head_clock(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _head_timed_out(self) -> None:
        self.head_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    # the clock of a body: the head's time again, plus a second per BODY_MIN_BYTES_PER_S
    # delivered; armed once a body is on its way (data_received), stopped at its end
    def _stop_body_clock(self) -> None:
        if self.body_timer is not None:
            self.body_timer.cancel()
            self.body_timer = None

    def _body_check(self) -> None:
        self.body_timer = None
        if self.transport.is_closing():
            return
        now = self.loop.time()
        if self.flow.read_paused:  # the app is not reading: the client cannot send
            self.body_deadline = max(self.body_deadline, now + self.head_timeout)
        if now < self.body_deadline:
            self.body_timer = self.loop.call_at(self.body_deadline, self._body_check)
            return
        _SLOW_BODIES.happened()
        self.transport.close()

    # the size of a head: bytes that arrive without the parser finishing anything
    def data_received(self, data: bytes) -> None:
        self.progressed = False
        super().data_received(data)
        if self.transport.is_closing():
            return
        if self.in_body and self.body_timer is None:  # a body is on its way: time it
            self.body_timer = self.loop.call_at(self.body_deadline, self._body_check)
        if self.progressed:
            self.unparsed = 0
            return
        self.unparsed += len(data)
        if self.unparsed > self.max_head:
            self._refuse_head()

    def on_headers_complete(self) -> None:
        self.progressed = True
        self._stop_head_clock()
        self.in_body = True
        self.body_deadline = self.loop.time() + self.head_timeout
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self.progressed = True
        self.body_deadline += len(body) / BODY_MIN_BYTES_PER_S
        super().on_body(body)

    def on_message_complete(self) -> None:
        self.progressed = True
        self.in_body = False
        self._stop_body_clock()
        super().on_message_complete()

    def _refuse_head(self) -> None:
        """Answer 431 (unless a response is under way: then only disconnect) and close."""
        self._stop_head_clock()
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        log.warning(
            "refused a request head of more than %d bytes from %s (RAGSTORE_MAX_HEADER_BYTES)",
            self.max_head,
            client,
        )
        # the app's middleware, which counts every other problem, never sees this request
        record_error(HeadersTooLargeError.code)
        self._answer_and_close(
            b"431 Request Header Fields Too Large",
            HeadersTooLargeError(
                f"the request head (request line and headers) is over {self.max_head} bytes "
                "(RAGSTORE_MAX_HEADER_BYTES); send fewer or shorter headers"
            ),
        )

    def send_400_response(self, msg: str) -> None:
        """A request the parser could not read, answered as problem+json like every other
        error (uvicorn's own answer was a ``text/plain`` line no client reads as one)."""
        self._stop_head_clock()
        record_error(MalformedRequestError.code)  # as for a 431: no middleware counts it
        self._answer_and_close(
            b"400 Bad Request",
            MalformedRequestError(
                "the request is not readable HTTP/1.1 (a request line or header with "
                "bytes not allowed there, such as NUL or control bytes or a path outside "
                "ASCII, or contradictory framing such as two Content-Lengths); "
                "percent-encode the path and query and send printable header values"
            ),
        )

    def _answer_and_close(self, status: bytes, exc: RagstoreError, extra: bytes = b"") -> None:
        """Write ``exc``'s problem (unless a response is under way: then only disconnect)
        and close the connection. A request whose app has not answered yet (its body was
        the unreadable part) is cut off first, so no answer of its own follows ours."""
        from ragstore.console.security import BASE_HEADERS
        from ragstore.http.problems import PROBLEM_JSON, problem_body
        from ragstore.wire import IDEMPOTENCY_SUPPORT_HEADER

        cycle = self.cycle
        if cycle is None or cycle.response_complete or not cycle.response_started:
            if cycle is not None and not cycle.response_complete:
                cycle.disconnected = True  # the app's sends and reads end here
            rid = uuid.uuid4().hex
            body = json.dumps(problem_body(exc, request_id=rid, instance="")).encode()
            self.transport.write(
                b"HTTP/1.1 "
                + status
                + b"\r\n"
                + b"content-type: "
                + PROBLEM_JSON.encode()
                + b"\r\n"
                + b"content-length: "
                + str(len(body)).encode()
                + b"\r\n"
                + b"x-request-id: "
                + rid.encode()
                + b"\r\n"
                # the headers the app's middleware puts on every other answer: these
                # are written here, where no middleware runs, and went out without them
                + b"".join(f"{k.lower()}: {v}\r\n".encode() for k, v in BASE_HEADERS.items())
                # this server honours Idempotency-Key (RequestIdMiddleware): an answer
                # without it has a client forget so (client.py _KeyedWrites)
                + f"{IDEMPOTENCY_SUPPORT_HEADER.lower()}: 1\r\n".encode()
                + extra
                + b"connection: close\r\n\r\n"
                + body
            )
        self.transport.close()
