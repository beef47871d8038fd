"""``ragstore serve``'s listening sockets: a bind that fails says why and what to do."""

from __future__ import annotations

import socket

import pytest

from ragstore.errors import ConfigError
from ragstore.http.listen import bind_sockets


def test_a_port_in_use_says_to_pick_another() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"127.0.0.1:{port}: .*pick another --port"):
            bind_sockets("127.0.0.1", port)
    finally:
        taken.close()


def test_an_address_this_machine_lacks_says_which_to_give() -> None:
    # TEST-NET-2 (RFC 5737): documentation only, on no interface of any machine
    with pytest.raises(ConfigError, match="no interface of this machine has that address"):
        bind_sockets("198.51.100.77", 0)


def test_a_free_port_on_loopback_listens() -> None:
    sockets = bind_sockets("127.0.0.1", 0)
    try:
        assert [s.getsockname()[0] for s in sockets] == ["127.0.0.1"]
    finally:
        for s in sockets:
            s.close()


def test_an_ipv4_mapped_address_says_to_give_the_ipv4_one() -> None:
    # an IPv6 socket bound with IPv6 alone (so that `::` does not take IPv4 too) cannot
    # take ::ffff:a.b.c.d: the kernel says EINVAL, which is no busy port
    with pytest.raises(ConfigError, match=r"give --host 127\.0\.0\.1 itself") as caught:
        bind_sockets("::ffff:127.0.0.1", 0)
    assert "pick another --port" not in str(caught.value)


@pytest.mark.parametrize(("host", "address"), [("[::1]", "::1"), ("[::]", "::")])
def test_an_ipv6_address_in_brackets_listens(host: str, address: str) -> None:
    # as a URL writes it: getaddrinfo read "[::1]" as a name that "does not resolve"
    sockets = bind_sockets(host, 0)
    try:
        assert [s.getsockname()[0] for s in sockets] == [address]
    finally:
        for s in sockets:
            s.close()


def test_a_link_local_address_keeps_its_scope_id() -> None:
    # fe80::1%lo: the scope id was dropped at the bind, which failed EINVAL and was answered
    # "pick another --port"; bound with its scope, the kernel says what is wrong (no
    # interface has fe80::1 on lo), and the advice follows
    with pytest.raises(ConfigError, match="no interface of this machine has that address"):
        bind_sockets("fe80::1%lo", 0)
