"""A second long-document question set, held out: five whole books of the Rust
documentation that rustup installs (``share/doc/rust/html/<book>/print.html``, each book on
one page; MIT/Apache-2.0), converted to Markdown, with 43 questions
(``bench/longdoc_sets/rust-books.tsv``, the nodejs-api set's format and scoring rule).

    python -m bench.rust_books /tmp/rustdocs        # builds /tmp/rustdocs/{docs,questions.tsv}
    ragstore eval-sections /tmp/rustdocs --json --per-question

The nodejs-api set's first half tuned chunking and section ranking; this set was written
afterwards (2026-12-02) without looking at ragstore's answers, to see whether those choices
hold on documents nobody tuned on: tutorials and reference chapters of another project,
five files of 22k-210k words (476k in all). Nothing in ragstore may be tuned on it.

Each page goes through ragstore's own HTML parser (navigation dropped, as ingest does) and
is written back as Markdown: headings as ``#`` lines of their level, code in fences longer
than any backtick run inside it, everything else as parsed. So the window baselines, which
read Markdown headings, and ragstore see the same text and the same headings. The books'
``print.html`` turn every chapter title into an ``<h1>``, so a chapter's sections sit one
level below its title and chapters are not nested under the book's parts.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
from pathlib import Path

from ragstore.models import ChunkType
from ragstore.parsing import parse_bytes

BOOKS = ("book", "cargo", "nomicon", "edition-guide", "rustdoc")
QUESTIONS = Path(__file__).resolve().parent / "longdoc_sets" / "rust-books.tsv"
_TICKS = re.compile(r"`+")


def default_html_dir() -> Path:
    """The rustup toolchain's HTML documentation (``RUST_DOC_HTML`` overrides it)."""
    if "RUST_DOC_HTML" in os.environ:
        return Path(os.environ["RUST_DOC_HTML"])
    home = Path(os.environ.get("RUSTUP_HOME", Path.home() / ".rustup"))
    # the stable toolchain's books first (the set was written on stable 1.95's)
    found = sorted(
        home.glob("toolchains/*/share/doc/rust/html"),
        key=lambda p: (not p.parents[3].name.startswith("stable"), str(p)),
    )
    if not found:
        raise SystemExit(f"no rustup documentation under {home}/toolchains; set RUST_DOC_HTML")
    return found[0]


def to_markdown(html: bytes, name: str) -> str:
    """A page as Markdown, block by block as ragstore's HTML parser reads it."""
    parts: list[str] = []
    for b in parse_bytes(html, name).blocks:
        if b.type is ChunkType.HEADING:
            parts.append("#" * min(max(b.level, 1), 6) + " " + " ".join(b.text.split()))
        elif b.type is ChunkType.CODE:
            fence = "`" * max(3, 1 + max((len(t) for t in _TICKS.findall(b.text)), default=0))
            parts.append(f"{fence}\n{b.text.rstrip()}\n{fence}")
        else:
            parts.append(b.text)
    return "\n\n".join(parts) + "\n"


def build(out: Path, html_dir: Path) -> list[tuple[str, int]]:
    """Write ``out/docs/<book>.md`` and ``out/questions.tsv``; (file, words) per book."""
    docs = out / "docs"
    docs.mkdir(parents=True, exist_ok=True)
    sizes = []
    for book in BOOKS:
        text = to_markdown((html_dir / book / "print.html").read_bytes(), f"{book}.html")
        (docs / f"{book}.md").write_text(text, encoding="utf-8")
        sizes.append((f"{book}.md", len(text.split())))
    shutil.copyfile(QUESTIONS, out / "questions.tsv")
    return sizes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--html", type=Path, default=None, help="rustup's share/doc/rust/html")
    args = ap.parse_args()
    for name, words in build(args.out, args.html or default_html_dir()):
        print(f"{name}\t{words} words")


if __name__ == "__main__":
    main()
