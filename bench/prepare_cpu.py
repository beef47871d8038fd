"""CPU spent reading, parsing and chunking files (``ragstore.ingest.prepare.prepare``), and
a digest of everything it produced, so that two trees can be shown to prepare the same.

Each corpus is prepared file by file exactly as an ingest prepares it (one process, the
default model's tokenizer). The CPU time (``time.process_time``: robust to other load on
the machine) is reported per chunk for ``--passes`` passes: ``cold``, the first, as a
fresh process meets new text (the word cache learning its vocabulary), and ``warm``, the
fastest of the others, as a long load runs once it has seen its vocabulary (SciFact's
44k words are all known after a few thousand files of the 100k scale corpus); a later
pass must prepare exactly what the first did. ``--dump`` writes one digest per file: the
document record (source, title, format, content hash, size, metadata, and the parse
recipe) and every chunk's fields. ``--compare`` reports any file whose digest differs
between two dumps (say, one made on main's tree, one on a branch's).

    PYTHONPATH=src python -m bench.prepare_cpu --dump /tmp/new.json
    PYTHONPATH=/other/tree/src python -m bench.prepare_cpu --dump /tmp/old.json
    python -m bench.prepare_cpu --compare /tmp/old.json /tmp/new.json

Corpora: ``scale`` (the first ``--scale-files`` Markdown files of the scale corpus, written
as ``bench/scale.py`` writes them), ``nodejs`` (the 64 long Markdown files of the Node.js API
docs), ``scifact`` (the SciFact corpus as ``bench/peers`` writes it: one ``.txt`` a
document), ``formats`` (long Markdown, text, HTML, PDF, DOCX and Python files built from
SciFact abstracts as ``bench/parse_bench.py`` builds them, and the test fixtures).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parents[1] / "shared" / "data"
if not SHARED.exists():
    SHARED = Path("/work/shared/data")


def _scale_files(n: int, work: Path) -> list[Path]:
    """The first ``n`` files of the scale corpus, as ``bench.scale`` writes them (the same
    records and seeded shuffle, so the same texts), written under ``work`` once."""
    import random

    from bench.scale import _document, _records

    folder = work / f"scale-{n}"
    if not folder.exists():  # written once: the digests hold each file's path and mtime
        part = work / f"scale-{n}.part"
        part.mkdir(parents=True, exist_ok=True)
        records, rng = _records(), random.Random(7)
        for j in range(n):
            (part / f"doc{j:07d}.md").write_text(_document(j, records, rng), encoding="utf-8")
        part.rename(folder)
    return sorted(folder.glob("*.md"))


def _scifact_files(work: Path) -> list[Path]:
    from bench.peers.corpus import load_scifact, write_files

    folder = work / "scifact"
    if not folder.exists():  # written once: the digests hold each file's path and mtime
        write_files(load_scifact(SHARED / "scifact"), folder)
    return sorted(folder.glob("*.txt"))


def _format_files(work: Path, docs: int) -> list[Path]:
    from bench.parse_bench import corpora
    from bench.scifact import records

    folder = work / f"formats-{docs}"
    if not folder.exists():  # written once (a DOCX holds the time it was made)
        with tempfile.TemporaryDirectory() as tmp:
            built = corpora(records(docs), Path(tmp))
        folder.mkdir(parents=True)
        for name, data in built.values():
            (folder / name).write_bytes(data)
    out = sorted(p for p in folder.iterdir() if p.is_file())
    fixtures = ROOT / "tests" / "fixtures" / "mixed"
    out.extend(sorted(p for p in fixtures.rglob("*") if p.is_file()))
    return out


def _digest(prepared: Any) -> dict[str, Any]:
    def canon(value: Any) -> str:
        return json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)

    out: dict[str, Any] = {"unchanged": prepared.unchanged, "error": repr(prepared.error)}
    rec = prepared.record
    if rec is not None:
        fields = dataclasses.asdict(rec)
        fields["parsed"] = (
            [hashlib.sha256(rec.parsed).hexdigest(), json.loads(zlib.decompress(rec.parsed))]
            if rec.parsed is not None
            else None
        )
        out["record"] = hashlib.sha256(canon(fields).encode()).hexdigest()
        out["language"] = rec.metadata.get("language")
    chunks = [dataclasses.asdict(c) for c in prepared.chunks]
    out["chunks"] = len(chunks)
    out["tokens"] = sum(c["token_count"] for c in chunks)
    out["chunk_digest"] = hashlib.sha256(canon(chunks).encode()).hexdigest()
    return out


def run(corpora: dict[str, Callable[[], list[Path]]], passes: int) -> dict[str, Any]:
    from ragstore.embedding.registry import load_embedder, resolve_spec
    from ragstore.ingest.prepare import Job, prepare
    from ragstore.ingest.service import Item

    spec = resolve_spec("all-MiniLM-L6-v2")
    embedder = load_embedder(spec, device="cpu")
    job = Job(embedder, spec.max_tokens, 256 << 20, {})
    report: dict[str, Any] = {}
    for name, make in corpora.items():
        files = make()
        items = [Item(source=str(f), path=f, label=str(f)) for f in files]
        digests: dict[str, Any] = {}
        times: list[float] = []
        chunks = 0
        for n in range(passes):
            t0 = time.process_time()
            out = [prepare(job, item, None) for item in items]
            times.append(time.process_time() - t0)
            got = {p.source: _digest(p) for p in out}
            if n and got != digests:  # a warm cache must not change anything
                raise SystemExit(f"{name}: pass {n + 1} prepared differently from pass 1")
            digests = got
            chunks = sum(len(p.chunks) for p in out)
        cold, warm = times[0], min(times[1:], default=times[0])
        report[name] = {
            "files": len(items),
            "chunks": chunks,
            "cpu_s": [round(t, 3) for t in times],
            "cpu_ms_per_chunk": {
                "cold": round(1000 * cold / max(1, chunks), 4),
                "warm": round(1000 * warm / max(1, chunks), 4),
            },
            "digests": digests,
        }
        print(
            f"{name:8s} files {len(items):6d} chunks {chunks:7d} cpu ms/chunk cold "
            f"{1000 * cold / max(1, chunks):.4f} warm {1000 * warm / max(1, chunks):.4f}",
            flush=True,
        )
    return report


def compare(a: dict[str, Any], b: dict[str, Any]) -> int:
    bad = 0
    for name in sorted(a.keys() | b.keys()):
        if name not in a or name not in b:
            print(f"{name}: only in one dump")
            bad += 1
            continue
        da, db = a[name]["digests"], b[name]["digests"]
        diff = [s for s in sorted(da.keys() | db.keys()) if da.get(s) != db.get(s)]
        for s in diff[:10]:
            print(f"{name}: {s}\n  old {da.get(s)}\n  new {db.get(s)}")
        bad += len(diff)
        ta, tb = a[name]["cpu_ms_per_chunk"], b[name]["cpu_ms_per_chunk"]
        print(
            f"{name:8s} files {len(da):6d} differ {len(diff):4d}  cpu ms/chunk "
            + "  ".join(
                f"{k} {ta[k]:.4f} -> {tb[k]:.4f} ({ta[k] / tb[k]:.2f}x)" for k in ("cold", "warm")
            )
        )
    return 1 if bad else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dump", type=Path, help="write timings and digests here")
    ap.add_argument("--compare", type=Path, nargs=2, metavar=("OLD", "NEW"))
    ap.add_argument("--corpora", default="scale,nodejs,scifact,formats")
    ap.add_argument("--scale-files", type=int, default=3000)
    ap.add_argument("--format-docs", type=int, default=300)
    ap.add_argument(
        "--work", type=Path, default=Path("/tmp/prepare-cpu"), help="corpora written here, once"
    )
    ap.add_argument(
        "--passes",
        type=int,
        default=3,
        help="passes over each corpus: the first with the word cache cold (a fresh process "
        "over new text), the fastest of the others warm (a long load, once its vocabulary "
        "is seen)",
    )
    args = ap.parse_args()
    if args.compare:
        old, new = (json.loads(p.read_text()) for p in args.compare)
        return compare(old, new)
    args.work.mkdir(parents=True, exist_ok=True)
    all_corpora: dict[str, Callable[[], list[Path]]] = {
        "scale": lambda: _scale_files(args.scale_files, args.work),
        "nodejs": lambda: sorted((SHARED / "nodejs-api" / "docs").glob("*.md")),
        "scifact": lambda: _scifact_files(args.work),
        "formats": lambda: _format_files(args.work, args.format_docs),
    }
    report = run({k: all_corpora[k] for k in args.corpora.split(",")}, args.passes)
    if args.dump:
        args.dump.write_text(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
