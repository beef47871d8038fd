"""What parsing binary formats in the helper process costs (``parsing.sandbox``).

Builds PDF and DOCX files from SciFact abstracts (``--per-file`` abstracts each, one
abstract a page), then parses every file in this process (``RAGSTORE_PARSE_TIMEOUT_S=0``)
and through the helper (the default), alternating rounds so that both see the same
machine, and reports milliseconds a file for each and their ratio. The helper's start (once
per process) is timed apart.

    python -m bench.parse_isolation --files 200 --per-file 1 4 --rounds 3
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from tests.fixtures.builders import pdf_bytes, write_docx

from bench.parse_bench import _wrap
from bench.scifact import records
from ragstore.parsing import sandbox

LIMIT_S = 300.0


def _files(per_file: int, count: int, tmp: Path) -> dict[str, list[bytes]]:
    recs = records(per_file * count)
    groups = [recs[i * per_file : (i + 1) * per_file] for i in range(count)]
    pdfs = [pdf_bytes([[r["title"][:90], "", *_wrap(r["text"])] for r in g]) for g in groups]
    docxs = [
        write_docx(
            tmp / f"d{i}.docx", title="SciFact", sections=[(r["title"], [r["text"]]) for r in g]
        ).read_bytes()
        for i, g in enumerate(groups)
    ]
    return {"pdf": pdfs, "docx": docxs}


def _pass(fmt: str, files: list[bytes], limit: float) -> float:
    t0 = time.perf_counter()
    for i, data in enumerate(files):
        sandbox.parse_file(data, f"f{i}.{fmt}", fmt, limit)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--per-file", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    t0 = time.perf_counter()
    sandbox.parse_file(pdf_bytes([["start the helper"]]), "start.pdf", "pdf", LIMIT_S)
    print(f"helper start and first file: {time.perf_counter() - t0:.3f} s")
    print("| files | format | bytes a file | in process, ms a file | helper, ms a file | ratio |")
    print("|---|---|---|---|---|---|")
    for per_file in args.per_file:
        with tempfile.TemporaryDirectory() as tmp:
            corpus = _files(per_file, args.files, Path(tmp))
        for fmt, files in corpus.items():
            inside: list[float] = []
            helper: list[float] = []
            for _ in range(args.rounds):
                inside.append(_pass(fmt, files, 0.0))
                helper.append(_pass(fmt, files, LIMIT_S))
            a, b = min(inside) / len(files) * 1e3, min(helper) / len(files) * 1e3
            size = sum(map(len, files)) // len(files)
            print(
                f"| {len(files)} × {per_file} abstract(s) | {fmt} | {size:,} | {a:.2f} | "
                f"{b:.2f} | {b / a:.2f}× |"
            )


if __name__ == "__main__":
    main()
