"""Local sentence-transformers models, loaded from a directory on disk (never from a hub)."""

from __future__ import annotations

import copy
import hashlib
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ragstore.embedding.base import (
    Embedder,
    TokenEncoding,
    Vectors,
    tokenizer_counts,
    tokenizer_encodings,
    tokenizer_joins_add_up,
    tokenizer_spans,
)
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


def set_threads(threads: int) -> None:
    """Intra-op threads of every local model in this process (torch's setting is global).

    torch's default, one per physical core, is the fastest on an idle machine; where other
    processes keep the cores busy, a thread that waits for a descheduled sibling at every
    layer wastes the model's share, and fewer threads finish sooner (docs/benchmarks.md,
    "Encode paths").
    """
    import torch

    if _pool_forked:
        return  # more threads would wait on the parent's pool again (_one_thread_in_child)
    if threads > 0 and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def _one_thread_in_child() -> None:
    """Run a forked child's torch on one intra-op thread.

    torch's CPU ops run on a GNU OpenMP thread pool that does not survive ``fork()``: once
    the parent had embedded anything, the child's first embedding waited for the parent's
    pool threads forever. With one thread torch never enters that pool. A process that
    needs the model's full speed in each worker starts them with the ``spawn`` method.
    """
    global _pool_forked
    torch = sys.modules.get("torch")
    if torch is not None:
        _pool_forked = True
        torch.set_num_threads(1)


_pool_forked = False  # in a child forked after torch was loaded: one thread for good


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_one_thread_in_child)


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
        import pickle

        from safetensors import SafetensorError
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
        except (OSError, ValueError, SafetensorError, pickle.UnpicklingError) as exc:
            # weights cut short (a copy or download that stopped) or not weights at all
            # raise safetensors' or pickle's own errors: they crashed `models add` with a
            # traceback instead of this one error naming the folder
            raise ModelError(f"could not load model {spec.key} from {model_dir}: {exc}") from None
        self.model.max_seq_length = spec.max_tokens
        self.model.eval()
        # The chunker counts tokens on ingest's reader thread while encode() runs: a fast
        # tokenizer's padding/truncation state is shared and not thread-safe, so counting
        # uses its own copy and never disturbs the batches being encoded.
        self.tokenizer: Any = copy.deepcopy(self.model.tokenizer)
        truncate = spec.options.get("truncate_dim")
        self._truncate = int(truncate) if truncate else None
        self._inputs = _Inputs.of(self.model)
        self._single = _SingleText.of(self.model, self._inputs)

    def embed_batch(self, texts: Sequence[str]) -> Vectors:
        return self.embed_texts(texts)

    def embed_texts(self, texts: Sequence[str]) -> Vectors:
        """Batches of texts of equal token length straight through the model's modules.

        ``SentenceTransformer.encode`` sorts by characters and tokenizes every batch; here
        each text is tokenized once, up front, and the batches are cut from the texts
        sorted by their token count, so padding (a fifth of what the model read on the
        nodejs-api reference when sorted by characters) all but vanishes. ``encode`` also
        re-runs ``eval()`` over every submodule and infers the input modality per call: a
        few milliseconds that are most of a one-query search's embedding time. The vectors
        are the same (a test holds this path to ``encode``'s output).
        """
        if not texts:
            return np.zeros((0, self.spec.dimension), dtype=np.float32)
        import torch

        t0 = time.perf_counter()
        out: Vectors | None = None
        with torch.inference_mode():
            if len(texts) == 1 and self._single is not None:
                out = self._single(texts[0])  # a query: no sorting, padding or features
        if out is None:
            out = self._encode_batches(texts)
        metrics.observe_embedding_batch(len(texts), time.perf_counter() - t0)
        if self._truncate is not None:
            out = np.ascontiguousarray(out[:, : self._truncate])
        if self.spec.normalize:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out

    def _encode_batches(self, texts: Sequence[str]) -> Vectors:
        """The model's sentence embeddings of ``texts``, batch by batch, in their order."""
        import torch

        out: Vectors | None = None
        with torch.inference_mode():
            for idx, features in self._batches(texts):
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
        return out

    def _batches(self, texts: Sequence[str]) -> Iterator[tuple[npt.NDArray[np.intp], Any]]:
        """(row indices, model features) per batch, longest texts first.

        With a fast tokenizer the features come from one tokenizer call over all texts
        (:class:`_Inputs`); otherwise each batch goes through the model's own
        ``preprocess``, sorted by characters.
        """
        inputs = self._inputs
        if inputs is None:
            order = np.argsort([-len(t) for t in texts], kind="stable")
            for start in range(0, len(texts), self.batch_size):
                idx = order[start : start + self.batch_size]
                yield idx, self.model.preprocess([texts[i] for i in idx])
            return
        encodings = inputs.encode(texts)
        order = np.argsort([-len(e.ids) for e in encodings], kind="stable")
        for start in range(0, len(texts), self.batch_size):
            idx = order[start : start + self.batch_size]
            yield idx, inputs.features([encodings[i] for i in idx])

    @property
    def joins_add_up(self) -> bool:
        return tokenizer_joins_add_up(self.tokenizer)

    @property
    def encodes_on_cpu(self) -> bool:
        return self.device == "cpu"

    def count_text_tokens(self, texts: Sequence[str]) -> list[int]:
        return tokenizer_counts(self.tokenizer, texts)

    def text_token_encodings(
        self, texts: Sequence[str], indexed: Sequence[bool] | None = None
    ) -> list[TokenEncoding] | None:
        return tokenizer_encodings(self.tokenizer, texts, indexed)

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        return tokenizer_spans(self.tokenizer, text)


_PROBE = [
    "  Ünïcode, CAFÉ and 中文 text\twith\u00a0odd   spacing.  ",
    "x",
    "",
    "word " * 600,
    "fs.readFile(path[, options], callback) => {\n  return `${a}` }",
]
_SINGLE_PROBE = _PROBE[:3] + _PROBE[4:]  # the 600-word text would only cost load time


class _Inputs:
    """The model's features built from one tokenizer call per :meth:`embed_texts`.

    A private copy of the fast tokenizer, set up once (truncation at the model's
    ``max_seq_length``, no padding) and never changed after, so it is safe to share
    between threads; batches are padded here from the ids. :meth:`of` uses it only when
    its features equal the model's own ``preprocess`` on a probe of awkward texts, so a
    model whose preprocessing differs (a prompt template, another tokenizer) keeps
    ``preprocess``.
    """

    def __init__(self, backend: Any, names: Sequence[str], pad_id: int, pad_type: int) -> None:
        self.backend = backend
        self.names = tuple(names)
        self.pad_id = pad_id
        self.pad_type = pad_type

    @classmethod
    def of(cls, model: Any) -> _Inputs | None:
        import torch

        tokenizer: Any = getattr(model, "tokenizer", None)
        backend: Any = getattr(tokenizer, "backend_tokenizer", None)
        names = list(getattr(tokenizer, "model_input_names", []))
        if backend is None or not hasattr(backend, "encode_batch_fast"):
            return None
        if not set(names) <= {"input_ids", "token_type_ids", "attention_mask"}:
            return None
        backend = copy.deepcopy(backend)
        backend.no_padding()
        backend.enable_truncation(int(model.max_seq_length))
        inputs = cls(
            backend,
            names,
            int(tokenizer.pad_token_id or 0),
            int(getattr(tokenizer, "pad_token_type_id", 0) or 0),
        )
        expected = model.preprocess(_PROBE)
        ours = inputs.features(inputs.encode(_PROBE))
        for name in names:
            if name not in expected or not torch.equal(expected[name], ours[name]):
                return None
        return inputs

    def encode(self, texts: Sequence[str]) -> list[Any]:
        return list(self.backend.encode_batch_fast(list(texts), add_special_tokens=True))

    def features(self, encodings: Sequence[Any]) -> dict[str, Any]:
        import torch

        width = max(len(e.ids) for e in encodings)
        ids = np.full((len(encodings), width), self.pad_id, dtype=np.int64)
        types = np.full((len(encodings), width), self.pad_type, dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        for row, e in enumerate(encodings):
            n = len(e.ids)
            ids[row, :n] = e.ids
            types[row, :n] = e.type_ids
            mask[row, :n] = 1
        arrays = {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}
        features: dict[str, Any] = {n: torch.from_numpy(arrays[n]) for n in self.names}
        features["modality"] = "text"
        return features


class _SingleText:
    """One text straight through the transformer, mean-pooled: a search's query encode.

    The model's own stack (``SentenceTransformer.forward`` over Transformer, Pooling and
    Normalize modules) rebuilds a features dict, filters keyword arguments and computes a
    masked mean for every call; for one unpadded text none of that changes a number, so
    this reads the text's ids from the private tokenizer of :class:`_Inputs` into one
    tensor and calls the Hugging Face model with them alone (no padding, so no attention
    mask, and token types that are all zero by default). :meth:`of` uses it only for a
    model whose modules are exactly Transformer, mean Pooling and optionally Normalize,
    and only when its vectors match the full stack's on a probe of awkward texts.

    For a plain BERT the forward itself is written out over the model's weights
    (:class:`~ragstore.embedding.bert_forward.BertForward`: no module stack, fused QKV), which
    takes a sixth off a query's encode; where that does not pass the probe, the Hugging Face
    model's own forward is used.
    """

    def __init__(
        self, backend: Any, model: Any, normalize: bool, device: str, forward: Any = None
    ) -> None:
        self.backend = backend
        self.model = model
        self.normalize = normalize
        self.device = device
        self.forward = forward  # a BertForward, or None for the model's own forward

    @classmethod
    def of(cls, model: Any, inputs: _Inputs | None) -> _SingleText | None:
        import torch
        from sentence_transformers.sentence_transformer.modules import (
            Normalize,
            Pooling,
            Transformer,
        )

        modules = list(model)
        if inputs is None or len(modules) not in (2, 3):
            return None
        first, pooling = modules[0], modules[1]
        normalize = len(modules) == 3
        if normalize and type(modules[2]) is not Normalize:
            return None
        if type(first) is not Transformer or type(pooling) is not Pooling:
            return None
        if pooling.pooling_mode not in ("mean", ("mean",)) or not pooling.include_prompt:
            return None
        hf_model = getattr(first, "auto_model", None)
        if hf_model is None:
            return None
        from ragstore.embedding.bert_forward import BertForward

        device = str(model.device)
        with torch.inference_mode():
            expected = [
                model(inputs.features(inputs.encode([text])))["sentence_embedding"]
                .float()
                .cpu()
                .numpy()
                for text in _SINGLE_PROBE
            ]
            fast = BertForward.of(hf_model)
            for forward in (fast, None) if fast is not None else (None,):
                single = cls(inputs.backend, hf_model, normalize, device, forward)
                if single._matches(expected):
                    return single
        return None

    def _matches(self, expected: Sequence[Vectors]) -> bool:
        """Whether this path gives the full stack's vectors of the probe texts."""
        return all(
            np.allclose(self(text), want, rtol=0, atol=1e-6)
            for text, want in zip(_SINGLE_PROBE, expected, strict=True)
        )

    def __call__(self, text: str) -> Vectors:
        """The text's sentence embedding, a (1, dimension) float32 array; call it under
        ``torch.inference_mode``."""
        import torch

        ids = torch.tensor([self.backend.encode(text, add_special_tokens=True).ids])
        if self.device != "cpu":
            ids = ids.to(self.device)
        if self.forward is not None:
            vec = self.forward(ids)
        else:
            hidden = self.model(input_ids=ids, return_dict=True).last_hidden_state
            vec = hidden.sum(dim=1) / hidden.shape[1]
        if self.normalize:
            vec = torch.nn.functional.normalize(vec, p=2, dim=1)
        out: Vectors = vec.float().cpu().numpy()
        return out
