"""Local sentence-transformers models, loaded from a directory on disk (never from a hub)."""

from __future__ import annotations

import copy
import hashlib
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ragstore.embedding.base import Embedder, Vectors
from ragstore.errors import ModelError
from ragstore.models import ModelSpec
from ragstore.observability import metrics

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.onnx")


def weights_checksum(model_dir: Path) -> str:
    """sha256 over the model's weight files, the pin that detects swapped weights."""
    digest = hashlib.sha256()
    found = False
    for name in WEIGHT_FILES:
        path = model_dir / name
        if path.is_file():
            found = True
            digest.update(name.encode())
            with path.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
    if not found:
        raise ModelError(f"no weight file ({', '.join(WEIGHT_FILES)}) in {model_dir}")
    return "sha256:" + digest.hexdigest()


def pick_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class SentenceTransformerEmbedder(Embedder):
    """A sentence-transformers model from a local directory.

    Each call's texts are sorted by length, so padding is spent only within batches of
    similar lengths.
    """

    def __init__(
        self, spec: ModelSpec, model_dir: Path, *, device: str = "auto", batch_size: int = 64
    ) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]

        self.spec = spec
        self.batch_size = batch_size
        self.device = pick_device(device)
        try:
            self.model = SentenceTransformer(
                str(model_dir), device=self.device, local_files_only=True
            )
        except (OSError, ValueError) as exc:
            raise ModelError(f"could not load model {spec.key} from {model_dir}: {exc}") from None
        self.model.max_seq_length = spec.max_tokens
        self.model.eval()
        # The chunker counts tokens on ingest's reader thread while encode() runs: a fast
        # tokenizer's padding/truncation state is shared and not thread-safe, so counting
        # uses its own copy and never disturbs the batches being encoded.
        self.tokenizer: Any = copy.deepcopy(self.model.tokenizer)
        truncate = spec.options.get("truncate_dim")
        self._truncate = int(truncate) if truncate else None

    def embed_batch(self, texts: Sequence[str]) -> Vectors:
        return self.embed_texts(texts)

    def embed_texts(self, texts: Sequence[str]) -> Vectors:
        """Length-sorted batches straight through the model's modules.

        ``SentenceTransformer.encode`` does the same sort, but each call also re-runs
        ``eval()`` over every submodule, infers the input modality and converts per row:
        a few milliseconds that are most of a one-query search's embedding time. The
        vectors are the same (a test holds this path to ``encode``'s output).
        """
        if not texts:
            return np.zeros((0, self.spec.dimension), dtype=np.float32)
        import torch

        t0 = time.perf_counter()
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out: Vectors | None = None
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                idx = order[start : start + self.batch_size]
                features = self.model.preprocess([texts[i] for i in idx])
                if self.device != "cpu":
                    features = {
                        k: v.to(self.device) if isinstance(v, torch.Tensor) else v
                        for k, v in features.items()
                    }
                vecs = self.model(features)["sentence_embedding"].float().cpu().numpy()
                if out is None:
                    out = np.empty((len(texts), vecs.shape[1]), dtype=np.float32)
                out[idx] = vecs
        assert out is not None
        metrics.observe_embedding_batch(len(texts), time.perf_counter() - t0)
        if self._truncate is not None:
            out = np.ascontiguousarray(out[:, : self._truncate])
        if self.spec.normalize:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        backend: Any = getattr(self.tokenizer, "backend_tokenizer", None)
        fast = getattr(backend, "encode_batch_fast", None)
        if backend is not None and fast is not None:
            # the Rust tokenizer straight, without offsets: the same ids as the wrapper's
            # call at about half its cost, which is most of the chunker's time
            backend.no_truncation()
            backend.no_padding()
            return [len(e.ids) for e in fast(list(texts), add_special_tokens=True)]
        enc = self.tokenizer(
            list(texts),
            add_special_tokens=True,
            truncation=False,
            return_attention_mask=False,
            return_token_type_ids=False,
            verbose=False,
        )
        return [len(ids) for ids in enc["input_ids"]]

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        enc = self.tokenizer(
            text,
            add_special_tokens=False,
            truncation=False,
            return_offsets_mapping=True,
            return_attention_mask=False,
            return_token_type_ids=False,
            verbose=False,
        )
        return [(int(a), int(b)) for a, b in enc["offset_mapping"]]
