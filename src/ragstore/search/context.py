"""Context around search hits: neighbouring chunks, or the whole enclosing section.

``--context N`` gives each hit the N chunks before and after it in its document.
``--context section`` gives each hit its section: the parent heading and every chunk up
to the next heading of the same or a higher level (subsections included, at most
``MAX_SECTION_CHUNKS``). Hits that share a section are merged into the best-scored one,
so a section is returned once, and no chunk comes back twice in one answer: a hit inside
a better hit's section (a subsection of it) is merged into that hit, and a hit whose
section encloses a better hit's (its parent section) gets its section without the chunks
already sent, so each hit keeps its rank and the better hit its own entry. A hit outside
any section (no heading above it) gets the chunks around it, kept to its page for PDFs;
one among the chunks a better such hit gets is merged into it, and none of those chunks
comes back twice.

The context is read after the search, in statements of its own: a document replaced or
deleted in between must not lend a hit of its old version the chunks of the new one (or
none). A replace deletes every chunk of the document and writes new ones under new ids,
in one transaction, so a hit's chunk id that is still there proves its document is still
at the version the search read; each context statement checks it in its own snapshot
(:func:`with_context`).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from ragstore.db import chunk_ranges
from ragstore.db.errors import translated
from ragstore.errors import AnswerTooLargeError, InputError
from ragstore.models import Hit
from ragstore.runtime import Runtime
from ragstore.validation import MAX_NEIGHBOURS, ContextMode

MAX_SECTION_CHUNKS = 200
_NO_END = 2**31 - 1


@dataclass
class ContextChunk:
    chunk_id: int
    ordinal: int
    chunk_type: str
    text: str
    section_path: list[str]
    page: int | None
    is_hit: bool = False


@dataclass
class HitWithContext(Hit):
    """A hit with the chunks around it, in document order (the hit itself included)."""

    context: list[ContextChunk] = field(default_factory=list)
    context_mode: str = ""
    merged_hits: list[int] = field(default_factory=list)  # chunk ids of hits merged in

    @property
    def context_text(self) -> str:
        return "\n\n".join(c.text for c in self.context)


def parse_context(value: str, name: str = "context") -> ContextMode:
    """``"section"`` or a number of neighbours 0..50, from the CLI's ``--context`` text
    (stripped, any case); an error names it ``name``, as the CLI spells it. Only for
    typed text: a search's own ``context`` (Store, Client, MCP) is
    :func:`ragstore.validation.check_context`'s, which takes no string but ``"section"``."""
    cleaned = value.strip().lower()
    if cleaned == "section":
        return "section"
    # ASCII digits only: str.isdigit() is true of '²' and '٣' too, and int('²') raised a
    # ValueError (a traceback in the CLI, a 500 through Store) instead of this message
    if cleaned.isascii() and cleaned.isdigit() and int(cleaned) <= MAX_NEIGHBOURS:
        return int(cleaned)
    raise InputError(
        f"{name} {value!r} is invalid: give a number of neighbouring chunks "
        f"(0-{MAX_NEIGHBOURS}) or 'section'"
    )


def answer_chunks(k: int, mode: ContextMode | None) -> int:
    """The most chunks a search of ``k`` hits with context ``mode`` can answer with: each
    hit and its ``N`` neighbours on each side, or its section of at most
    ``MAX_SECTION_CHUNKS`` (a neighbour shared by two hits is sent with each)."""
    if mode is None:
        return k
    if mode == "section":
        return k * MAX_SECTION_CHUNKS
    return k * (1 + 2 * int(mode))


def check_answer_size(k: object, mode: ContextMode | None, limit: int) -> None:
    """Refuse a search whose answer could carry more than ``limit`` chunks
    (``RAGSTORE_MAX_ANSWER_CHUNKS``), before it runs: an answer costs the server about
    4 KB of memory a chunk of 1,000 characters while it is built and written, so one
    ``k=1000, context=50`` (up to 101,000 chunks) held hundreds of megabytes, and a few
    such requests at once from any reader could take a server to its memory limit.

    A ``k`` that is no number of hits (or out of 1..1000) is left to the search's own
    check, which names it. Any integral ``k`` counts (a NumPy integer, as the search's
    own check takes), so the bound is not a check that an ``np.int64`` walks past."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 1 <= int(k) <= 1000:
        return
    most = answer_chunks(int(k), mode)
    if most <= limit:
        return
    if mode is None:
        asked = f"k={k}, no context"
    elif mode == "section":
        asked = f"k={k} hits, context='section': each with up to {MAX_SECTION_CHUNKS} chunks"
    else:
        asked = f"k={k} hits, context={mode}: each with {2 * int(mode)} neighbouring chunks"
    raise AnswerTooLargeError(
        f"the search asks for up to {most:,} chunks ({asked}), more "
        f"than one answer may carry ({limit:,}, RAGSTORE_MAX_ANSWER_CHUNKS): ask for fewer "
        "hits or less context, or raise RAGSTORE_MAX_ANSWER_CHUNKS where the search runs "
        "(the server's setting, for a search through the API)"
    )


def _extend(hit: Hit, **extra: Any) -> HitWithContext:
    return HitWithContext(**{f.name: getattr(hit, f.name) for f in fields(hit)}, **extra)


# (document, first ordinal, last ordinal, depth, page) of a context range
_Range = tuple[int, int, int, int, int | None]


def _ranges(
    rt: Runtime, ranges: list[_Range], hit_ids: list[int]
) -> list[list[ContextChunk] | None]:
    """Chunks of each (document, first ordinal, last ordinal, depth, page) range, or None
    where the range's hit (``hit_ids``, one a range) is no longer in its document: the
    document was replaced or deleted since the search, and the range's ordinals are the
    old version's.

    ``depth`` > 0 also ends the range before the first heading whose section path is
    shorter than ``depth`` (the start of the next section at that level or above).
    """
    if not ranges:
        return []
    out: list[list[ContextChunk] | None] = [[] for _ in ranges]
    with rt.db.connection() as conn, translated("reading context chunks"):
        rows = chunk_ranges.ranges(
            conn,
            doc=[r[0] for r in ranges],
            hit=hit_ids,
            lo=[r[1] for r in ranges],
            hi=[r[2] for r in ranges],
            depth=[r[3] for r in ranges],
            page=[r[4] for r in ranges],
        )
        for row in rows:
            i = int(row[0]) - 1
            chunks = out[i]
            if not row[1]:
                out[i] = None
            elif chunks is not None and row[2] is not None:
                chunks.append(
                    ContextChunk(
                        chunk_id=int(row[2]),
                        ordinal=int(row[3]),
                        chunk_type=row[4],
                        text=row[5],
                        section_path=list(row[6]),
                        page=row[7],
                    )
                )
    return out


def _mark(chunks: list[ContextChunk], hit_ids: set[int]) -> list[ContextChunk]:
    for c in chunks:
        c.is_hit = c.chunk_id in hit_ids
    return chunks


def with_context(
    rt: Runtime,
    hits: list[Hit],
    mode: ContextMode,
    search_again: Callable[[], Sequence[Hit]] | None = None,
) -> list[HitWithContext]:
    """``hits`` with their context attached; in section mode, hits sharing a section (or
    in a subsection of a better hit's) are merged into the first (best) of them, so the
    list may get shorter, and no chunk is in two hits' contexts.

    The context is read after the search, and a document may be replaced or deleted in
    between: its hits would have carried the new version's chunks around an old chunk (the
    old ordinals, in a document of other chunks), or no context at all. Each context
    statement checks, in its own snapshot, that each hit's chunk is still in its document
    (a replace gives every chunk a new id), which costs no extra round trip; reading the
    context in the search's snapshot instead would have meant one transaction on one
    connection for the search's lists, which run at once on two. A hit found gone makes
    the whole search run once more with ``search_again`` (the same search: the answer is
    then of the current version, as a hybrid search's lists run again on mixed writes); a
    hit still gone after that (a document written again and again), or any without
    ``search_again``, is left out rather than returned with a context of another version.
    """
    found, stale = _expand(rt, hits, mode)
    if stale and search_again is not None:
        found, _ = _expand(rt, list(search_again()), mode)
    return found


def _expand(rt: Runtime, hits: list[Hit], mode: ContextMode) -> tuple[list[HitWithContext], bool]:
    """The hits whose document is still at the version searched, with their context, and
    whether any was left out (its chunk gone)."""
    if not hits:
        return [], False
    if mode == "section":
        return _sections(rt, hits)
    n = int(mode)
    found = _ranges(
        rt,
        [(h.document_id, max(0, h.ordinal - n), h.ordinal + n, 0, None) for h in hits],
        [h.chunk_id for h in hits],
    )
    out = [
        _extend(h, context=_mark(chunks, {h.chunk_id}), context_mode=str(n))
        for h, chunks in zip(hits, found, strict=True)
        if chunks is not None
    ]
    return out, len(out) < len(hits)


def _sections(rt: Runtime, hits: list[Hit]) -> tuple[list[HitWithContext], bool]:
    with rt.db.connection() as conn, translated("reading hit sections"):
        found = chunk_ranges.parents(conn, [h.chunk_id for h in hits])
    parents: dict[int, tuple[Any, Any]] = {int(r[0]): (r[1], r[2]) for r in found}
    live = [h for h in hits if h.chunk_id in parents]  # the others' chunks are gone
    keys: list[_Range] = []
    windows: list[_Range] = []
    for h in live:
        start, depth = parents[h.chunk_id]
        if start is not None and depth is not None:
            keys.append(
                (h.document_id, int(start), int(start) + MAX_SECTION_CHUNKS - 1, int(depth), None)
            )
        else:  # no heading above: the chunks around it, on its page for a PDF
            keys.append(_window(h, windows))
    first_of: dict[_Range, int] = {}
    members: dict[int, list[Hit]] = {}
    for i, (h, key) in enumerate(zip(live, keys, strict=True)):
        owner = first_of.setdefault(key, i)
        members.setdefault(owner, []).append(h)
    owners = sorted(members)
    # checked again here: the document may have been replaced since the parents were read
    sections = _ranges(rt, [keys[i] for i in owners], [live[i].chunk_id for i in owners])
    out: list[HitWithContext] = []
    sent: dict[int, HitWithContext] = {}  # chunk id -> the entry whose context holds it
    for i, chunks in zip(owners, sections, strict=True):
        if chunks is None:
            continue
        group = members[i]
        ids = [h.chunk_id for h in group]
        earlier = sent.get(live[i].chunk_id)
        if earlier is not None:  # a subsection of a better hit's section: already sent
            earlier.merged_hits.extend(ids)
            _mark(earlier.context, {earlier.chunk_id, *earlier.merged_hits})
            continue
        entry = _extend(
            live[i],
            # an enclosing section of a better hit's: its chunks are not sent again
            context=_mark([c for c in chunks if c.chunk_id not in sent], set(ids)),
            context_mode="section",
            merged_hits=ids[1:],
        )
        sent.update((c.chunk_id, entry) for c in entry.context)
        out.append(entry)
    return out, len(live) < len(hits) or any(s is None for s in sections)


def _window(hit: Hit, earlier: list[_Range]) -> _Range:
    """The range of a hit with no heading above it: the chunks around it, on its page
    (``MAX_SECTION_CHUNKS`` at most), without those of the ``earlier`` (better) hits'
    windows, to which it is added.

    Two such hits a few chunks apart have windows that overlap, and each came back with
    the chunks they share: the same chunks twice in one answer. So a hit inside an
    earlier window takes that window (and is merged into its hit, as hits sharing a
    section are), and a hit outside every earlier window gets its own cut short where one
    begins. Windows of one page only hold its chunks: only those of the same page count."""
    lo = max(0, hit.ordinal - MAX_SECTION_CHUNKS // 2)
    hi = lo + MAX_SECTION_CHUNKS - 1
    for window in earlier:
        doc, first, last, _, page = window
        if doc != hit.document_id or page != hit.page:
            continue
        if first <= hit.ordinal <= last:
            return window
        if last < hit.ordinal:
            lo = max(lo, last + 1)
        else:
            hi = min(hi, first - 1)
    window = (hit.document_id, lo, hi, 1, hit.page)
    earlier.append(window)
    return window


def render_context(hit: HitWithContext, width: int = 2000) -> str:
    """The context as plain text for a terminal: hits marked with ``>>``."""
    lines = []
    for c in hit.context:
        text = " ".join(c.text.split())
        if len(text) > width:
            text = text[: width - 1] + "…"
        lines.append(f"{'>>' if c.is_hit else '  '} [{c.ordinal}] {text}")
    return "\n".join(lines)
