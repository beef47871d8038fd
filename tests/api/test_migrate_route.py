"""``POST /v1/collections/{name}/model/migrate`` answers what the CLI's report says.

The answer left out ``remaining`` (and how many vectors ingest wrote meanwhile): a
``switch: false`` call said what the new space still lacked only in its notes' text."""

from __future__ import annotations

import httpx

from ragstore import Client
from ragstore.embedding.registry import TRUNCATED_MODEL, resolve_spec


def test_a_migrate_without_switch_answers_remaining_and_ingested(open_url: str) -> None:
    spec = httpx.get(f"{open_url}/openapi.json").json()
    fields = spec["components"]["schemas"]["MigrationPublic"]["properties"]
    assert {"remaining", "ingested"} <= set(fields)
    assert set(spec["components"]["schemas"]["MigrationPublic"]["required"]) >= {
        "remaining",
        "ingested",
    }
    with Client(open_url) as c:
        c.create_collection("mig")
        c.add_document("mig", "a.md", "# Roses\n\nRoses want sun and little water.\n")
        c.add_document("mig", "b.md", "# Espresso\n\nGrind fine, brew for 25 seconds.\n")
        answer = c.migrate_model("mig", TRUNCATED_MODEL, switch=False)
        assert (answer["switched"], answer["remaining"], answer["ingested"]) == (False, 0, 0)
        assert answer["embedded"] == answer["total"] == 2
        assert "backfill complete" in answer["notes"][0]
        status = c.model_status("mig")
    assert status["active_model"] != resolve_spec(TRUNCATED_MODEL).key
