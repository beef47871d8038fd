"""Request and response bodies, one family per resource (``XCreate``, ``XPublic``, ``XsPublic``).

The HTTP API reads and answers with them, and the in-process ``Store`` dumps the same
models, so both answer alike; hence here, below both, not in ``ragstore.api``. Field
examples feed the OpenAPI document at ``/openapi.json``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from ragstore.models import COLLECTION_NAME
from ragstore.validation import MAX_QUERY_CHARS, problem_in, surrogate_problem

NAME_PATTERN = f"^{COLLECTION_NAME}$"


class Strict(BaseModel):
    """A request body: unknown fields refused, no type coercion (``{"k": true}`` is not
    k=1), and nothing PostgreSQL would refuse (NUL bytes, integers beyond 64 bits)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _unicode(cls, data: Any) -> Any:
        """A lone surrogate in a field with a length or a pattern (a name, a text, a query)
        failed that field's own check first, as pydantic's vague "unable to parse raw data
        as a unicode string"; looked for before the fields are, it gets the message every
        other value gets from ``_storable``, naming the field."""
        if isinstance(data, dict):
            for key, value in data.items():
                if isinstance(value, str) and (found := surrogate_problem(value, f" at {key!r}")):
                    raise ValueError(f"the request holds {found}")
        return data

    @model_validator(mode="after")
    def _storable(self) -> Strict:
        found = problem_in(dict(self.__dict__))
        if found:
            raise ValueError(f"the request holds {found}")
        return self


def _filter_object(value: Any) -> Any:
    """A ``where`` that is no JSON object is the Store's InvalidFilterError (400
    ``invalid_filter``), not the schema's 422: the Client so raises for it the class the
    Store raises. Raised as it is, not as a ValueError: pydantic turns only those into a
    validation error and lets any other exception through."""
    if value is None or isinstance(value, dict):
        return value
    from ragstore.search.filters import not_an_object

    raise not_an_object(value, "where")


# a where filter: an object, or the Store's error for anything else
WhereFilter = Annotated[dict[str, Any] | None, BeforeValidator(_filter_object)]


# --- collections -------------------------------------------------------------------------


class CollectionCreate(Strict):
    name: str = Field(pattern=NAME_PATTERN, examples=["handbook"])
    model: str | None = Field(
        None,
        max_length=200,
        examples=["all-MiniLM-L6-v2"],
        description="Embedding model; the server's default when omitted.",
    )
    settings: dict[str, Any] = Field(default_factory=dict, examples=[{"ts_config": "english"}])
    dimension: int | None = Field(
        None,
        ge=1,
        le=16_000,
        description="With a model ragstore cannot run: the dimension "
        "of its vectors; the collection is then added to and searched by vector only.",
    )
    distance: Literal["cosine", "l2", "ip"] | None = Field(
        None, description="Distance of such vectors (cosine when omitted)."
    )


class CollectionPublic(BaseModel):
    name: str = Field(examples=["handbook"])
    model: str = Field(examples=["all-MiniLM-L6-v2@gt-0.1.0"])
    dimension: int = Field(examples=[384])
    distance: str = Field(examples=["cosine"])
    settings: dict[str, Any]
    documents: int
    chunks: int
    created_at: datetime


class CollectionsPublic(BaseModel):
    data: list[CollectionPublic]
    count: int
    next_cursor: str | None = Field(None, description="Pass as ?cursor= for the next page.")


class BuiltinFieldPublic(BaseModel):
    field: str = Field(examples=["created_at"])
    type: str = Field(examples=["timestamp"])
    about: str
    values: list[str] | None = None


class MetadataFieldPublic(BaseModel):
    field: str = Field(
        examples=["author.name"],
        description="The dotted path a filter names; a dot or backslash within a key is "
        "escaped with a backslash (key version.major: version\\.major).",
    )
    types: list[str] = Field(examples=[["string"]], description="JSON types seen at the path.")
    documents: int = Field(description="Sampled documents carrying the path.")
    chunks: int = Field(description="Sampled chunks carrying it in their own metadata.")
    examples: list[Any] = Field(description="Up to 5 distinct scalar values seen.")
    indexed: list[str] = Field(
        description="Kinds of value (number, string) a range finds through an index."
    )
    keys: list[str] = Field(
        examples=[["author", "name"]],
        description="The metadata keys of the path. A key named like a built-in "
        "(source, page, ...) is listed as field document.KEY or chunk.KEY, where it was "
        "seen: a filter on the bare name reads the built-in.",
    )


class UnfilterablePublic(BaseModel):
    count: int = Field(description="Sampled metadata paths no filter can name (left out).")
    examples: list[list[str]] = Field(
        examples=[[["odd", ""]]], description="Up to 5 of them, as their keys."
    )
    reason: str | None = Field(description="Why they cannot be named, and what to do.")


class FieldsPublic(BaseModel):
    collection: str
    sampled: dict[str, int] = Field(examples=[{"documents": 1000, "chunks": 20000}])
    builtins: list[BuiltinFieldPublic]
    metadata: list[MetadataFieldPublic]
    truncated: bool = Field(description="More paths were seen than are listed (200).")
    unfilterable: UnfilterablePublic


class FieldIndexRequest(Strict):
    field: str = Field(
        min_length=1,
        max_length=256,
        examples=["year"],
        description="A metadata path as a filter names it bare, dot-separated for nesting "
        "(a dot within a key escaped: version\\.major).",
    )
    type: Literal["number", "string"] = Field(
        description="The values a range compares: numbers, or strings (ISO dates are strings)."
    )


class IndexedFieldPublic(BaseModel):
    field: str = Field(examples=["year"])
    type: str = Field(examples=["number"])


class FieldIndexPublic(IndexedFieldPublic):
    indexed: bool = Field(description="Whether the field is indexed now.")
    changed: bool = Field(description="False when there was nothing to do.")


class IndexedFieldsPublic(BaseModel):
    data: list[IndexedFieldPublic]
    count: int


# --- documents ---------------------------------------------------------------------------


class DocumentCreate(Strict):
    name: str = Field(
        min_length=1,
        max_length=1000,
        examples=["notes/rollback.md"],
        description="Relative file name; its suffix decides the format.",
    )
    text: str = Field(min_length=1, examples=["# Rollback\n\nRun `ragstore db downgrade`."])
    metadata: dict[str, Any] = Field(default_factory=dict, examples=[{"team": "ops"}])
    background: bool = Field(False, description="Ingest in a job and answer 202 at once.")


class DocumentPublic(BaseModel):
    id: int
    collection: str
    name: str = Field(description="The name it was uploaded under (or its source path).")
    source: str = Field(
        description="Where it came from: an upload's name (as `name`; its metadata `path` "
        "too), the path of a file ingested from the server's disk, or a text's id.",
        examples=["notes/a.md"],
    )
    title: str | None
    format: str = Field(examples=["markdown"])
    content_hash: str
    size_bytes: int
    chunks: int
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    status: Literal["added", "updated", "unchanged"] | None = Field(
        None, description="Set on ingest: what the upload did."
    )


class DocumentsPublic(BaseModel):
    data: list[DocumentPublic]
    count: int
    next_cursor: str | None = Field(None, description="Pass as ?cursor= for the next page.")


# --- texts (documents added by id, as a vector store does) -----------------------------


class TextsCreate(Strict):
    # an empty list is accepted (nothing added, as Store.add_texts and a vector store's
    # add_texts([]) answer it): refused here, the Client failed where the Store did not
    texts: list[str] = Field(max_length=10_000, examples=[["Rollback is safe."]])
    metadatas: list[dict[str, Any]] | None = Field(None, examples=[[{"team": "ops"}]])
    ids: list[str] | None = Field(
        None, examples=[["ops-1"]], description="One id per text; random ones when omitted."
    )
    vectors: list[list[float]] | None = Field(
        None, description="One embedding per text, stored instead of embedding it."
    )


class TextsAdded(BaseModel):
    collection: str
    ids: list[str]
    added: int
    updated: int
    unchanged: int
    embedded: int = Field(description="Chunk texts the model encoded (0 when unchanged).")
    reused: int


class TextIds(Strict):
    # empty: nothing read or deleted, as the Store answers it (see TextsCreate)
    ids: list[str] = Field(max_length=10_000, examples=[["ops-1"]])


class TextPublic(BaseModel):
    id: str
    document_id: int
    text: str
    metadata: dict[str, Any]


class TextsPublic(BaseModel):
    data: list[TextPublic]
    count: int


class TextsDeleted(BaseModel):
    deleted: int


def _texts_where() -> Any:
    return Field(
        None,
        examples=[{"team": "ops", "year": {"$gte": 2020}}],
        description="search's filter: a text is kept when one of its chunks matches, as "
        "search finds it; omitted, every text.",
    )


def _texts_among() -> Any:
    return Field(
        None,
        max_length=10_000,
        examples=[["ops-1"]],
        description="Only among these ids (unknown ones are left out); omitted, every text.",
    )


class TextsQuery(Strict):
    """``Store.text_ids`` over HTTP, a page at a time (ids in id order, keyset on id)."""

    where: WhereFilter = _texts_where()
    ids: list[str] | None = _texts_among()
    limit: int = Field(1000, ge=1, le=10_000, description="Ids per page.")
    cursor: str | None = Field(None, description="next_cursor of the previous page.")


class TextIdsPage(BaseModel):
    data: list[str] = Field(examples=[["ops-1", "ops-2"]])
    count: int
    next_cursor: str | None = Field(
        None, description="Pass as cursor (with the same where and ids) for the next page."
    )


class TextsWhereDelete(Strict):
    """``Store.delete_texts_where`` over HTTP: one transaction; neither ``where`` nor
    ``ids``: every text (the collection stays)."""

    where: WhereFilter = _texts_where()
    ids: list[str] | None = _texts_among()


class TextsWhereDeleted(BaseModel):
    deleted: int
    ids: list[str] = Field(description="The ids deleted, in id order.")


# --- search ------------------------------------------------------------------------------


class SearchRequest(Strict):
    # no min_length: "" with a vector searches by the vector, as Store.search does (the
    # schema answered 422 where the in-process call searched); "" alone is refused by the
    # search itself ("the query is empty"), as in process
    query: str | None = Field(
        None,
        max_length=MAX_QUERY_CHARS,
        examples=["how do I roll back?"],
        description="The words to search for; or give `vector` (the query may then be "
        "empty or left out).",
    )
    vector: list[float] | None = Field(
        None,
        min_length=1,
        max_length=16_000,
        examples=[[0.12, -0.03, 0.4]],
        description="Search by this embedding instead of embedding `query` (the "
        "collection's dimension); the way to search imported vectors.",
    )
    k: int = Field(10, ge=1, le=1000)
    mode: Literal["vector", "fulltext", "hybrid"] | None = Field(
        None, description="Search mode; the server's default when omitted."
    )
    where: WhereFilter = Field(
        None,
        examples=[{"team": "ops", "year": {"$gte": 2020}}],
        description="Filter on chunk/document fields: built-ins (source, title, chunk_type, "
        "created_at, page) and metadata paths (`author.name`); GET .../fields lists them.",
    )
    context: Annotated[int, Field(ge=0, le=50)] | Literal["section"] | None = Field(
        None,
        examples=[2, "section"],
        description="Neighbouring chunks around each hit (0-50), or 'section' for the "
        "whole enclosing section (hits sharing one are merged). A search whose answer "
        "could carry more than the server's RAGSTORE_MAX_ANSWER_CHUNKS chunks (k x (1 + "
        "2 x N), k x 200 with 'section'; 20,000 by default) is refused with "
        "answer_too_large.",
    )
    explain: bool = False
    ef_search: int | None = Field(None, ge=1, le=1000)
    rrf_k: float | None = Field(None, ge=0, le=10_000, description="RRF constant (hybrid).")
    vector_weight: float | None = Field(
        None, ge=0, le=100, description="Weight of the vector list (hybrid)."
    )
    fulltext_weight: float | None = Field(
        None, ge=0, le=100, description="Weight of the full-text list (hybrid)."
    )
    sections: bool = Field(
        True,
        description="Rank sections: a section's matching chunks add up and each section "
        "is returned once, as its best chunk. false ranks chunks alone.",
    )
    mmr: bool = Field(
        False,
        description="Maximal marginal relevance: pick the `k` hits among the ranking's best "
        "`fetch_k` for relevance (the mode's ranking) and difference from each other (cosine "
        "similarity of their embeddings), in the order picked; `score` stays the ranking's.",
    )
    fetch_k: int | None = Field(
        None,
        ge=1,
        le=1000,
        description="With `mmr`: how many of the ranking's best are candidates (default 20, "
        "at least `k`).",
    )
    lambda_mult: float | None = Field(
        None,
        ge=0,
        le=1,
        description="With `mmr`: 1 ranks by relevance alone (the plain ranking), 0 by "
        "diversity alone (default 0.5).",
    )

    @model_validator(mode="after")
    def _query_or_vector(self) -> SearchRequest:
        if self.query is None and self.vector is None:
            raise ValueError(
                "the search has neither `query` nor `vector`: give `query` (text) or "
                "`vector` (an embedding), or both"
            )
        return self


class HitPublic(BaseModel):
    chunk_id: int
    document_id: int
    source: str = Field(
        description="The document's source, as the documents list answers it: an upload's "
        "name (as `name`; its metadata `path` too), the path of a file ingested from the "
        "server's disk, or a text's id.",
        examples=["notes/a.md"],
    )
    name: str | None = Field(
        None,
        description="The name the document was uploaded under, as the documents list "
        "shows it (`source` is the same); null for a file ingested from disk or a text, "
        "whose `source` is its own.",
        examples=["notes/a.md"],
    )
    title: str | None
    text: str
    chunk_type: str
    section_path: list[str]
    ordinal: int
    page: int | None
    score: float
    metadata: dict[str, Any]
    explain: dict[str, Any] | None = None
    section_score: float | None = Field(
        None,
        description="What the list is ordered by: the evidence of the hit's whole section "
        "(its best matching chunks, decayed), since each section is returned once, as its "
        "best chunk. `score` stays the chunk's own (similarity, BM25 or RRF score).",
    )
    section_hits: list[int] = Field(
        default_factory=list,
        description="Chunk ids of the other chunks of the same section that matched, best "
        'first (fetch them with `context: "section"`).',
    )
    section_id: int | None = Field(
        None,
        description="Chunk id of the heading the hit sits under (the hit's own id for a "
        "heading); null outside any section.",
    )
    context: list[dict[str, Any]] | None = Field(
        None, description="With `context`: the chunks around the hit, in document order."
    )
    context_mode: str | None = None
    merged_hits: list[int] | None = None


class SearchResponse(BaseModel):
    collection: str
    query: str | None
    data: list[HitPublic]
    count: int
    took_ms: float
    plan: dict[str, Any] | None = Field(
        None, description="With `explain`: the candidate lists, their depth and the fusion."
    )


# --- models ------------------------------------------------------------------------------


class ModelPublic(BaseModel):
    provider: str
    name: str
    revision: str
    dimension: int
    distance: str
    normalize: bool
    max_tokens: int
    checksum: str
    collections: list[str] = Field(
        default_factory=list, description="Collections whose active model this is."
    )


class ModelsPublic(BaseModel):
    data: list[ModelPublic]
    count: int


class SpacePublic(BaseModel):
    id: int
    model: str
    status: str
    table: str
    embedded: int
    created_at: datetime
    activated_at: datetime | None


class ModelStatusPublic(BaseModel):
    collection: str
    active_model: str
    spaces: list[SpacePublic]


class MigrateRequest(Strict):
    to: str = Field(
        min_length=1,
        max_length=300,
        examples=["all-MiniLM-L6-v2@gt-0.1.0"],
        description="Target model: NAME or NAME@REVISION (pinned first).",
    )
    batch_size: int = Field(256, ge=1, le=100_000)
    switch: bool = Field(True, description="Switch to the new model once validated.")
    sample_queries: int = Field(8, ge=0, le=1000)


class MigrationPublic(BaseModel):
    collection: str
    source: str
    target: str
    total: int
    resumed_from: int
    embedded: int
    seconds: float
    sample_queries: int
    sample_self_recall: float
    switched: bool
    remaining: int = Field(
        description="With switch false: chunks (documents, for a model that cuts them "
        "again) the new space still lacks, stored while it was filled; 0 when complete."
    )
    ingested: int = Field(
        description="Vectors ingest wrote to the new space while the migration ran."
    )
    notes: list[str]


class RollbackPublic(BaseModel):
    collection: str
    previous: str = Field(description="The model that was active.")
    active: str = Field(description="The model now active again.")


# --- jobs --------------------------------------------------------------------------------


class JobError(BaseModel):
    document: str | None
    code: str | None
    detail: str | None


class JobPublic(BaseModel):
    """A background ingest job. A job may run more than once (its worker died, a schema
    change or a busy database stopped a run): each run starts its progress at 0 again and
    meets the documents an earlier run stored; the finished job's figures are the job's
    as a whole, whatever run stored each document, so they add up."""

    id: int
    collection: str
    status: Literal["queued", "running", "succeeded", "failed"]
    attempts: int = Field(
        description="Runs of the job that count against RAGSTORE_WORKER_MAX_ATTEMPTS "
        "(a run stopped by a schema change gives its attempt back)."
    )
    total_documents: int = Field(description="Documents the job was sent.")
    documents_done: int = Field(
        description="Documents the current run has dealt with (any outcome); once the job "
        "has succeeded, the sum of summary's document counts."
    )
    chunks_done: int = Field(
        description="Chunks of the documents the job stored: those summary counts as added "
        "or updated, including the ones an earlier run of the job stored. Unchanged, failed "
        "and superseded documents add none."
    )
    errors: list[JobError]
    summary: dict[str, Any] = Field(
        description="Set when the job finishes (empty or partial where the job failed as a "
        "whole): documents by outcome (added, updated, "
        "unchanged, superseded, failed, not_attempted), for the job as a whole (a document "
        "an earlier run stored counts as added or updated, not unchanged); embedded and "
        "reused are the model's work of the run that finished the job (chunk texts sent to "
        "the model, chunks whose vector was already stored): an earlier run's are not in them."
    )
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class JobsPublic(BaseModel):
    data: list[JobPublic]
    count: int
    next_cursor: str | None = None


# --- health ------------------------------------------------------------------------------


class Limits(BaseModel):
    """What one request may hold, said before a request is refused 413 for it (the Client
    sizes an upload's requests by it; a 413 says the limit too,
    ``RAGStore-Max-Upload-Bytes``)."""

    max_upload_bytes: int = Field(description="RAGSTORE_MAX_UPLOAD_BYTES: one upload's body.")
    max_upload_files: int = Field(description="Files in one upload (the multipart parser's).")
    max_request_bytes: int = Field(description="RAGSTORE_MAX_REQUEST_BYTES: a JSON body.")


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    limits: Limits | None = None


class ReplicaPublic(BaseModel):
    """A read replica as the router sees it (``RAGSTORE_READ_DATABASE_URLS``)."""

    replica: str = Field(description="The replica's URL without its password.")
    up: bool = Field(description="Answering and within RAGSTORE_MAX_REPLICA_LAG_S.")
    lag_s: float | None = Field(description="Seconds behind the primary (None: unreachable).")
    replay_lsn: str | None = Field(description="WAL position replayed so far.")
    error: str | None = Field(description="Why reads skip it, when they do.")


class Readiness(BaseModel):
    status: Literal["ready"] = "ready"
    checks: dict[str, str]
    collections: dict[str, str] = Field(
        default_factory=dict,
        description="Per collection: 'ok', or why it cannot embed "
        "queries (it is not ready; the server still is). With API keys on, only the "
        "collections the presented key may read (none without a key).",
    )
    replicas: list[ReplicaPublic] | None = Field(
        None,
        description="Read replicas and whether reads go to them (none configured: null; "
        "with API keys on, null unless the key is not limited to one collection).",
    )


# --- inspection (the console's read-only views) ------------------------------------------


class MePublic(BaseModel):
    auth: bool = Field(description="False when the server runs with authentication off.")
    key_id: str | None = Field(None, examples=["3f2a9c1b0d4e"])
    name: str | None = None
    scope: Literal["metrics", "read", "write", "admin"] = Field(
        description="The caller's scope (admin for everyone when auth is off)."
    )
    collection: str | None = Field(
        None, description="The one collection the key may use; null for every collection."
    )


class TableSize(BaseModel):
    table: str
    table_bytes: int
    index_bytes: int


class SpaceStats(BaseModel):
    id: int
    model: str = Field(examples=["all-MiniLM-L6-v2@gt-0.1.0"])
    model_name: str
    status: str = Field(examples=["active", "building", "retired"])
    active: bool
    table: str
    embedded: int = Field(description="Chunks with a vector in this space.")
    progress: float = Field(description="embedded / vectors in the active space, 0..1.")
    table_bytes: int
    index_bytes: int
    created_at: datetime
    activated_at: datetime | None


class CollectionStatsPublic(BaseModel):
    collection: str
    model: str
    dimension: int
    distance: str
    documents: int
    chunks: int
    created_at: datetime
    last_ingest: datetime | None = Field(description="When a document last changed.")
    spaces: list[SpaceStats]
    shared_tables: list[TableSize] = Field(
        description="documents and chunks are shared by every collection: whole-table "
        "sizes, shown to a key not limited to one collection (empty for one that is)."
    )


class ChunkPublic(BaseModel):
    id: int
    ordinal: int
    chunk_type: str
    section_path: list[str]
    page: int | None
    token_count: int
    char_start: int
    char_end: int
    text: str
    metadata: dict[str, Any]


class ChunksPublic(BaseModel):
    collection: str
    document_id: int
    data: list[ChunkPublic]
    count: int
    next_after: int | None = Field(None, description="Pass as ?after= for the next page.")
