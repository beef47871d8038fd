"""End to end: the mixed fixture corpus (Markdown, HTML, PDF, DOCX, Python, Go, text)
ingested into the real database, then found by search, with context around the hits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragstore.ingest import IngestReport, ingest_paths
from ragstore.runtime import Runtime
from ragstore.search import search
from ragstore.search.context import parse_context, with_context
from tests.conftest import run_cli
from tests.fixtures.builders import (
    DOCX_TABLE_SENTENCE,
    EPUB_CHAPTER2_SENTENCE,
    PDF_PAGE3_PARAGRAPH,
    PPTX_NOTES_SENTENCE,
    REPORT_SAMPLING_SENTENCE,
    build_mixed_corpus,
    report_pdf,
)

COLLECTION = "mixed"


@pytest.fixture(scope="module")
def ingested(rt: Runtime, tmp_path_factory: pytest.TempPathFactory) -> IngestReport:
    corpus = build_mixed_corpus(tmp_path_factory.mktemp("mixed"))
    return ingest_paths(rt, [corpus], COLLECTION, metadata={"project": "e2e"})


def test_every_format_of_the_corpus_is_ingested(rt: Runtime, ingested: IngestReport) -> None:
    assert not ingested.failed
    assert sorted(Path(o.source).name for o in ingested.outcomes if o.status == "added") == [
        "billing.py",
        "coffee.html",
        "forecast.ipynb",
        "guide.md",
        "handbook.pdf",
        "inventory.docx",
        "keeper.epub",
        "notes.txt",
        "roadmap.pptx",
        "server.go",
    ]
    with rt.db.connection() as conn:
        rows = conn.execute(
            "SELECT d.format, d.metadata FROM documents d JOIN collections c"
            " ON c.id = d.collection_id WHERE c.name = %s",
            (COLLECTION,),
        ).fetchall()
    meta = {Path(m["path"]).name: (fmt, m) for fmt, m in rows}
    assert {name: fmt for name, (fmt, _) in meta.items()} == {
        "billing.py": "code",
        "coffee.html": "html",
        "forecast.ipynb": "notebook",
        "guide.md": "markdown",
        "handbook.pdf": "pdf",
        "inventory.docx": "docx",
        "keeper.epub": "epub",
        "notes.txt": "text",
        "roadmap.pptx": "pptx",
        "server.go": "code",
    }
    assert meta["billing.py"][1]["language"] == "python"
    assert meta["server.go"][1]["language"] == "go"
    assert meta["guide.md"][1]["language"] == "English"
    assert meta["guide.md"][1]["team"] == "facilities", "front matter is document metadata"
    assert meta["handbook.pdf"][1]["pages"] == 4
    assert all(m["project"] == "e2e" for _, m in meta.values())


def test_search_finds_a_sentence_inside_a_docx_table(rt: Runtime, ingested: IngestReport) -> None:
    hits = search(rt, "where are the spare turbine blades kept?", collection=COLLECTION, k=3)
    top = hits[0]
    assert Path(top.source).name == "inventory.docx"
    assert top.chunk_type == "table" and DOCX_TABLE_SENTENCE in top.text
    assert top.section_path == ["Inventory", "Reference"]
    assert top.metadata["columns"] == 2


def test_search_finds_a_books_chapter(rt: Runtime, ingested: IngestReport) -> None:
    hits = search(rt, "when does the keeper trim the wick?", collection=COLLECTION, k=3)
    assert Path(hits[0].source).name == "keeper.epub"
    # a short book's tiny sections share a chunk, which names the chapters it holds
    assert EPUB_CHAPTER2_SENTENCE in hits[0].text and "Summer" in hits[0].metadata["headings"]


def test_search_finds_a_slides_speaker_notes_with_its_slide(
    rt: Runtime, ingested: IngestReport
) -> None:
    hits = search(rt, "kept below minus eighteen degrees", collection=COLLECTION, k=3)
    assert Path(hits[0].source).name == "roadmap.pptx"
    assert PPTX_NOTES_SENTENCE in hits[0].text
    assert hits[0].section_path == ["Cold storage"] and hits[0].page == 2


def test_search_finds_a_notebooks_prose_and_code_but_not_its_outputs(
    rt: Runtime, ingested: IngestReport
) -> None:
    hits = search(rt, "when do ice cream orders peak?", collection=COLLECTION, k=3)
    assert Path(hits[0].source).name == "forecast.ipynb"
    # a short notebook's sections share a chunk, which names the subsection it holds
    assert hits[0].section_path[0] == "Warehouse demand forecast"
    assert "every July" in hits[0].text and "Seasonality" in hits[0].text
    code = search(
        rt, "resample orders by week", collection=COLLECTION, k=5, mode="fulltext", sections=False
    )
    assert any(h.source.endswith("forecast.ipynb") and "orders.resample" in h.text for h in code)
    # a run's outputs (a printed line, a plot's base64) are not the notebook's text
    assert search(rt, "checksum 7f3a", collection=COLLECTION, k=5, mode="fulltext") == []


def test_search_finds_a_function_in_a_code_file(rt: Runtime, ingested: IngestReport) -> None:
    hits = search(
        rt, "function that computes the VAT owed on an invoice", collection=COLLECTION, k=3
    )
    top = hits[0]
    assert Path(top.source).name == "billing.py"
    assert top.chunk_type == "code"
    assert top.text.startswith("def compute_invoice_tax(")
    assert top.metadata["symbol"] == "compute_invoice_tax"
    assert top.metadata["language"] == "python"


def test_search_finds_a_paragraph_on_page_3_of_a_pdf(rt: Runtime, ingested: IngestReport) -> None:
    hits = search(rt, "how much ice have glaciers in the Alps lost?", collection=COLLECTION, k=3)
    top = hits[0]
    assert Path(top.source).name == "handbook.pdf"
    assert top.page == 3 and top.chunk_type == "page_text"
    assert PDF_PAGE3_PARAGRAPH in " ".join(top.text.split())
    assert top.section_path == ["Ice"]


def test_context_n_adds_neighbouring_chunks_on_each_side(
    rt: Runtime, ingested: IngestReport
) -> None:
    hits = search(rt, "where are the spare turbine blades kept?", collection=COLLECTION, k=1)
    [hit] = with_context(rt, hits, 1)
    # the list and the quote before the table share one chunk; the table stands alone
    assert [c.chunk_type for c in hit.context] == ["paragraph", "table", "paragraph"]
    assert [c.is_hit for c in hit.context] == [False, True, False]
    assert [c.ordinal for c in hit.context] == [hit.ordinal - 1, hit.ordinal, hit.ordinal + 1]
    [alone] = with_context(rt, hits, 0)
    assert [c.chunk_id for c in alone.context] == [hit.chunk_id]


def test_context_section_returns_the_section_once_for_hits_that_share_it(
    rt: Runtime, ingested: IngestReport
) -> None:
    hits = search(
        rt,
        "spare parts store rules tickets damaged parts",
        collection=COLLECTION,
        k=10,
        mode="vector",
        sections=False,  # chunks alone: several of one section
    )
    by_section = search(
        rt,
        "spare parts store rules tickets damaged parts",
        collection=COLLECTION,
        k=10,
        mode="vector",
    )
    ref = [h for h in by_section if h.section_path == ["Inventory", "Reference"]]
    assert len(ref) == 1, "by default a section is ranked and returned once"
    docx_hits = [
        h
        for h in hits
        if Path(h.source).name == "inventory.docx" and h.section_path == ["Inventory", "Reference"]
    ]
    assert len(docx_hits) >= 2
    shown = with_context(rt, hits, "section")
    reference = [
        h
        for h in shown
        if Path(h.source).name == "inventory.docx" and h.section_path == ["Inventory", "Reference"]
    ]
    assert len(reference) == 1, "hits sharing a section are merged"
    section = reference[0]
    assert sorted([section.chunk_id, *section.merged_hits]) == sorted(h.chunk_id for h in docx_hits)
    assert sorted([ref[0].chunk_id, *ref[0].section_hits]) == sorted(h.chunk_id for h in docx_hits)
    assert [c.chunk_type for c in section.context] == [
        "heading",
        "paragraph",
        "table",
        "paragraph",
    ], "list and quote merged, table alone"
    assert section.context[0].text == "Reference"
    accounted = [i for h in shown for i in (h.chunk_id, *h.merged_hits)]
    assert sorted(accounted) == sorted(h.chunk_id for h in hits), "every hit exactly once"
    for h in shown:
        ids = [c.chunk_id for c in h.context]
        assert len(ids) == len(set(ids)) and h.chunk_id in ids
    sections = [(h.document_id, h.context[0].chunk_id) for h in shown]
    assert len(sections) == len(set(sections)), "no section returned twice"


def test_context_section_of_a_pdf_page_without_heading_stays_on_its_page(
    rt: Runtime, ingested: IngestReport
) -> None:
    hits = search(rt, "how much ice have glaciers in the Alps lost?", collection=COLLECTION, k=1)
    [hit] = with_context(rt, hits, "section")
    assert [(c.chunk_type, c.page) for c in hit.context] == [("heading", 3), ("page_text", 3)]


def test_search_returns_the_section_path_of_a_pdf_without_outline(
    rt: Runtime, tmp_path: Path
) -> None:
    (tmp_path / "report.pdf").write_bytes(report_pdf(detail=6))
    report = ingest_paths(rt, [tmp_path], "report-sections")
    assert not report.failed
    hits = search(
        rt,
        "when were the water samples drawn and how were they kept?",
        collection="report-sections",
        k=3,
    )
    top = hits[0]
    assert Path(top.source).name == "report.pdf" and top.page == 2
    assert REPORT_SAMPLING_SENTENCE in " ".join(top.text.split())
    assert top.section_path == ["Field station report", "2 Methods", "2.1 Sampling"]
    [hit] = with_context(rt, hits[:1], "section")
    assert [(c.chunk_type, c.page) for c in hit.context] == [("heading", 2), ("page_text", 2)]
    assert hit.context[0].text == "2.1 Sampling"


def test_invalid_context_is_refused() -> None:
    from ragstore.errors import InputError

    with pytest.raises(InputError, match="give a number of neighbouring chunks"):
        parse_context("paragraph")
    assert parse_context("Section") == "section" and parse_context("3") == 3


def test_cli_search_with_context(
    cli_env: dict[str, str], ingested: IngestReport, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert (
        run_cli(
            "search",
            "where are the spare turbine blades kept?",
            "-c",
            COLLECTION,
            "-k",
            "1",
            "--context",
            "section",
            "--json",
        )
        == 0
    )
    [hit] = json.loads(capsys.readouterr().out)
    assert hit["context_mode"] == "section"
    assert hit["context"][0]["chunk_type"] == "heading"
    assert any(c["is_hit"] and DOCX_TABLE_SENTENCE in c["text"] for c in hit["context"])
    assert run_cli("search", "turbine blades", "-c", COLLECTION, "-k", "1", "--context", "1") == 0
    out = capsys.readouterr().out
    assert "context of hit 1 (1):" in out and ">> [" in out
    assert run_cli("search", "x", "-c", COLLECTION, "--context", "lots") != 0
