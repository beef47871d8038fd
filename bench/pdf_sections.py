"""PDF parse time with title detection (PDFs without an outline) against the parser before
it, in one run, and the titles it finds.

Each PDF is parsed ``--repeat`` times by both parsers, alternating, and the median times
are compared as a ratio. The parser before is a copy of ``parsing/pdf.py`` from an
earlier commit, loaded from a file::

    git show 3bee449:src/ragstore/parsing/pdf.py > /tmp/pdf_before.py
    python -m bench.pdf_sections --before /tmp/pdf_before.py --synthetic-pages 300 \\
        /usr/share/doc/libtasn1-doc/libtasn1.pdf

``--synthetic-pages N`` adds a long report built from SciFact abstracts (two a page,
each under a 15 pt numbered title, an 18 pt part title every ten pages, 11 pt text) with
no outline. ``--ignore-outline`` lists the titles found as if a PDF had no outline (to
compare them with its bookmarks).

``--markdown FILE.md ...`` prints each Markdown file to a PDF with Chromium (HTML from
markdown-it, the browser's default heading styles, its date/title header and URL/page
footer, no outline; the text in 11 pt sans-serif, or with ``--default-styles`` in the
browser's default 12 pt serif with code at 13/16 of the size around it, titles too) and
also counts how many of its h1-h4 headings are found as titles, how many of those at
their Markdown level, and how many titles are no heading of the file. h1-h3 are set
larger than the text, h4 bold at its size set apart (a title one level below the
others); h5 and h6 are set smaller than the text and are not titles::

    python -m bench.pdf_sections --before /tmp/pdf_before.py --repeat 3 [--default-styles] \
        --markdown ../shared/data/nodejs-api/docs/{path,dns,events,buffer,stream,fs}.md
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import statistics
import subprocess
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from markdown_it import MarkdownIt
from pypdf import PdfReader
from tests.fixtures.builders import PdfLine, pdf_bytes

from bench.scifact import records
from ragstore.models import ChunkType, ParsedDocument
from ragstore.parsing.pdf import _outline, parse_pdf
from ragstore.parsing.pdf_headings import find_headings
from ragstore.parsing.pdf_lines import PdfLine as PdfTextLine
from ragstore.parsing.pdf_lines import page_collector


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("pdf_before", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"{path}: cannot be loaded as a module")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def synthetic_report(pages: int) -> bytes:
    docs = records(2 * pages)
    out: list[list[PdfLine]] = []
    for p in range(pages):
        page: list[PdfLine] = []
        if p % 10 == 0:
            part = docs[(p // 10) % len(docs)]["title"].split()[:3]
            page.append((f"Part {p // 10 + 1}: {' '.join(part)}", 18))
        for j in range(2):
            n = 2 * p + j
            r = docs[n % len(docs)]
            page.append((f"{n + 1} {r['title'][:70]}", 15))
            page.extend(textwrap.wrap(r["text"], 95)[:20])
        out.append(page)
    return pdf_bytes(out)


def _time(parse: Callable[[bytes, str], ParsedDocument], data: bytes) -> float:
    t = time.perf_counter()
    parse(data, "bench.pdf")
    return time.perf_counter() - t


def _titles_without_outline(data: bytes) -> dict[int, list[tuple[int, str]]]:
    reader = PdfReader(io.BytesIO(data))
    lines: list[list[PdfTextLine]] = []
    for number, page in enumerate(reader.pages, start=1):
        collect = page_collector(number)
        page.extract_text(visitor_text=collect)
        collect.end_line()
        lines.append(collect.lines)
    return find_headings(lines)


def print_markdown(
    md: Path, out: Path, *, default_styles: bool = False
) -> tuple[bytes, list[tuple[int, str]]]:
    """``md`` printed to a PDF by Chromium, and its headings as (level, text)."""
    style = "" if default_styles else "<style>body{font-family:sans-serif;font-size:11pt}</style>"
    parser = MarkdownIt("commonmark").enable("table")
    source = md.read_text(encoding="utf-8")
    tokens = parser.parse(source)
    truth = [
        (int(tok.tag[1]), _norm(tokens[i + 1].content))
        for i, tok in enumerate(tokens)
        if tok.type == "heading_open"
    ]
    page = out / f"{md.stem}.html"
    page.write_text(
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{md.name}</title>{style}</head><body>{parser.render(source)}</body></html>",
        encoding="utf-8",
    )
    pdf = out / f"{md.stem}.pdf"
    subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--print-to-pdf={pdf}",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return pdf.read_bytes(), truth


def _norm(text: str) -> str:
    return " ".join(text.replace("`", "").split()).lower()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pdfs", nargs="*", type=Path)
    ap.add_argument("--before", type=Path, required=True, help="an earlier parsing/pdf.py")
    ap.add_argument("--synthetic-pages", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--ignore-outline", action="store_true")
    ap.add_argument("--show", type=int, default=8, help="titles to print per PDF")
    ap.add_argument("--markdown", nargs="*", type=Path, default=[])
    ap.add_argument("--default-styles", action="store_true", help="print without a stylesheet")
    args = ap.parse_args()
    printed = Path(tempfile.mkdtemp(prefix="pdf-sections-"))
    truths: dict[str, list[tuple[int, str]]] = {}
    before: Callable[[bytes, str], ParsedDocument] = _load(args.before).parse_pdf
    inputs = [(str(p), p.read_bytes()) for p in args.pdfs]
    for md in args.markdown:
        data, truths[str(md)] = print_markdown(md, printed, default_styles=args.default_styles)
        inputs.append((str(md), data))
    if args.synthetic_pages:
        inputs.append(
            (f"synthetic {args.synthetic_pages} pages", synthetic_report(args.synthetic_pages))
        )
    for name, data in inputs:
        reader = PdfReader(io.BytesIO(data))
        bookmarks = sum(len(v) for v in _outline(reader).values())
        old: list[float] = []
        new: list[float] = []
        for _ in range(args.repeat):
            old.append(_time(before, data))
            new.append(_time(parse_pdf, data))
        a, b = statistics.median(old), statistics.median(new)
        doc = parse_pdf(data, name)
        heads = [blk for blk in doc.blocks if blk.type is ChunkType.HEADING]
        print(
            f"{name}: {len(reader.pages)} pages, {bookmarks} bookmarks, {len(heads)} headings; "
            f"parse median of {args.repeat}: before {a:.3f} s, after {b:.3f} s, "
            f"after/before {b / a:.2f}"
        )
        if name in truths:
            want = {t for lv, t in truths[name] if lv <= 4}
            leveled = {(lv, t) for lv, t in truths[name] if lv <= 4}
            every = {t for _, t in truths[name]}
            got = [_norm(blk.text) for blk in heads]
            at_level = leveled & {(blk.level, _norm(blk.text)) for blk in heads}
            false = [t for t in got if t not in every]
            print(
                f"  Markdown h1-h4: {len(want)}, found {len(want & set(got))}, "
                f"{len(at_level)} at their level; "
                f"titles that are no heading of the file: {len(false)} {false[:3]}"
            )
        if args.ignore_outline and bookmarks:
            found = _titles_without_outline(data)
            titles = [(p, lv, t) for p in sorted(found) for lv, t in found[p]]
            print(f"  without its outline: {len(titles)} titles")
            for p, lv, t in titles[: args.show]:
                print(f"    p{p} L{lv} {t}")
        else:
            for blk in heads[: args.show]:
                print(f"    p{blk.page} L{blk.level} {blk.text}")


if __name__ == "__main__":
    main()
