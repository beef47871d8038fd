"""Context around search hits: neighbouring chunks, or the whole enclosing section.

``--context N`` gives each hit the N chunks before and after it in its document.
``--context section`` gives each hit its section: the parent heading and every chunk up
to the next heading of the same or a higher level (subsections included, at most
``MAX_SECTION_CHUNKS``). Hits that share a section are merged into the best-scored one,
so a section is returned once. A hit outside any section (no heading above it) gets the
chunks around it, kept to its page for PDFs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal

from ragstore.db.errors import translated
from ragstore.errors import InputError
from ragstore.models import Hit
from ragstore.runtime import Runtime

ContextMode = int | Literal["section"]
MAX_NEIGHBOURS = 50
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


def parse_context(value: str) -> ContextMode:
    """``"section"`` or a number of neighbours 0..50, from a CLI or API parameter."""
    cleaned = value.strip().lower()
    if cleaned == "section":
        return "section"
    # ASCII digits only: str.isdigit() is true of '²' and '٣' too, and int('²') raised a
    # ValueError (a traceback in the CLI, a 500 through Store) instead of this message
    if cleaned.isascii() and cleaned.isdigit() and int(cleaned) <= MAX_NEIGHBOURS:
        return int(cleaned)
    raise InputError(
        f"--context {value!r} is invalid: give a number of neighbouring chunks "
        f"(0-{MAX_NEIGHBOURS}) or 'section'"
    )


def _extend(hit: Hit, **extra: Any) -> HitWithContext:
    return HitWithContext(**{f.name: getattr(hit, f.name) for f in fields(hit)}, **extra)


_RANGE_SQL = """
SELECT q.i, c.id, c.ordinal, c.chunk_type, c.text, c.section_path, c.page
FROM unnest(%(doc)s::bigint[], %(lo)s::int[], %(hi)s::int[], %(depth)s::int[],
            %(page)s::int[]) WITH ORDINALITY AS q(doc, lo, hi, depth, page, i)
CROSS JOIN LATERAL (
    SELECT coalesce(min(e.ordinal), q.hi) AS stop FROM chunks e
    WHERE e.document_id = q.doc AND e.ordinal > q.lo AND e.ordinal <= q.hi
      AND e.chunk_type = 'heading' AND cardinality(e.section_path) < q.depth
) b
JOIN chunks c ON c.document_id = q.doc AND c.ordinal >= q.lo
     AND (c.ordinal < b.stop OR (q.depth = 0 AND c.ordinal <= q.hi))
     AND (q.page IS NULL OR c.page = q.page)
ORDER BY q.i, c.ordinal
"""

_PARENTS_SQL = """
SELECT h.id, p.ordinal, cardinality(p.section_path) + 1
FROM chunks h LEFT JOIN chunks p ON p.id = h.parent_id WHERE h.id = ANY(%s)
"""


def _ranges(
    rt: Runtime, ranges: list[tuple[int, int, int, int, int | None]]
) -> list[list[ContextChunk]]:
    """Chunks of each (document, first ordinal, last ordinal, depth, page) range.

    ``depth`` > 0 also ends the range before the first heading whose section path is
    shorter than ``depth`` (the start of the next section at that level or above).
    """
    if not ranges:
        return []
    params = {
        "doc": [r[0] for r in ranges],
        "lo": [r[1] for r in ranges],
        "hi": [r[2] for r in ranges],
        "depth": [r[3] for r in ranges],
        "page": [r[4] for r in ranges],
    }
    out: list[list[ContextChunk]] = [[] for _ in ranges]
    with rt.db.connection() as conn, translated("reading context chunks"):
        rows: list[Any] = conn.execute(_RANGE_SQL, params).fetchall()
        for row in rows:
            out[int(row[0]) - 1].append(
                ContextChunk(
                    chunk_id=int(row[1]),
                    ordinal=int(row[2]),
                    chunk_type=row[3],
                    text=row[4],
                    section_path=list(row[5]),
                    page=row[6],
                )
            )
    return out


def _mark(chunks: list[ContextChunk], hit_ids: set[int]) -> list[ContextChunk]:
    for c in chunks:
        c.is_hit = c.chunk_id in hit_ids
    return chunks


def with_context(rt: Runtime, hits: list[Hit], mode: ContextMode) -> list[HitWithContext]:
    """``hits`` with their context attached; in section mode, hits sharing a section are
    merged into the first (best) of them, so the list may get shorter."""
    if not hits:
        return []
    if mode == "section":
        return _sections(rt, hits)
    n = int(mode)
    found = _ranges(
        rt, [(h.document_id, max(0, h.ordinal - n), h.ordinal + n, 0, None) for h in hits]
    )
    return [
        _extend(h, context=_mark(chunks, {h.chunk_id}), context_mode=str(n))
        for h, chunks in zip(hits, found, strict=True)
    ]


def _sections(rt: Runtime, hits: list[Hit]) -> list[HitWithContext]:
    with rt.db.connection() as conn, translated("reading hit sections"):
        found: list[Any] = conn.execute(_PARENTS_SQL, ([h.chunk_id for h in hits],)).fetchall()
    parents: dict[int, tuple[Any, Any]] = {int(r[0]): (r[1], r[2]) for r in found}
    keys: list[tuple[int, int, int, int, int | None]] = []
    for h in hits:
        start, depth = parents.get(h.chunk_id, (None, None))
        if start is not None and depth is not None:
            keys.append(
                (h.document_id, int(start), int(start) + MAX_SECTION_CHUNKS - 1, int(depth), None)
            )
        else:  # no heading above: the chunks around it, on its page for a PDF
            lo = max(0, h.ordinal - MAX_SECTION_CHUNKS // 2)
            keys.append((h.document_id, lo, lo + MAX_SECTION_CHUNKS - 1, 1, h.page))
    first_of: dict[tuple[int, int, int, int, int | None], int] = {}
    members: dict[int, list[Hit]] = {}
    for i, (h, key) in enumerate(zip(hits, keys, strict=True)):
        owner = first_of.setdefault(key, i)
        members.setdefault(owner, []).append(h)
    owners = sorted(members)
    sections = _ranges(rt, [keys[i] for i in owners])
    out = []
    for i, chunks in zip(owners, sections, strict=True):
        group = members[i]
        ids = {h.chunk_id for h in group}
        out.append(
            _extend(
                hits[i],
                context=_mark(chunks, ids),
                context_mode="section",
                merged_hits=[h.chunk_id for h in group[1:]],
            )
        )
    return out


def render_context(hit: HitWithContext, width: int = 2000) -> str:
    """The context as plain text for a terminal: hits marked with ``>>``."""
    lines = []
    for c in hit.context:
        text = " ".join(c.text.split())
        if len(text) > width:
            text = text[: width - 1] + "…"
        lines.append(f"{'>>' if c.is_hit else '  '} [{c.ordinal}] {text}")
    return "\n".join(lines)
