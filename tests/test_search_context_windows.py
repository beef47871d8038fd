"""Section context at its limit and for hits with no heading above them: a section without
a later heading gets ``MAX_SECTION_CHUNKS`` chunks (it got one fewer: the range's end was
exclusive), and two heading-less hits near each other no longer bring back the chunks
their windows share twice (search/context.py ``_window``)."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from ragstore.db import documents
from ragstore.models import Chunk, ChunkType
from ragstore.runtime import Runtime
from ragstore.search import context
from ragstore.store import Store
from tests.search_helpers import make_collection

COLL = "ctxwindows"
LIMIT = 6  # MAX_SECTION_CHUNKS in these tests: a heading-less hit's window is ordinal-3..+2


def _filler(source: str, i: int) -> str:
    return f"Filler paragraph {i} of {source} says little about anything in particular."


def _write(
    rt: Runtime,
    coll: Any,
    source: str,
    n: int,
    marked: dict[int, str],
    heading_at: tuple[int, ...] = (),
    page_of: dict[int, int] | None = None,
) -> None:
    """A document of ``n`` chunks written as given: headings (top level) at
    ``heading_at``, each chunk after one under it, ``marked`` ordinals holding a word."""
    texts = [
        f"Heading {i}" if i in heading_at else f"{_filler(source, i)} {marked.get(i, '')}".strip()
        for i in range(n)
    ]
    # headings are stored without a vector
    vectors = rt.embedder_for(coll).embed([t for i, t in enumerate(texts) if i not in heading_at])
    chunks = []
    parent: int | None = None
    for i, text in enumerate(texts):
        heading = i in heading_at
        chunks.append(
            Chunk(
                ordinal=i,
                chunk_type=ChunkType.HEADING if heading else ChunkType.PARAGRAPH,
                text=text,
                section_path=() if heading or parent is None else (f"Heading {parent}",),
                parent_ordinal=None if heading else parent,
                char_start=0,
                char_end=len(text),
                token_count=len(text.split()),
                content_hash=hashlib.sha256(text.encode()).hexdigest(),
                page=(page_of or {}).get(i),
                metadata={},
            )
        )
        if heading:
            parent = i
    record = documents.DocumentRecord(
        source, None, "text", hashlib.sha256(source.encode()).hexdigest(), 1, {}
    )
    with rt.db.connection() as conn:
        documents.write_documents(
            conn, coll, [documents.DocumentWrite(record, chunks, np.asarray(vectors))]
        )


@pytest.fixture(scope="module")
def store(rt: Runtime) -> Iterator[Store]:
    coll = make_collection(rt, COLL)
    # one section from its heading at 0 to the end: no later heading ends it
    _write(rt, coll, "long-section.md", 12, {2: "zeppelin"}, heading_at=(0,))
    # a section a later heading of its level ends
    _write(rt, coll, "two-sections.md", 12, {2: "walrus"}, heading_at=(0, 4))
    # no heading at all: hits at 10, 12 and 15 have overlapping windows
    _write(rt, coll, "plain.txt", 30, {10: "xylophone", 12: "xylophone", 15: "xylophone"})
    # pages: 9 on page 1, 10 on page 2; their windows overlap in ordinals, not in chunks
    pages = {i: 1 if i < 10 else 2 for i in range(20)}
    _write(rt, coll, "paged.pdf", 20, {9: "quokka", 10: "quokka"}, page_of=pages)
    yield Store.from_runtime(rt)


@pytest.fixture()
def limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(context, "MAX_SECTION_CHUNKS", LIMIT)


def _answer(store: Store, word: str, k: int) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = store.search(COLL, word, k=k, mode="fulltext", context="section")[
        "data"
    ]
    return data


def _ordinals(hit: dict[str, Any]) -> list[int]:
    return [c["ordinal"] for c in hit["context"]]


@pytest.mark.usefixtures("limit")
def test_a_section_without_a_later_heading_gets_the_whole_limit(store: Store) -> None:
    (hit,) = _answer(store, "zeppelin", 1)
    assert _ordinals(hit) == list(range(LIMIT))  # the heading and LIMIT - 1 chunks


@pytest.mark.usefixtures("limit")
def test_a_later_heading_still_ends_the_section_before_it(store: Store) -> None:
    (hit,) = _answer(store, "walrus", 1)
    assert _ordinals(hit) == [0, 1, 2, 3]


@pytest.mark.usefixtures("limit")
def test_heading_less_windows_send_each_chunk_once(store: Store) -> None:
    """Three hits with overlapping windows: every chunk of the windows comes back, once,
    each hit marked among them, no entry over the limit."""
    data = _answer(store, "xylophone", 3)
    sent = Counter(o for hit in data for o in _ordinals(hit))
    assert [o for o, n in sent.items() if n > 1] == [], "a chunk came back twice"
    # the three windows' ordinals: 7-12, 9-14, 12-17
    assert sorted(sent) == list(range(7, 18))
    marked = sorted(c["ordinal"] for hit in data for c in hit["context"] if c["is_hit"])
    assert marked == [10, 12, 15]
    assert all(len(hit["context"]) <= LIMIT for hit in data)
    assert sum(1 + len(hit["merged_hits"]) for hit in data) == 3
    for hit in data:  # each entry's own hit and the hits merged into it are in its context
        hits = {hit["chunk_id"], *hit["merged_hits"]}
        assert hits <= {c["chunk_id"] for c in hit["context"] if c["is_hit"]}


@pytest.mark.usefixtures("limit")
def test_windows_on_other_pages_are_not_merged(store: Store) -> None:
    """Hits 9 (page 1) and 10 (page 2): the window of 9 spans ordinal 10 but reads page 1
    only, so the hit at 10 keeps its own, of page 2."""
    data = _answer(store, "quokka", 2)
    assert len(data) == 2 and all(h["merged_hits"] == [] for h in data)
    by_hit = {h["ordinal"]: _ordinals(h) for h in data}
    assert by_hit == {9: [6, 7, 8, 9], 10: [10, 11, 12]}
