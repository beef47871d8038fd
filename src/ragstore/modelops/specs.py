"""Pinned model specs in ``embedding_models``: list, find, and pin new ones.

Pinning a model records everything that decides its vectors: provider, name, revision,
dimension, distance, normalisation, max tokens, the sha256 of the weights (local models) or
of a probe embedding (remote models), and the probe vector itself. A pin never changes
once written: a different model, or the same one with new weights, is a new revision,
and a collection moves to it with ``ragstore models migrate``.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from ragstore.db import models, spaces
from ragstore.db.errors import translated
from ragstore.db.models import PinnedModel
from ragstore.embedding.http import (
    AUTH_SCHEMES,
    DEFAULT_API_KEY_ENV,
    DEFAULT_CONCURRENCY,
    HttpEmbedder,
    url_problem,
)
from ragstore.embedding.local import SentenceTransformerEmbedder, weights_checksum
from ragstore.embedding.paths import resolve_path
from ragstore.embedding.registry import (
    HTTP_PROVIDER,
    LOCAL_PROVIDER,
    builtin_specs,
    resolve_spec,
    verify_weights,
)
from ragstore.embedding.validation import (
    PROBE_TEXT,
    probe_checksum,
    probe_record,
    probe_vector,
)
from ragstore.errors import (
    ConflictError,
    InputError,
    ModelError,
    ModelNotFoundError,
)
from ragstore.models import ModelSpec, shown_options
from ragstore.runtime import Runtime
from ragstore.urls import without_userinfo

DISTANCES = ("cosine", "l2", "ip")


def list_models(rt: Runtime) -> list[PinnedModel]:
    """Every pinned model, with the collections whose spaces use it."""
    with rt.db.connection() as conn, translated("listing embedding models"):
        return models.pinned_models(conn)


def find_model(rt: Runtime, ref: str, *, pin_builtin: bool = True) -> PinnedModel:
    """The pinned model ``NAME`` or ``NAME@REVISION``; a built-in is pinned on first use."""
    name, at, revision = ref.partition("@")
    if at and not revision.strip():
        # "NAME@" read as NAME, the default revision: a caller whose revision variable
        # came out empty got a model it did not name (a collection bound to it for good)
        raise InputError(
            f"model {ref!r} has an empty revision after '@'; name one as NAME@REVISION "
            "(see `ragstore models list`), or write the name alone for its only revision"
        )
    with rt.db.connection() as conn, translated(f"looking up model {ref!r}"):
        rows = models.pinned_models(conn, name, revision or None)
        if len(rows) > 1:
            keys = ", ".join(r.spec.key for r in rows)
            raise InputError(
                f"model {name!r} is pinned in {len(rows)} revisions ({keys}); "
                "name one as NAME@REVISION"
            )
        if rows:
            return rows[0]
        builtin = builtin_specs().get(name)
        if pin_builtin and builtin is not None and revision in ("", builtin.revision):
            models.upsert_model(conn, resolve_spec(name))
            return models.pinned_models(conn, name, builtin.revision)[0]
        known = [m.spec.key for m in models.pinned_models(conn)]
    raise ModelNotFoundError(
        f"no pinned model {ref!r}; pinned: {', '.join(known) or 'none'}; built-in: "
        f"{', '.join(sorted(builtin_specs()))}; `ragstore models list` lists the names to "
        "use, `ragstore models add` pins another"
    )


def model_spec(rt: Runtime, ref: str) -> ModelSpec:
    """The spec ``ref`` names, writing nothing: a pinned model (``NAME`` or
    ``NAME@REVISION``), else a built-in not pinned yet. For readers of ``RAGSTORE_MODEL``
    that must not pin (a server warming up, perhaps on a read-only standby)."""
    try:
        return find_model(rt, ref, pin_builtin=False).spec
    except ModelNotFoundError:
        name, _, revision = ref.partition("@")
        builtin = builtin_specs().get(name)
        if builtin is None or revision not in ("", builtin.revision):
            raise
        return resolve_spec(name)


def _insert(rt: Runtime, spec: ModelSpec) -> PinnedModel:
    spaces.check_dimension(spec.dimension, f"model {spec.key}")  # no collection could use it
    with rt.db.connection() as conn, translated(f"pinning model {spec.key}"):
        found = models.pinned_models(conn, spec.name, spec.revision)
        if found:
            old = found[0]
            if old.spec.checksum != spec.checksum or old.spec.dimension != spec.dimension:
                raise ConflictError(
                    f"model {spec.key} is already pinned with checksum {old.spec.checksum} "
                    f"and {old.spec.dimension} dimensions, and this one has {spec.checksum} "
                    f"and {spec.dimension}; a pin never changes: give the new model another "
                    "--revision"
                )
            differs = _settings_differ(old.spec, spec)
            if differs:
                raise ConflictError(
                    f"model {spec.key} is already pinned with other settings ({differs}); a "
                    "pin never changes and nothing was pinned: pin these settings under "
                    "another --revision (or --name), or use the pin as it is"
                )
            if _moved(old.spec, spec):
                models.relocate(conn, old.id, str(spec.options["path"]))
                return models.pinned_models(conn, spec.name, spec.revision)[0]
            return old
        models.upsert_model(conn, spec)
        return models.pinned_models(conn, spec.name, spec.revision)[0]


# what decides a model's vectors or how they are ranked, beyond its weights or probe:
# a local model's path is not (a moved folder is relocated, see _moved); an HTTP pin's
# every option is compared (see _option_names)
_SETTINGS = ("distance", "normalize", "max_tokens")
_SETTING_OPTIONS = ("truncate_dim", "dimensions", "query_prefix", "passage_prefix", "model")


def _option_names(pinned: ModelSpec, asked: ModelSpec) -> list[str]:
    """The options compared between a pin and the same key asked again.

    An HTTP pin's options are all of how it is reached and used (base_url, api_key_env,
    tokenizer, timeouts, batch size, concurrency): there was no way to change them, yet a
    second ``models add`` under the pinned name with a new ``base_url`` (the same model
    served elsewhere: same probe, same revision) answered "pinned" and returned the old
    pin, so every request still went to the old endpoint while the user believed the new
    one in use. Every option but the probe must now be the same, except request tuning a
    pin made by an older version does not record (it was not asked for then, so the same
    ``models add`` run again is not refused for it)."""
    if asked.provider != HTTP_PROVIDER:
        return list(_SETTING_OPTIONS)
    names = (set(pinned.options) | set(asked.options)) - {"probe"}
    return sorted(n for n in names if n in pinned.options or n not in _TUNING)


# an HTTP model's request tuning: how this process talks to the endpoint, not its vectors
_TUNING = ("timeout_s", "max_retries", "batch_size", "concurrency")


def _settings_differ(pinned: ModelSpec, asked: ModelSpec) -> str:
    """The settings in which ``asked`` differs from the pin of the same key, as
    ``name pinned -> asked`` ('' when none).

    Only checksum and dimension were compared: the same weights added again under the same
    name (its revision taken from the checksum) with another token budget, distance,
    normalisation or prefix were answered "pinned" and the first pin returned, so a
    collection migrated to the key was cut and embedded without what had just been asked."""
    out = [
        f"{name} {getattr(pinned, name)!r} -> {getattr(asked, name)!r}"
        for name in _SETTINGS
        if getattr(pinned, name) != getattr(asked, name)
    ]
    shown_pinned, shown_asked = shown_options(pinned.options), shown_options(asked.options)
    out += [
        f"{name} {shown_pinned.get(name)!r} -> {shown_asked.get(name)!r}"
        for name in _option_names(pinned, asked)
        if pinned.options.get(name) != asked.options.get(name)
    ]
    return ", ".join(out)


def _refuse_credentials(base_url: str) -> None:
    """Refuse an endpoint URL that carries ``user:password@`` (or ``token@``).

    httpx sends it as basic auth, but the URL is the pin's ``options.base_url``: the
    password was stored in the database and printed by ``models show``, ``models list
    --json``, a conflict and every error of the embedder. The API key belongs in the
    environment variable ``--api-key-env`` names, which is never stored or printed. A pin
    an older version made with one still works (its URL is masked where it is shown)."""
    if _holds_credentials(base_url):
        raise InputError(
            f"the endpoint URL {without_userinfo(base_url)!r} was given with credentials "
            "(user:password@) in it, which a pin would store in the database and show; "
            "put the API key in an environment variable and name it with --api-key-env "
            "(sent as 'Authorization: Bearer KEY'; with --auth basic the variable holds "
            "USER:PASSWORD, sent as basic auth), and give the URL without them; "
            "nothing was pinned"
        )


def _refuse_unusable_url(base_url: str) -> None:
    """Refuse an endpoint URL no request can be sent to (malformed, no host, not
    http(s)) with one input error, before the probe: it escaped as httpx's ``InvalidURL``
    traceback (exit 1), or was retried as a transport error and blamed on rate limits."""
    problem = url_problem(base_url.rstrip("/"))
    if problem is not None:
        raise InputError(
            f"{without_userinfo(base_url)!r} is not a usable endpoint URL ({problem}); give "
            "it as http://HOST:PORT/v1; nothing was pinned"
        )


def _holds_credentials(base_url: str) -> bool:
    """Whether httpx would send ``user:password@`` (or ``token@``) of ``base_url``."""
    try:
        return bool(httpx.URL(base_url).userinfo)
    except httpx.InvalidURL:
        return False  # not a URL httpx reads: _refuse_unusable_url refuses it


def pins_holding_credentials(rt: Runtime) -> list[PinnedModel]:
    """The HTTP pins whose ``base_url`` holds a password: made before
    :func:`_refuse_credentials`, they keep it in the database (and in every backup), and
    nothing rewrites them (a pin never changes under its users). ``db check`` names each
    with :func:`repin_command`."""
    return [
        m
        for m in list_models(rt)
        if m.spec.provider == HTTP_PROVIDER
        and isinstance(m.spec.options.get("base_url"), str)
        and _holds_credentials(m.spec.options["base_url"])
    ]


def repin_variable(spec: ModelSpec) -> str:
    """The environment variable :func:`repin_command` names for ``spec``'s credentials:
    one of its own (another pin's key may be in ``RAGSTORE_EMBEDDING_API_KEY``)."""
    return "RAGSTORE_EMBED_AUTH_" + re.sub(r"[^A-Z0-9]+", "_", spec.name.upper()).strip("_")


def repin_command(spec: ModelSpec) -> str:
    """The ``ragstore models add`` that pins ``spec`` (an HTTP pin whose URL holds
    ``user:password@``) again with the pair in :func:`repin_variable` (``--auth basic``)
    and the URL without it: the same endpoint, model and settings under revision
    ``REVISION-basic``, a new pin beside the old one (which is left as it is)."""
    opts = spec.options
    url = without_userinfo(str(opts["base_url"]))
    args = [url, "--provider", HTTP_PROVIDER, "--name", spec.name]
    args += ["--revision", f"{spec.revision}-basic", "--auth", "basic"]
    args += ["--api-key-env", repin_variable(spec)]
    if opts.get("model") and opts["model"] != spec.name:
        args += ["--remote-model", str(opts["model"])]
    if spec.distance != "cosine":
        args += ["--distance", spec.distance]
    if not spec.normalize:
        args.append("--no-normalize")
    args += ["--max-tokens", str(spec.max_tokens)]
    flags = (
        ("dimensions", "--truncate-dim"),
        ("tokenizer", "--tokenizer"),
        ("batch_size", "--batch-size"),
        ("concurrency", "--concurrency"),
        ("query_prefix", "--query-prefix"),
        ("passage_prefix", "--passage-prefix"),
    )
    args += [part for key, flag in flags if opts.get(key) for part in (flag, str(opts[key]))]
    return "ragstore models add " + " ".join(shlex.quote(a) for a in args)


def _moved(pinned: ModelSpec, asked: ModelSpec) -> bool:
    """Whether ``asked`` (the same weights and settings, pinned from another folder) is
    where a local pin's weights now are: its own folder no longer holds them.

    A load that finds the pinned folder gone says to pin the model again from where it
    now lives; that answered "pinned" and left the pin naming the old folder, so every
    load went on failing. A pin whose folder still holds its weights is not moved (another
    machine sharing the database may have them at another path)."""
    path = asked.options.get("path")
    if asked.provider != LOCAL_PROVIDER or not path or pinned.options.get("path") == path:
        return False
    try:
        verify_weights(pinned)
    except ModelError:  # gone, no weights left there, or other weights
        return True
    return False


def _check_common(name: str, distance: str, max_tokens: int | None) -> None:
    if not name.strip() or "@" in name:
        raise InputError(f"model name {name!r} must be non-empty and contain no '@'")
    if distance not in DISTANCES:
        raise InputError(f"distance {distance!r} is not one of {', '.join(DISTANCES)}")
    if max_tokens is not None and max_tokens < 8:
        raise InputError(f"max tokens must be at least 8, got {max_tokens}")


def add_local_model(
    rt: Runtime,
    path: str,
    *,
    name: str,
    revision: str | None = None,
    distance: str = "cosine",
    normalize: bool = True,
    max_tokens: int | None = None,
    truncate_dim: int | None = None,
    query_prefix: str = "",
    passage_prefix: str = "",
) -> PinnedModel:
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
    if truncate_dim is not None and truncate_dim < 1:
        raise InputError(f"truncate dim must be a positive number, got {truncate_dim}")
    checksum = weights_checksum(where)
    stored_path = path if path.startswith("package:") else str(where.resolve())
    options: dict[str, Any] = {"path": stored_path}
    if truncate_dim:
        options["truncate_dim"] = int(truncate_dim)
    options.update(_prefixes(query_prefix, passage_prefix))
    draft = ModelSpec(
        LOCAL_PROVIDER,
        name,
        revision or checksum.split(":")[-1][:12],
        1,
        distance,
        normalize,
        max_tokens or 512,
        checksum,
        options,
    )
    embedder = SentenceTransformerEmbedder(
        draft, where, device=rt.settings.device, batch_size=rt.settings.embed_batch_size
    )
    native = _native_max_tokens(where)
    draft = replace(draft, max_tokens=min(max_tokens or native, native))
    embedder.spec = draft
    embedder.model.max_seq_length = draft.max_tokens
    vec = probe_vector(embedder)
    _check_truncation(name, where, truncate_dim, int(vec.shape[0]))
    spec = replace(
        draft, dimension=int(vec.shape[0]), options={**options, "probe": probe_record(vec)}
    )
    return _insert(rt, spec)


def add_http_model(
    rt: Runtime,
    base_url: str,
    *,
    name: str,
    remote_model: str | None = None,
    revision: str | None = None,
    distance: str = "cosine",
    normalize: bool = True,
    max_tokens: int = 512,
    api_key_env: str = DEFAULT_API_KEY_ENV,
    tokenizer: str | None = None,
    timeout_s: float = 30.0,
    max_retries: int = 5,
    batch_size: int = 64,
    query_prefix: str = "",
    passage_prefix: str = "",
    dimensions: int | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    auth: str = "bearer",
) -> PinnedModel:
    """Pin a model served by an OpenAI-compatible ``/v1/embeddings`` endpoint.

    The endpoint is asked for the probe vector: its length is the dimension and its hash
    is the pin (there are no weights to hash), so a server that later swaps its model is
    refused at start. The API key stays in the environment variable ``api_key_env``;
    ``auth="basic"`` sends what it holds (``user:password``) as HTTP basic auth, for an
    endpoint that takes nothing else (the pin records ``"auth": "basic"``, never the pair;
    a bearer pin records no ``auth``, as pins made before the option did not).
    ``dimensions`` asks the endpoint for vectors that long with every request (OpenAI's
    text-embedding-3 models shorten theirs); an endpoint that answers another length is
    refused here, before anything is pinned. ``concurrency``: requests in flight at once
    while documents are embedded (``embedding.http``).
    """
    _refuse_credentials(base_url)
    _refuse_unusable_url(base_url)
    _check_common(name, distance, max_tokens)
    if auth not in AUTH_SCHEMES:
        raise InputError(
            f"--auth {auth!r} is not one of {', '.join(AUTH_SCHEMES)} ('bearer' sends the "
            "key as 'Authorization: Bearer KEY', 'basic' sends USER:PASSWORD as basic auth)"
        )
    if dimensions is not None and dimensions < 1:
        raise InputError(f"dimensions must be a positive number, got {dimensions}")
    options: dict[str, Any] = {
        "base_url": base_url.rstrip("/"),
        "model": remote_model or name,
        "api_key_env": api_key_env,
        "timeout_s": timeout_s,
        "max_retries": max_retries,
        "batch_size": batch_size,
        "concurrency": concurrency,
        **_prefixes(query_prefix, passage_prefix),
    }
    if dimensions is not None:
        options["dimensions"] = dimensions
    if auth != "bearer":
        options["auth"] = auth
    if tokenizer:
        options["tokenizer"] = (
            tokenizer
            if tokenizer.startswith("package:")
            else str(Path(tokenizer).expanduser().resolve())
        )
    draft = ModelSpec(
        HTTP_PROVIDER, name, revision or "", 1, distance, normalize, max_tokens, "", options
    )
    client = HttpEmbedder(draft)
    try:
        answered = _remote_dimension(client)
        if dimensions is not None and answered < dimensions:
            # asked for more than the model makes: "does not shorten" sent the user to
            # drop the option instead of naming the model's own length
            raise InputError(
                f"--truncate-dim {dimensions} is more than the {answered} dimensions "
                f"{base_url} makes; give at most {answered}, or leave --truncate-dim out "
                "for its full vectors; nothing was pinned"
            )
        if dimensions is not None and answered != dimensions:
            raise InputError(
                f"{base_url} answered {answered} dimensions when asked for {dimensions}: it "
                "does not shorten its vectors (OpenAI's text-embedding-3 models do); pin it "
                "without --truncate-dim"
            )
        client.spec = replace(draft, dimension=answered)
        vec = probe_vector(client)
        if not vec.any():  # pinned, it made every search's distances NaN or all equal
            raise InputError(
                f"{base_url} answered a vector of zeros for the probe text, which no "
                "distance can rank: the server or its model is broken; nothing was pinned"
            )
    finally:
        client.close()
    checksum = probe_checksum(vec)
    spec = replace(
        draft,
        revision=revision or checksum.split(":")[-1][:12],
        dimension=int(vec.shape[0]),
        checksum=checksum,
        options={**options, "probe": probe_record(vec)},
    )
    return _insert(rt, spec)


def _check_truncation(name: str, where: Path, truncate_dim: int | None, made: int) -> None:
    """Refuse a ``truncate_dim`` longer than the model's own vectors.

    Keeping "the first N" of fewer dimensions kept them all: the pin recorded the asked
    N beside the model's own dimension, under a key of its own that claimed a truncation
    it did not make (the same vectors as the model untruncated). ``made``: the length of
    the probe vector, truncated to at most ``truncate_dim``, so shorter only when the
    model's own vectors are."""
    if truncate_dim and truncate_dim > made:
        raise InputError(
            f"--truncate-dim {truncate_dim} is more than the {made} dimensions model "
            f"{name!r} ({where}) makes; give at most {made}, or leave --truncate-dim out "
            "for its full vectors; nothing was pinned"
        )


def _remote_dimension(client: HttpEmbedder) -> int:
    """The length of the vector the endpoint returns, before the spec knows it."""
    return int(client.remote_vectors([PROBE_TEXT]).shape[1])


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
