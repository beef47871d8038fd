"""API keys of scope ``metrics``: a key a scraper can hold that reads ``/metrics`` and
nothing else.

Revision ID: 0034
Revises: 0033
Create Date: 2026-12-05

Under profile prod ``GET /metrics`` needs a key, and the lowest scope there was,
``read``, also reads every document of every collection: the one-host deployment
(deploy/docker-compose.yml) gave its Prometheus no key at all, so every scrape was
refused (401), and the fix it needed would have put a key that reads all documents in the
monitoring system's configuration. ``metrics`` ranks below ``read`` (auth/keys.py): every
route that needs ``read`` or more refuses it with 403.

The downgrade refuses while a live ``metrics`` key exists (revision 0033's code would
refuse it at every request anyway, but not say why); revoked ones become revoked ``read``
keys, which can never authenticate, so that the older constraint holds.
"""

from alembic import op

revision = "0034"
down_revision = "0033"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
    ALTER TABLE api_keys DROP CONSTRAINT api_keys_scope_check,
        ADD CONSTRAINT api_keys_scope_check
        CHECK (scope IN ('metrics', 'read', 'write', 'admin'))
    """)


def downgrade() -> None:
    op.execute("""
    DO $$
    DECLARE live text;
    BEGIN
        SELECT string_agg(key_id, ', ' ORDER BY id) INTO live FROM api_keys
        WHERE scope = 'metrics' AND revoked_at IS NULL;
        IF live IS NOT NULL THEN
            RAISE EXCEPTION 'API keys of scope metrics are in use (%), which revision 0033'
                ' does not know: revoke them first (ragstore keys revoke ID), then downgrade'
                ' again', live;
        END IF;
        UPDATE api_keys SET scope = 'read' WHERE scope = 'metrics';
    END $$;
    ALTER TABLE api_keys DROP CONSTRAINT api_keys_scope_check,
        ADD CONSTRAINT api_keys_scope_check CHECK (scope IN ('read', 'write', 'admin'));
    """)
