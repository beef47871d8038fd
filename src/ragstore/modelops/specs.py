"""Pinned model specs in ``embedding_models``: list, find, and pin new ones.

Pinning a model records everything that decides its vectors: provider, name, revision,
dimension, distance, normalisation, max tokens, the sha256 of the weights (local models) or
of a probe embedding (remote models), and the probe vector itself. A pin never changes
once written: a different model, or the same one with new weights, is a new revision,
and a collection moves to it with ``ragstore models migrate``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ragstore.db.errors import translated
from ragstore.db.models import spec_from_row, upsert_model
from ragstore.embedding.http import DEFAULT_API_KEY_ENV, HttpEmbedder
from ragstore.embedding.local import SentenceTransformerEmbedder, weights_checksum
from ragstore.embedding.registry import (
    HTTP_PROVIDER,
    LOCAL_PROVIDER,
    builtin_specs,
    resolve_path,
    resolve_spec,
)
from ragstore.embedding.validation import (
    PROBE_TEXT,
    probe_checksum,
    probe_record,
    probe_vector,
)
from ragstore.errors import (
    ConflictError,
    EmbeddingProviderError,
    InputError,
    ModelNotFoundError,
)
from ragstore.models import ModelSpec
from ragstore.runtime import Runtime

DISTANCES = ("cosine", "l2", "ip")


@dataclass(frozen=True)
class PinnedModel:
    id: int
    spec: ModelSpec
    created_at: str
    collections: list[dict[str, str]]  # {"collection": name, "status": space status}

    def as_dict(self) -> dict[str, Any]:
        s = self.spec
        opts = {k: v for k, v in s.options.items() if k != "probe"}
        return {"id": self.id, "key": s.key, "provider": s.provider, "name": s.name,
                "revision": s.revision, "dimension": s.dimension, "distance": s.distance,
                "normalize": s.normalize, "max_tokens": s.max_tokens, "checksum": s.checksum,
                "options": opts, "probe_pinned": bool(s.options.get("probe")),
                "created_at": self.created_at, "collections": self.collections}


_SELECT = ("SELECT m.id, m.provider, m.name, m.revision, m.dimension, m.distance, m.normalize,"
           " m.max_tokens, m.checksum, m.options, m.created_at,"
           " coalesce((SELECT jsonb_agg(jsonb_build_object('collection', c.name, 'status',"
           " s.status) ORDER BY c.name, s.id) FROM embedding_spaces s"
           " JOIN collections c ON c.id = s.collection_id WHERE s.model_id = m.id),"
           " '[]'::jsonb) FROM embedding_models m")


def _pinned(row: Any) -> PinnedModel:
    return PinnedModel(int(row[0]), spec_from_row(row[1:10]),
                       row[10].isoformat(), list(row[11]))


def list_models(rt: Runtime) -> list[PinnedModel]:
    """Every pinned model, with the collections whose spaces use it."""
    with rt.db.connection() as conn, translated("listing embedding models"):
        rows = conn.execute(_SELECT + " ORDER BY m.name, m.id").fetchall()
    return [_pinned(r) for r in rows]


def find_model(rt: Runtime, ref: str, *, pin_builtin: bool = True) -> PinnedModel:
    """The pinned model ``NAME`` or ``NAME@REVISION``; a built-in is pinned on first use."""
    name, _, revision = ref.partition("@")
    with rt.db.connection() as conn, translated(f"looking up model {ref!r}"):
        if revision:
            rows = conn.execute(_SELECT + " WHERE m.name = %s AND m.revision = %s",
                                (name, revision)).fetchall()
        else:
            rows = conn.execute(_SELECT + " WHERE m.name = %s ORDER BY m.id",
                                (name,)).fetchall()
        if len(rows) > 1:
            keys = ", ".join(f"{r[2]}@{r[3]}" for r in rows)
            raise InputError(
                f"model {name!r} is pinned in {len(rows)} revisions ({keys}); "
                "name one as NAME@REVISION"
            )
        if rows:
            return _pinned(rows[0])
        builtin = builtin_specs().get(name)
        if pin_builtin and builtin is not None and revision in ("", builtin.revision):
            upsert_model(conn, resolve_spec(name))
            row = conn.execute(_SELECT + " WHERE m.name = %s AND m.revision = %s",
                               (name, builtin.revision)).fetchone()
            assert row is not None
            return _pinned(row)
        known = [f"{r[0]}@{r[1]}" for r in conn.execute(
            "SELECT name, revision FROM embedding_models ORDER BY name, id")]
    raise ModelNotFoundError(
        f"no pinned model {ref!r}; pinned: {', '.join(known) or 'none'}; built-in: "
        f"{', '.join(sorted(builtin_specs()))}; pin another with `ragstore models add`"
    )


def _insert(rt: Runtime, spec: ModelSpec) -> PinnedModel:
    with rt.db.connection() as conn, translated(f"pinning model {spec.key}"):
        row = conn.execute(_SELECT + " WHERE m.name = %s AND m.revision = %s",
                           (spec.name, spec.revision)).fetchone()
        if row is not None:
            old = _pinned(row)
            if old.spec.checksum != spec.checksum or old.spec.dimension != spec.dimension:
                raise ConflictError(
                    f"model {spec.key} is already pinned with checksum {old.spec.checksum} "
                    f"and {old.spec.dimension} dimensions, and this one has {spec.checksum} "
                    f"and {spec.dimension}; a pin never changes: give the new model another "
                    "--revision"
                )
            return old
        upsert_model(conn, spec)
        row = conn.execute(_SELECT + " WHERE m.name = %s AND m.revision = %s",
                           (spec.name, spec.revision)).fetchone()
        assert row is not None
        return _pinned(row)


def _check_common(name: str, distance: str, max_tokens: int | None) -> None:
    if not name.strip() or "@" in name:
        raise InputError(f"model name {name!r} must be non-empty and contain no '@'")
    if distance not in DISTANCES:
        raise InputError(f"distance {distance!r} is not one of {', '.join(DISTANCES)}")
    if max_tokens is not None and max_tokens < 8:
        raise InputError(f"max tokens must be at least 8, got {max_tokens}")


def add_local_model(rt: Runtime, path: str, *, name: str, revision: str | None = None,
                    distance: str = "cosine", normalize: bool = True,
                    max_tokens: int | None = None, truncate_dim: int | None = None,
                    query_prefix: str = "", passage_prefix: str = "") -> PinnedModel:
    """Pin a sentence-transformers model from a local directory (nothing is downloaded).

    The directory is hashed (the pin), loaded once to read its dimension and maximum
    sequence length, and asked for the probe vector. The revision defaults to the first
    12 hex digits of the weights checksum.
    """
    _check_common(name, distance, max_tokens)
    where = resolve_path(path)
    if not where.is_dir():
        raise ModelNotFoundError(
            f"{where} is not a directory; give the folder of a sentence-transformers model "
            "(with config.json and model.safetensors), e.g. one saved by "
            "SentenceTransformer.save() or cloned from its model page"
        )
    checksum = weights_checksum(where)
    stored_path = path if path.startswith("package:") else str(where.resolve())
    options: dict[str, Any] = {"path": stored_path}
    if truncate_dim:
        options["truncate_dim"] = int(truncate_dim)
    options.update(_prefixes(query_prefix, passage_prefix))
    draft = ModelSpec(LOCAL_PROVIDER, name, revision or checksum.split(":")[-1][:12], 1,
                      distance, normalize, max_tokens or 512, checksum, options)
    embedder = SentenceTransformerEmbedder(draft, where, device=rt.settings.device,
                                           batch_size=rt.settings.embed_batch_size)
    native = _native_max_tokens(where)
    draft = replace(draft, max_tokens=min(max_tokens or native, native))
    embedder.spec = draft
    embedder.model.max_seq_length = draft.max_tokens
    vec = probe_vector(embedder)
    spec = replace(draft, dimension=int(vec.shape[0]),
                   options={**options, "probe": probe_record(vec)})
    return _insert(rt, spec)


def add_http_model(rt: Runtime, base_url: str, *, name: str, remote_model: str | None = None,
                   revision: str | None = None, distance: str = "cosine", normalize: bool = True,
                   max_tokens: int = 512, api_key_env: str = DEFAULT_API_KEY_ENV,
                   tokenizer: str | None = None, timeout_s: float = 30.0,
                   max_retries: int = 5, batch_size: int = 64, query_prefix: str = "",
                   passage_prefix: str = "") -> PinnedModel:
    """Pin a model served by an OpenAI-compatible ``/v1/embeddings`` endpoint.

    The endpoint is asked for the probe vector: its length is the dimension and its hash
    is the pin (there are no weights to hash), so a server that later swaps its model is
    refused at start. The API key stays in the environment variable ``api_key_env``.
    """
    _check_common(name, distance, max_tokens)
    options: dict[str, Any] = {"base_url": base_url.rstrip("/"),
                               "model": remote_model or name, "api_key_env": api_key_env,
                               "timeout_s": timeout_s, "max_retries": max_retries,
                               "batch_size": batch_size,
                               **_prefixes(query_prefix, passage_prefix)}
    if tokenizer:
        options["tokenizer"] = (tokenizer if tokenizer.startswith("package:")
                                else str(Path(tokenizer).expanduser().resolve()))
    draft = ModelSpec(HTTP_PROVIDER, name, revision or "", 1, distance, normalize, max_tokens,
                      "", options)
    client = HttpEmbedder(draft)
    try:
        client.spec = replace(draft, dimension=_remote_dimension(client))
        vec = probe_vector(client)
    finally:
        client.close()
    checksum = probe_checksum(vec)
    spec = replace(draft, revision=revision or checksum.split(":")[-1][:12],
                   dimension=int(vec.shape[0]), checksum=checksum,
                   options={**options, "probe": probe_record(vec)})
    return _insert(rt, spec)


def _remote_dimension(client: HttpEmbedder) -> int:
    """The length of the vector the endpoint returns, before the spec knows it."""
    data = client._post([PROBE_TEXT])
    try:
        return len(data["data"][0]["embedding"])
    except (KeyError, IndexError, TypeError):
        raise EmbeddingProviderError(
            f"{client.url} answered without an embedding in data[0].embedding"
        ) from None


def _native_max_tokens(where: Path) -> int:
    """The sequence length the model was trained for (sentence_bert_config.json), else 512."""
    config = where / "sentence_bert_config.json"
    try:
        return int(json.loads(config.read_text())["max_seq_length"])
    except (OSError, ValueError, KeyError, TypeError):
        return 512


def _prefixes(query_prefix: str, passage_prefix: str) -> dict[str, str]:
    """The instruction prefixes some models need (e5: ``query: `` and ``passage: ``)."""
    out = {}
    if query_prefix:
        out["query_prefix"] = query_prefix
    if passage_prefix:
        out["passage_prefix"] = passage_prefix
    return out
