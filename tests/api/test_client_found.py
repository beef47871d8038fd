"""``Client.find_document`` checks the page it is answered (``client._found``)."""

from __future__ import annotations

import pytest

from ragstore.client import _found
from ragstore.errors import DocumentNotFoundError

DOC = {"id": 7, "source": "/data/uploads/c/notes/café.md", "name": "notes/café.md"}


def test_the_document_asked_for_is_found_by_name_or_source() -> None:
    page = {"data": [DOC]}
    assert _found(page, "c", "notes/café.md")["id"] == 7
    assert _found(page, "c", "notes/cafe\u0301.md")["id"] == 7  # typed decomposed (NFD)
    assert _found(page, "c", "notes//café.md")["id"] == 7
    assert _found(page, "c", DOC["source"])["id"] == 7


def test_a_page_of_another_document_is_not_taken_for_it() -> None:
    # a server that ignored the filter answers the collection's first document: a delete
    # by name would have deleted that one
    with pytest.raises(DocumentNotFoundError, match=r"notes/tea\.md"):
        _found({"data": [DOC]}, "c", "notes/tea.md")
    with pytest.raises(DocumentNotFoundError):
        _found({"data": []}, "c", "notes/café.md")
