"""The standby copies the primary's ``trust`` authentication, so it must not be reachable by
anyone but its own user: no TCP port at all, and a socket closed to other users (checked by
connecting as ``nobody``: root only, as CI runs)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import psycopg
import pytest

from tests.reliability.test_embedded_socket import nobody_can_open
from tests.replica.conftest import Pair


@pytest.mark.skipif(os.geteuid() != 0, reason="acting as another user needs root")
def test_the_standby_listens_on_no_port_and_only_its_user_connects(pair: Pair) -> None:
    node = pair.standby
    with psycopg.connect(node.conninfo, autocommit=True) as conn:
        row = conn.execute(
            "SELECT current_setting('listen_addresses'), pg_is_in_recovery()"
        ).fetchone()
    assert row == ("", True)
    socket = Path(node.socket_dir) / f".s.PGSQL.{node.port}"
    assert stat.S_IMODE(socket.stat().st_mode) & 0o007 == 0, oct(socket.stat().st_mode)
    assert not nobody_can_open(socket)
