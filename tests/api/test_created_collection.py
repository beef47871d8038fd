"""An HTTP write that creates its collection and then stores nothing (an empty upload, a
text that fails to parse) does not leave the collection behind: creating it again with
another model succeeds. A background upload's collection stays with its job. Real server
on loopback, real database and model."""

from __future__ import annotations

import pytest

from ragstore.client import Client
from ragstore.errors import RagstoreError

OTHER_MODEL = "all-MiniLM-L6-v2-256d"


def _names(client: Client) -> list[str]:
    return [c["name"] for c in client.list_collections()]


def test_a_sync_upload_that_stores_nothing_leaves_no_collection(client: Client) -> None:
    with pytest.raises(RagstoreError):
        client.upload("fresh-upload", [("empty.md", b"  \n")])
    assert "fresh-upload" not in _names(client)
    made = client.create_collection("fresh-upload", model=OTHER_MODEL)
    assert OTHER_MODEL in made["model"]


def test_a_document_that_fails_to_parse_leaves_no_collection(client: Client) -> None:
    with pytest.raises(RagstoreError):
        client.add_document("fresh-text", "report.pdf", "this is not a PDF")
    assert "fresh-text" not in _names(client)
    made = client.create_collection("fresh-text", model=OTHER_MODEL)
    assert OTHER_MODEL in made["model"]


def test_a_background_upload_keeps_the_collection_it_was_queued_for(client: Client) -> None:
    """Documented: the 202 names the collection and its job checks it writes into the
    collection it was queued for, so the collection is made when the job is accepted
    and stays whatever the job's fate."""
    job = client.upload("fresh-job", [("notes.md", b"Goldfish live in water.")], background=True)
    assert job["collection"] == "fresh-job"
    assert "fresh-job" in _names(client)
