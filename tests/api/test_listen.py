"""``ragstore serve``'s listening sockets: a bind that fails says why and what to do."""

from __future__ import annotations

import socket

import pytest

from ragstore.api.listen import bind_sockets
from ragstore.errors import ConfigError


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
