"""Domain values shared by every layer: chunk types, blocks, chunks, model specs and hits.

Plain dataclasses, no I/O: parsers produce :class:`Block`, the chunker turns blocks into
:class:`Chunk`, the search layer returns :class:`Hit`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any

from ragstore.urls import shown_url

# What a collection may be called, unanchored: every check of a name (the database's own
# CHECK constraint in migration 0001, the API's path and body fields, the client's URL
# paths, the settings) accepts exactly these, 1-63 characters of which a letter or digit
# first. One pattern, so no layer lets through a name another refuses.
COLLECTION_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}"


class ChunkType(StrEnum):
    HEADING = "heading"
    PARAGRAPH = "paragraph"
    LIST = "list"
    TABLE = "table"
    CODE = "code"
    QUOTE = "quote"
    PAGE_TEXT = "page_text"


@dataclass(frozen=True)
class Block:
    """One structural unit a parser found: a heading, a paragraph, a table ...

    ``char_start``/``char_end`` index the document's extracted text; ``level`` is the
    heading level for headings (1 = top) and 0 otherwise.
    """

    type: ChunkType
    text: str
    char_start: int
    char_end: int
    section_path: tuple[str, ...] = ()
    level: int = 0
    page: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class ParsedDocument:
    """What a parser returns: the blocks in reading order plus what it knew of the document."""

    format: str
    title: str | None
    blocks: list[Block]
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Chunk:
    """A block (or a piece of one) sized for the embedding model, ready to store."""

    ordinal: int
    chunk_type: ChunkType
    text: str
    section_path: tuple[str, ...]
    parent_ordinal: int | None
    char_start: int
    char_end: int
    token_count: int
    content_hash: str
    page: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    context: str = ""  # the section path as the model reads it before the text

    @property
    def embeddable(self) -> bool:
        """Headings are structure (parents, context), not search targets: no vector."""
        return self.chunk_type is not ChunkType.HEADING

    @property
    def embed_text(self) -> str:
        """What the model reads: the section path, then the chunk's own text."""
        return f"{self.context}\n{self.text}" if self.context else self.text


# The provider of a pinned model whose vectors ragstore holds but cannot run (the model an
# import declared, `ragstore import`): its collections answer vector queries only, and
# nothing is embedded with it.
VECTOR_ONLY_PROVIDER = "imported"


@dataclass(frozen=True)
class ModelSpec:
    """A pinned embedding model: everything that decides which vectors it produces."""

    provider: str
    name: str
    revision: str
    dimension: int
    distance: str
    normalize: bool
    max_tokens: int
    checksum: str
    options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def key(self) -> str:
        return f"{self.name}@{self.revision}"

    def __repr__(self) -> str:
        """The dataclass's repr, its ``options`` as :func:`shown_options` shows them.

        The generated repr printed ``options`` whole, and a pin an older version made with
        ``user:password@`` in its endpoint URL holds the password there: any repr or
        ``str`` of the spec (a log field, an f-string, a traceback's ``KeyError``, the
        repr of a collection or a pinned model holding it) printed it."""
        shown = {f.name: getattr(self, f.name) for f in fields(self)}
        shown["options"] = shown_options(self.options)
        return f"{type(self).__qualname__}({', '.join(f'{k}={v!r}' for k, v in shown.items())})"


def shown_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """A pin's options as they may be shown: the password of its ``base_url`` masked.

    A new pin refuses credentials in its endpoint URL (``modelops.specs``), but one an
    older version made still holds them, and httpx still sends them; wherever the options
    are shown (``models show``, a spec's repr) the URL is masked (``ragstore.urls``)."""
    return {
        k: shown_url(v) if k == "base_url" and isinstance(v, str) else v for k, v in options.items()
    }


@dataclass
class Hit:
    """One search result."""

    chunk_id: int
    document_id: int
    source: str
    title: str | None
    text: str
    chunk_type: str
    section_path: list[str]
    ordinal: int
    page: int | None
    score: float
    metadata: dict[str, Any] = field(default_factory=dict)
    explain: dict[str, Any] | None = None
    # section-level aggregation (search/aggregate.py): what the list is ordered by, the
    # other chunks of the same section that matched (best first), and the heading chunk
    # the hit sits under (None outside any section); None / [] when it was not applied
    section_score: float | None = None
    section_hits: list[int] = field(default_factory=list)
    section_id: int | None = None
    # the name an uploaded document was given (``notes/a.md``), as documents list shows it;
    # None for a file ingested from disk, whose ``source`` is its owner's own path. An
    # upload's source is the server's path (``<data dir>/uploads/...``), which the
    # uploader never chose: hits showed only it (search.service.run sets this). ``source``
    # here stays the stored path (eval and sections read it); every answer gives the name
    # as the source (store.hit_public, uploads.names.answered)
    name: str | None = None
