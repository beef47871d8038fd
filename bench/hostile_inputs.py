"""Files built to hurt a parser, ingested one at a time: what each costs and how it ends.

Each file is a few hundred bytes to a few megabytes written to break something: nesting
that recurses (Markdown quotes and lists, HTML divs, YAML aliases, notebook JSON),
expansion (YAML "billion laughs" front matter, XML entities, a zip whose member unpacks
to 120 MB, a DOCX of 200,000 empty members, a 31 KB deck listing one slide of 2 MB of
text 1,500 times, a 2 KB book whose spine lists one chapter 2,000 times), sizes at the
edges (an 8 MB word, 200,000 code lines, 50,000 headings), text that is not text (NUL
bytes, bad UTF-8, random bytes named .pdf/.docx/.epub/.pptx) and Word's wrappers around
text (nested tables, content controls, 300 of them one inside another). Every file goes
through ``ragstore ingest FILE`` in a process of its own, so the peak memory (``ru_maxrss``
of the child) and the wall time are that file's, model load included (about 10 s and
650 MB on this machine, the floor of every row). The outcome is the ingest's own line.

    python -m bench.hostile_inputs --work /tmp/hostile            # every file
    python -m bench.hostile_inputs --work /tmp/hostile --only front_bomb.md nested_tables.docx

A row that takes minutes or gigabytes is a way to take a server down with one upload.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

from tests.fixtures.builders import repeated_chapter_epub, repeated_slide_pptx

W = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'


def _bomb_front_matter() -> str:
    levels = ["a: &a [" + ", ".join(['"lol"'] * 9) + "]"]
    for prev, name in zip("abcdefg", "bcdefgh", strict=True):
        levels.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    return "---\n" + "\n".join(levels) + "\n---\n# T\n\nbody\n"


def _entity_bomb() -> str:
    ents = ['<!ENTITY lol "lol">']
    for i in range(2, 8):
        prev = "lol" if i == 2 else f"lol{i - 1}"
        ents.append(f'<!ENTITY lol{i} "' + f"&{prev};" * 10 + '">')
    return (
        f'<?xml version="1.0"?><!DOCTYPE lolz [{"".join(ents)}]>'
        "<html><body><p>&lol7;</p></body></html>"
    )


def _docx(build: Callable[[object], None]) -> bytes:
    import docx

    document = docx.Document()
    build(document)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def _nested_tables(document: object) -> None:
    cell = document.add_table(rows=1, cols=1).cell(0, 0)  # type: ignore[attr-defined]
    for _ in range(60):
        cell = cell.add_table(rows=1, cols=1).cell(0, 0)
    cell.text = "the only text, sixty tables deep"


def _content_control(document: object) -> None:
    from docx.oxml import parse_xml

    body = document.element.body  # type: ignore[attr-defined]
    xml = (
        f"<w:sdt {W}><w:sdtPr/><w:sdtContent><w:p><w:r><w:t>inside a content control"
        "</w:t></w:r></w:p></w:sdtContent></w:sdt>"
    )
    body[-1].addprevious(parse_xml(xml))


def _deep_content_controls(document: object) -> None:
    from docx.oxml import OxmlElement

    # built element by element: parsed from text, libxml2 refuses it past 256 levels
    outer = parent = OxmlElement("w:sdt")
    for depth in range(300):
        content = OxmlElement("w:sdtContent")
        parent.append(content)
        parent = OxmlElement("w:sdt") if depth < 299 else OxmlElement("w:p")
        content.append(parent)
    run, text = OxmlElement("w:r"), OxmlElement("w:t")
    text.text = "300 content controls deep"
    run.append(text)
    parent.append(run)
    document.element.body[-1].addprevious(outer)  # type: ignore[attr-defined]


def _zip_bomb() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        body = b"<w:p/>" * 20_000_000  # 120 MB of XML in about 120 KB
        z.writestr("word/document.xml", b"<w:document " + W.encode() + b"><w:body>" + body)
    return out.getvalue()


def _many_members() -> bytes:
    out = io.BytesIO(_docx(lambda document: None))
    with zipfile.ZipFile(out, "a") as z:
        for i in range(200_000):
            z.writestr(f"word/media/{i}", b"")
    return out.getvalue()


def corpus() -> dict[str, Callable[[], bytes | str]]:
    """File name -> its content (built when asked: a few are large)."""
    return {
        "nested_quote.md": lambda: ">" * 200_000 + " hi\n",
        "nested_list.md": lambda: "".join("  " * i + "- x\n" for i in range(3000)),
        "nested_emph.md": lambda: "*" * 100_000 + "a" + "*" * 100_000,
        "brackets.md": lambda: "[" * 100_000 + "x" + "]" * 100_000,
        "table_5000_columns.md": lambda: (
            "|" + "a|" * 5000 + "\n|" + "-|" * 5000 + "\n" + ("|" + "b|" * 5000 + "\n") * 200
        ),
        "one_8mb_word.md": lambda: "word" * 2_000_000,
        "headings_50000.md": lambda: "".join(f"{'#' * (1 + i % 6)} h{i}\n" for i in range(50_000)),
        "front_bomb.md": _bomb_front_matter,
        "front_self_reference.md": lambda: "---\na: &a [*a]\n---\n# T\n\nbody\n",
        "nul_bytes.md": lambda: "# Title\x00\n\nbody\x00text\n",
        "bad_utf8.txt": lambda: b"abc \xed\xa0\x80 def\n",
        "nested_div.html": lambda: "<div>" * 200_000 + "hello" + "</div>" * 200_000,
        "entity_bomb.xhtml": _entity_bomb,
        "notebook_deep.ipynb": lambda: "[" * 100_000 + "]" * 100_000,
        "code_200000_lines.py": lambda: "x = 1\n" * 200_000,
        "random.pdf": lambda: os.urandom(5000),
        "random.docx": lambda: b"PK\x03\x04" + os.urandom(3000),
        "random.epub": lambda: b"PK\x03\x04" + os.urandom(3000),
        "random.pptx": lambda: os.urandom(3000),
        "zip_bomb.docx": _zip_bomb,
        "many_members.docx": _many_members,
        "nested_tables.docx": lambda: _docx(_nested_tables),
        "content_control.docx": lambda: _docx(_content_control),
        "repeated_slide.pptx": lambda: repeated_slide_pptx(400_000, 1500),
        "repeated_chapter.epub": lambda: repeated_chapter_epub(2000, 3700),
        "deep_content_controls.docx": lambda: _docx(_deep_content_controls),
    }


# the CLI, then its own peak and its reaped children's (the parse helper) on stderr
_CLI = """import resource, sys
try:
    from ragstore.cli import main
    main(sys.argv[1:])
finally:
    who = (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    peak = max(resource.getrusage(w).ru_maxrss for w in who)
    print(f"peak_kb {peak}", file=sys.stderr)
"""


def run_one(path: Path, work: Path, timeout: float) -> dict[str, object]:
    """``ragstore ingest PATH`` in a fresh data directory: seconds, peak MB, its outcome."""
    data = work / "data"
    shutil.rmtree(data, ignore_errors=True)
    env = {**os.environ, "RAGSTORE_DATA_DIR": str(data)}
    t0 = time.perf_counter()
    peak_kb = 0
    try:
        done = subprocess.run(
            [sys.executable, "-c", _CLI, "ingest", str(path), "--collection", "hostile"],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        status, out = done.returncode, (done.stdout + done.stderr).strip().splitlines()
    except subprocess.TimeoutExpired:
        status, out = None, [f"still running after {timeout:.0f} s (stopped)"]
    seconds = time.perf_counter() - t0
    for line in out:
        if line.startswith("peak_kb "):
            peak_kb = int(line.split()[1])
    lines = [line.strip() for line in out if line.strip() and not line.startswith("peak_kb ")]
    outcome = next((line for line in lines if line.startswith("failed")), None)
    return {
        "file": path.name,
        "bytes": path.stat().st_size,
        "seconds": round(seconds, 1),
        "peak_mb": round(peak_kb / 1024),
        "exit": status,
        "outcome": outcome or (lines[-1] if lines else ""),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--only", nargs="*", help="file names of the corpus to run")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds a file may take")
    args = ap.parse_args()
    files = corpus()
    names = args.only or list(files)
    unknown = sorted(set(names) - set(files))
    if unknown:
        ap.error(f"not in the corpus: {', '.join(unknown)} (known: {', '.join(files)})")
    folder = args.work / "files"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in names:
        content = files[name]()
        path = folder / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        row = run_one(path, args.work, args.timeout)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(json.dumps({"files": len(rows), "seconds": sum(float(r["seconds"]) for r in rows)}))


if __name__ == "__main__":
    main()
