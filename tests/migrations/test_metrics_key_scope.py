"""Revision 0034: API keys of scope ``metrics``. Down to 0033 a live one stops the
downgrade with its id and what to do (revoke it); a revoked one becomes a revoked ``read``
key, which still authenticates nobody; back up, metrics keys can be made again."""

from __future__ import annotations

import psycopg
import pytest

from ragstore.auth import KeyStore
from ragstore.config import Settings
from ragstore.db import migrations
from ragstore.db.database import Database
from ragstore.errors import AuthenticationError, DatabaseError


def test_a_live_metrics_key_stops_the_downgrade_and_a_revoked_one_stays_revoked(
    upgraded: tuple[Database, Settings],
) -> None:
    db, _ = upgraded
    keys = KeyStore(db)
    live = keys.create("metrics", name="prometheus")
    reader = keys.create("read")
    with pytest.raises(DatabaseError, match=rf"in use \({live.key.key_id}\).*revoke them"):
        migrations.downgrade(db, "0033")
    with db.connect() as conn:
        assert migrations.current_revision(conn) == migrations.head_revision()

    keys.revoke(live.key.key_id)
    migrations.downgrade(db, "0033")
    old = KeyStore(db)
    by_id = {k.key_id: k for k in old.list()}
    assert by_id[live.key.key_id].scope == "read"
    assert by_id[live.key.key_id].revoked_at is not None
    with pytest.raises(AuthenticationError):
        old.authenticate(live.secret)
    assert old.authenticate(reader.secret).scope == "read"
    with db.connect() as conn, pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(
            "INSERT INTO api_keys (key_id, salt, secret_hash, scope)"
            " VALUES ('x', '', '', 'metrics')"
        )

    migrations.upgrade(db)
    assert KeyStore(db).create("metrics").key.scope == "metrics"
