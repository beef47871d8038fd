"""The probe: one fixed text whose vector identifies what a loaded model really computes.

A weights checksum proves the files are the pinned ones; it cannot see a remote server
swapping its model, a different pooling or a truncation setting. So every loaded embedder
embeds :data:`PROBE_TEXT` once and the answer is compared with the pin: the dimension
always, and the probe vector itself when the pin recorded it (``options["probe"]``, written
by ``ragstore models add``). Remote models have no weights to hash, so their pinned
``checksum`` is the hash of the rounded probe vector.
"""

from __future__ import annotations

import hashlib

import numpy as np
import numpy.typing as npt

from ragstore.embedding.base import Embedder
from ragstore.errors import ModelMismatchError
from ragstore.models import ModelSpec

PROBE_TEXT = "ragstore probe: pinned embedding models must not drift."
PROBE_DECIMALS = 6
MIN_PROBE_SIMILARITY = 0.999  # GPU vs CPU kernels differ by ~1e-6; another model by far more


def probe_vector(embedder: Embedder) -> npt.NDArray[np.float32]:
    return np.asarray(embedder.embed([PROBE_TEXT])[0], dtype=np.float32)


def probe_record(vec: npt.NDArray[np.float32]) -> list[float]:
    """The probe as stored in a spec's options (rounded so the JSON stays small)."""
    return [round(float(x), PROBE_DECIMALS) for x in vec]


def probe_checksum(vec: npt.NDArray[np.float32]) -> str:
    """The pin of a model without weight files: sha256 of its probe vector to 3 decimals."""
    rounded = np.round(np.asarray(vec, dtype=np.float64), 3) + 0.0  # + 0.0 folds -0.0
    return "probe-sha256:" + hashlib.sha256(rounded.astype("<f8").tobytes()).hexdigest()


def similarity(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def check_loaded(spec: ModelSpec, embedder: Embedder) -> None:
    """Refuse an embedder whose probe answer disagrees with the pinned spec."""
    vec = probe_vector(embedder)
    how = (
        f"if the change is intended, pin the model as a new revision with `ragstore models "
        f"add` and re-embed with `ragstore models migrate -c COLLECTION --to {spec.name}@NEW`; "
        "otherwise restore the pinned model"
    )
    if vec.shape[0] != spec.dimension:
        raise ModelMismatchError(
            f"model {spec.key}: expected {spec.dimension} dimensions, got {vec.shape[0]} "
            f"from the loaded model; {how}"
        )
    pinned = spec.options.get("probe")
    if pinned:
        ref = np.asarray(pinned, dtype=np.float32)
        sim = similarity(vec, ref) if ref.shape == vec.shape else 0.0
        if sim < MIN_PROBE_SIMILARITY:
            raise ModelMismatchError(
                f"model {spec.key}: the probe vector differs from the pin (cosine similarity "
                f"{sim:.4f}, at least {MIN_PROBE_SIMILARITY} expected): the loaded model "
                f"computes different vectors than the one the collection was built with; {how}"
            )
