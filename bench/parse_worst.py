"""Text files just under the in-process size (``LARGE_TEXT_BYTES``) built to be slow to parse.

Text files below ``ragstore.parsing.sandbox.LARGE_TEXT_BYTES`` are detected, parsed and
chunked in the ingesting process, with no time limit; this times each step for inputs
meant to be slow there: deep nesting, many unclosed tags, tiny elements, lines with no
spaces, and text aimed at our own regular expressions (format sniffing, Markdown comments,
the chunker's sentence ends). One row a file: detect, parse and chunk seconds, and the
outcome (blocks and chunks, or the error's code).

    python -m bench.parse_worst                 # every input
    python -m bench.parse_worst --only html_nested_div md_comments --size 65536

A row of more than a second or two is a file that holds an ingest worker that long.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

from ragstore.chunking import chunk_document
from ragstore.embedding.registry import load_embedder, resolve_spec
from ragstore.errors import RagstoreError
from ragstore.parsing.registry import detect_format
from ragstore.parsing.sandbox import LARGE_TEXT_BYTES, parse_file


def _fill(unit: str, size: int, head: str = "", tail: str = "") -> str:
    """``head`` + ``unit`` repeated + ``tail``, just under ``size`` bytes."""
    n = max(1, (size - len(head) - len(tail)) // max(1, len(unit.encode())))
    return head + unit * n + tail


def corpus(size: int) -> dict[str, tuple[str, Callable[[], str]]]:
    """Input name -> (file name, its text builder); each text is under ``size`` bytes."""
    half = size // 2
    return {
        # format sniffing and Markdown's comment-only blocks: a run of comments then no match
        "sniff_comments_30": ("a.txt", lambda: "<!---->" * 30 + "x"),
        "md_comments_30": ("a.md", lambda: "<!---->" * 30 + "x\n"),
        "html_comments": ("a.html", lambda: _fill("<!---->", size, "<html><body>", "x")),
        "html_nested_div": ("a.html", lambda: _fill("<div>", size, "<html><body>", "x")),
        "html_nested_b": ("a.html", lambda: _fill("<b>", size, "<html><body>", "x")),
        "html_unclosed_p": ("a.html", lambda: _fill("<p>a", size, "<html><body>")),
        "html_tiny_spans": ("a.html", lambda: _fill("<i>a</i>", size, "<html><body><p>")),
        "html_nested_ul": ("a.html", lambda: _fill("<ul><li>a", size, "<html><body>")),
        "html_nested_table": ("a.html", lambda: _fill("<table><tr><td>", size, "<html><body>")),
        "html_wide_table": (
            "a.html",
            lambda: _fill("<td>a", size, "<html><body><table><tr>"),
        ),
        "html_long_word": ("a.html", lambda: _fill("a", size, "<html><body><p>")),
        "md_nested_quote": ("a.md", lambda: _fill(">", size, "", " a\n")),
        "md_nested_list": ("a.md", lambda: "".join("  " * i + "- a\n" for i in range(400))),
        "md_wide_table": ("a.md", lambda: "|" + "a|" * (half // 2) + "\n|" + "-|" * (half // 2)),
        "md_emphasis": ("a.md", lambda: _fill("*a", size)),
        "md_brackets": ("a.md", lambda: _fill("[", size)),
        "md_backticks": ("a.md", lambda: _fill("`a", size)),
        "md_long_word": ("a.md", lambda: _fill("a", size)),
        "md_tiny_paragraphs": ("a.md", lambda: _fill("a\n\n", size)),
        "code_js_braces": ("a.js", lambda: _fill("{", size)),
        "code_py_parens": ("a.py", lambda: _fill("(", size)),
        "code_py_defs": ("a.py", lambda: _fill("def f():\n pass\n", size)),
        "code_c_long_line": ("a.c", lambda: _fill("a", size)),
        "code_js_regexy": ("a.js", lambda: _fill("/a", size)),
        "text_long_word": ("a.txt", lambda: _fill("a", size)),
        "text_dots": ("a.txt", lambda: _fill(".", size)),
        "text_sentence_closers": ("a.txt", lambda: _fill(".)", size)),
        "text_short_lines": ("a.txt", lambda: _fill("a.\n", size)),
        "text_table_rules": ("a.txt", lambda: _fill("|-", size)),
        "notebook_cells": (
            "a.ipynb",
            lambda: json.dumps(
                {"cells": [{"cell_type": "markdown", "source": "a"}] * (size // 48), "nbformat": 4}
            ),
        ),
        "notebook_nested": ("a.ipynb", lambda: "[" * (size - 1)),
    }


def run(
    name: str, file_name: str, text: str, counter: object, max_tokens: int, args_timeout: float
) -> dict[str, object]:
    data = text.encode()
    row: dict[str, object] = {"input": name, "bytes": len(data)}
    t0 = time.perf_counter()
    try:
        fmt = detect_format(file_name, data)
        t1 = time.perf_counter()
        parsed = parse_file(data, file_name, fmt, args_timeout)  # block count checked too
        t2 = time.perf_counter()
        chunks = chunk_document(parsed, counter, max_tokens)  # type: ignore[arg-type]
        t3 = time.perf_counter()
        row.update(detect_s=t1 - t0, parse_s=t2 - t1, chunk_s=t3 - t2)
        row["outcome"] = f"{len(parsed.blocks)} blocks, {len(chunks)} chunks"
    except RagstoreError as exc:
        row["outcome"] = f"{exc.code}"
    row["total_s"] = round(time.perf_counter() - t0, 3)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=LARGE_TEXT_BYTES - 1024)
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--model", default="all-MiniLM-L6-v2")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument(
        "--timeout", type=float, default=300.0, help="RAGSTORE_PARSE_TIMEOUT_S (0: all in process)"
    )
    args = ap.parse_args()
    counter = load_embedder(resolve_spec(args.model), device="cpu")
    for name, (file_name, build) in corpus(args.size).items():
        if args.only and name not in args.only:
            continue
        row = run(name, file_name, build(), counter, args.max_tokens, args.timeout)
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}))


if __name__ == "__main__":
    main()
