"""The write path without the model: where ingest, eval and import spend their time.

Encoding is replaced by an instant embedder (the real tokenizer for chunking, deterministic
unit vectors from a hash of each text instead of the model), so what is measured is parse,
tokenise/chunk, write and index. In one process, on a fresh embedded database:

* ``ingest``: N SciFact abstracts as Markdown files, ingested as a first load (bulk path:
  HNSW built once at the end) and again into another empty collection with the bulk path
  off (``RAGSTORE_BULK_LOAD_BYTES=0``: the index grows row by row); chunks/s of each, and
  the parse and chunk stages timed alone on the same files.
* ``eval``: the same records through ``search.eval.ingest_records``.
* ``import``: the same number of records with 384-d vectors from a JSONL file through
  ``imports.run_import`` (no backup, 10 verification queries).

Run it against two source trees to compare before/after in one sitting:

    PYTHONPATH=src python -m bench.write_path --docs 2000
    PYTHONPATH=/path/to/old/src python -m bench.write_path --docs 2000

or let it alternate the two trees itself, each run a fresh process and database, the
order swapped every round so that a drift in the machine's load falls on both, and print
the records/s of each and their ratio per round (``--against``; ``--only eval`` or
``--only import``):

    git archive 7c19559 src | tar -x -C /tmp/old
    PYTHONPATH=src:. python -m bench.write_path --docs 2000 --only import \
        --against /tmp/old/src --rounds 4
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.ingest_bench import write_scifact
from bench.scifact import records
from ragstore.chunking import chunk_document
from ragstore.config import Settings
from ragstore.embedding.base import Embedder, Vectors
from ragstore.embedding.registry import resolve_spec
from ragstore.files import discover
from ragstore.ingest import ingest_paths
from ragstore.parsing import parse_bytes
from ragstore.runtime import Runtime


class InstantEmbedder(Embedder):
    """The real model's tokenizer, but vectors from a hash: encode costs nothing."""

    def __init__(self, real: Embedder) -> None:
        self.real = real
        self.spec = real.spec
        self.batch_size = real.batch_size

    def embed_batch(self, texts: Sequence[str]) -> Vectors:
        out = np.empty((len(texts), self.spec.dimension), dtype=np.float32)
        for i, t in enumerate(texts):
            seed = int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "little")
            v = np.random.default_rng(seed).standard_normal(self.spec.dimension)
            out[i] = v / np.linalg.norm(v)
        return out

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self.real.count_tokens(texts)

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        return self.real.token_spans(text)

    @property
    def special_tokens(self) -> int:
        return self.real.special_tokens


def _runtime(data: Path, **update: Any) -> Runtime:
    rt = Runtime(Settings(data_dir=data, **update))
    spec = resolve_spec(rt.settings.model)
    rt._embedders[spec] = InstantEmbedder(rt.embedder(spec))  # the bench's own embedder
    return rt


def _chunks(rt: Runtime, name: str) -> int:
    with rt.db.connection() as conn:
        row = conn.execute(
            "SELECT count(*) FROM chunks c JOIN collections k ON"
            " k.id = c.collection_id WHERE k.name = %s",
            (name,),
        ).fetchone()
    return int(row[0]) if row else 0


def stages(rt: Runtime, folder: Path) -> dict[str, float]:
    """Seconds of parse and of chunking (tokenising) alone, over every file."""
    spec = resolve_spec(rt.settings.model)
    embedder = rt.embedder(spec)
    files = discover([folder]).files
    t0 = time.perf_counter()
    parsed = [parse_bytes(f.read_bytes(), str(f)) for f in files]
    t1 = time.perf_counter()
    for p in parsed:
        chunk_document(p, embedder, spec.max_tokens)
    t2 = time.perf_counter()
    return {"parse_s": t1 - t0, "chunk_s": t2 - t1}


def bench_ingest(work: Path, folder: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    runs: list[tuple[str, dict[str, Any]]] = [
        ("bulk", {"bulk_load_bytes": 1}),
        ("incremental", {"bulk_load_bytes": 0}),
    ]
    if "bulk_load_bytes" not in Settings.model_fields:  # a tree from before the bulk path
        runs = [("bulk", {})]
    for label, update in runs:
        rt = _runtime(work / f"data-{label}", **update)
        rt.db  # noqa: B018 (start the server and create the schema, untimed)
        t0 = time.perf_counter()
        report = ingest_paths(rt, [folder], "w")
        seconds = time.perf_counter() - t0
        n = _chunks(rt, "w")
        out[label] = {
            "seconds": round(seconds, 2),
            "chunks": n,
            "chunks_per_s": round(n / seconds),
            "failed": len(report.failed),
            # seconds per stage (reader, encoder and writer threads overlap; absent before
            # the bulk write path)
            "stages": {k: round(v, 2) for k, v in getattr(report, "stages", {}).items()},
        }
        if label == "bulk":
            out["stages"] = {k: round(v, 2) for k, v in stages(rt, folder).items()}
        rt.close()
    return out


def bench_eval(work: Path, n: int) -> dict[str, Any]:
    from ragstore.search.eval import ingest_records

    recs = [
        (str(r["_id"]), str(r.get("title") or ""), str(r.get("text") or "")) for r in records(n)
    ]
    rt = _runtime(work / "data-eval")
    rt.db  # noqa: B018
    t0 = time.perf_counter()
    ingest_records(rt, "eval-bench", recs)
    seconds = time.perf_counter() - t0
    n_chunks = _chunks(rt, "eval-bench")
    rt.close()
    return {
        "seconds": round(seconds, 2),
        "records": len(recs),
        "chunks": n_chunks,
        "records_per_s": round(len(recs) / seconds),
    }


def bench_import(work: Path, n: int) -> dict[str, Any]:
    from ragstore.imports.files import JsonlSource
    from ragstore.imports.service import ImportOptions, plan_import, run_import

    path = work / "vectors.jsonl"
    rng = np.random.default_rng(0)
    with path.open("w") as fh:
        for r in records(n):
            v = rng.standard_normal(384)
            fh.write(
                json.dumps(
                    {
                        "id": str(r["_id"]),
                        "text": str(r.get("text") or ""),
                        "vector": (v / np.linalg.norm(v)).round(6).tolist(),
                        "metadata": {"title": str(r.get("title") or "")},
                    }
                )
                + "\n"
            )
    rt = Runtime(Settings(data_dir=work / "data-import"))
    rt.db  # noqa: B018
    opts = ImportOptions(
        collection="imp", model="bench-model", dimension=384, backup=False, verify_queries=10
    )
    plan = plan_import(rt, JsonlSource(path), opts)
    t0 = time.perf_counter()
    report = run_import(rt, plan, opts)
    seconds = time.perf_counter() - t0
    rt.close()
    return {
        "seconds": round(seconds, 2),
        "records": report.written,
        "records_per_s": round(report.written / seconds),
        "stages": {k: round(v, 2) for k, v in report.seconds.items()},
    }


def _load() -> str:
    return f"{os.getloadavg()[0]:.2f}"


def _run_tree(src: str, docs: int, only: str) -> dict[str, Any]:
    """One run of this module in a fresh process with ``src`` first on the path."""
    bench_root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=f"{src}{os.pathsep}{bench_root}")
    out = subprocess.run(
        [sys.executable, "-m", "bench.write_path", "--docs", str(docs), "--only", only],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(out.stdout)[only])


def paired(new_src: str, old_src: str, docs: int, only: str, rounds: int) -> dict[str, Any]:
    """``rounds`` pairs of runs, new and old alternating (new first in odd rounds)."""
    rows = []
    for r in range(rounds):
        order = [("new", new_src), ("old", old_src)]
        if r % 2:
            order.reverse()
        res = {"load_before": _load()}
        for label, src in order:
            res[label] = _run_tree(src, docs, only)
        res["load_after"] = _load()
        res["ratio"] = round(res["new"]["records_per_s"] / res["old"]["records_per_s"], 2)
        rows.append(res)
        print(
            f"round {r + 1}: new {res['new']['records_per_s']} old "
            f"{res['old']['records_per_s']} records/s, new/old {res['ratio']} "
            f"(load {res['load_before']} -> {res['load_after']}); new stages "
            f"{res['new'].get('stages', {})}, old stages {res['old'].get('stages', {})}",
            file=sys.stderr,
            flush=True,
        )
    ratios = [r["ratio"] for r in rows]
    return {"rounds": rows, "ratios": ratios, "median_ratio": statistics.median(ratios)}


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--docs", type=int, default=2000, help="SciFact abstracts to load")
    ap.add_argument("--only", choices=("ingest", "eval", "import"), action="append")
    ap.add_argument("--against", help="another tree's src/: alternate runs of both (paired)")
    ap.add_argument("--rounds", type=int, default=4, help="pairs of runs with --against")
    args = ap.parse_args()
    if args.against:
        only = args.only or ["import"]
        if len(only) != 1 or only[0] == "ingest":
            ap.error("--against takes one --only: eval or import")
        new_src = str(Path(__file__).resolve().parents[1] / "src")
        result = paired(new_src, args.against, args.docs, only[0], args.rounds)
        print(json.dumps({"docs": args.docs, only[0]: result}, indent=2))
        return
    work = Path(tempfile.mkdtemp(prefix="ragstore-write-path-"))
    folder = work / "docs"
    folder.mkdir()
    write_scifact(folder, args.docs)
    result: dict[str, Any] = {"docs": args.docs}
    only = args.only or ["ingest", "eval", "import"]
    if "ingest" in only:
        result["ingest"] = bench_ingest(work, folder)
    if "eval" in only:
        result["eval"] = bench_eval(work, args.docs)
    if "import" in only:
        result["import"] = bench_import(work, args.docs)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
