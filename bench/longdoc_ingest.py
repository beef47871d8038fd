"""First-ingest time of a folder, per stage, for one or more source trees in one run.

Each tree ingests the folder into a fresh data dir in its own process (``PYTHONPATH`` set
to the tree's ``src``), so two versions of ragstore compare under the same load, one
after the other. The child times the pipeline's stages by wrapping them: the reader
thread's parse + chunk (``_prepare_group``), the model (every forward call: its seconds,
texts, tokens read and tokens padded), the writer thread (``_write``) and the final
vector index build (``_build_index``); reader and writer overlap the model, so the stages
add up to more than the wall time.

    python -m bench.longdoc_ingest ../shared/data/nodejs-api/docs \\
        --tree before=/path/to/old/src --tree after=src \\
        --tree after-1-thread=src,RAGSTORE_EMBED_THREADS=1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CHILD = r"""
import json, sys, threading, time
from pathlib import Path
import torch
from sentence_transformers import SentenceTransformer
from ragstore.config import Settings
from ragstore.ingest import service
from ragstore.runtime import Runtime

stages = {"prepare_s": 0.0, "model_s": 0.0, "write_s": 0.0, "index_s": 0.0}
model = {"batches": 0, "texts": 0, "tokens": 0, "padded_tokens": 0, "max_batch": 0}
lock = threading.Lock()

def timed(owner, name, key):
    inner = getattr(owner, name)
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            with lock:
                stages[key] += time.perf_counter() - t0
    setattr(owner, name, wrapper)

timed(service._Ingestor, "_prepare_group", "prepare_s")
timed(service._Ingestor, "_write", "write_s")
timed(service, "_build_index", "index_s")
forward = SentenceTransformer.forward
def counted(self, features, *args, **kwargs):
    t0 = time.perf_counter()
    out = forward(self, features, *args, **kwargs)
    mask = features["attention_mask"]
    stages["model_s"] += time.perf_counter() - t0
    model["batches"] += 1
    model["texts"] += int(mask.shape[0])
    model["tokens"] += int(mask.sum())
    model["padded_tokens"] += int(mask.numel() - mask.sum())
    model["max_batch"] = max(model["max_batch"], int(mask.shape[0]))
    return out
SentenceTransformer.forward = counted

rt = Runtime(Settings())
with rt:
    with rt.db.connection():  # the embedded server starts here, before the clock
        pass
    t0 = time.perf_counter()
    report = service.ingest_paths(rt, [Path(sys.argv[1])], "longdoc")
    wall = time.perf_counter() - t0
print(json.dumps({
    "wall_s": round(wall, 2),
    "chunks": report.chunks,
    "embedded": report.embedded,
    "failed": len(report.failed),
    "torch_threads": torch.get_num_threads(),
    **{k: round(v, 2) for k, v in stages.items()},
    **model,
}))
"""


def run_tree(
    label: str, src: Path, folder: Path, extra: dict[str, str] | None = None
) -> dict[str, Any]:
    """One first ingest of ``folder`` by the ragstore under ``src``, in a fresh data dir,
    with ``extra`` environment variables (``RAGSTORE_EMBED_THREADS=1``, ...)."""
    with tempfile.TemporaryDirectory(prefix=f"longdoc-{label}-") as data:
        env = dict(os.environ, PYTHONPATH=str(src.resolve()), RAGSTORE_DATA_DIR=data)
        env.update(extra or {})
        before = os.getloadavg()
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, str(folder.resolve())],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        total = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"{label}: the ingest failed:\n{proc.stderr[-4000:]}")
        result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
        result.update(
            tree=label,
            process_s=round(total, 2),
            load_before=[round(x, 1) for x in before],
            load_after=[round(x, 1) for x in os.getloadavg()],
        )
        return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument(
        "--tree",
        action="append",
        metavar="LABEL=SRC[,VAR=VALUE...]",
        help="a ragstore source tree to time, with environment variables for it (repeat; "
        "default: this checkout's src)",
    )
    args = ap.parse_args()
    results = []
    for spec in args.tree or [f"current={Path('src')}"]:
        label, rest = spec.split("=", 1)
        src, *pairs = rest.split(",")
        extra = dict(p.split("=", 1) for p in pairs)
        results.append(run_tree(label, Path(src), args.folder, extra))
        print(json.dumps(results[-1]), flush=True)
    if len(results) > 1:
        base = results[0]["wall_s"]
        for r in results[1:]:
            print(f"{r['tree']}: {base / r['wall_s']:.2f}x faster than {results[0]['tree']}")


if __name__ == "__main__":
    main()
