"""What careless users feed ``ragstore ingest``: files in other encodings and line endings,
damaged or hostile DOCX archives. Each file is either read correctly or fails alone with
one clear error; the rest of the run is stored."""

from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ragstore.errors import (
    BinaryFileError,
    CorruptDocumentError,
    DecodeError,
    ImportSourceError,
    InputError,
)
from ragstore.imports.files import JsonlSource, NumpySource
from ragstore.ingest import ingest_paths
from ragstore.parsing import parse_bytes
from ragstore.parsing.ooxml import MAX_ARCHIVE_MEMBERS
from ragstore.runtime import Runtime
from ragstore.store import Store
from tests.conftest import run_cli
from tests.fixtures.builders import epub_book, write_docx

_BODY = "Widgets are small.\n\nGadgets are larger than widgets.\n"


def _docx_with(tmp_path: Path, document_xml: bytes, *, compress: bool = False) -> bytes:
    """A real DOCX whose ``word/document.xml`` is replaced by ``document_xml``."""
    real = write_docx(tmp_path / "real.docx", title="t", sections=[("S", ["x"])])
    out = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(real) as src, zipfile.ZipFile(out, "w", method) as dst:
        for info in src.infolist():
            body = document_xml if info.filename == "word/document.xml" else src.read(info)
            dst.writestr(info.filename, body)
    return out.getvalue()


def test_a_docx_with_broken_xml_fails_alone(rt: Runtime, tmp_path: Path) -> None:
    broken = b'<?xml version="1.0"?><w:document xmlns:w="urn:w"><w:body><w:p><w:t>cut off'
    (tmp_path / "broken.docx").write_bytes(_docx_with(tmp_path, broken))
    (tmp_path / "real.docx").unlink()
    (tmp_path / "good.md").write_text("# Good\n\nKittens sleep all day.\n")
    report = ingest_paths(rt, [tmp_path], collection="docx-xml")
    by_name = {Path(o.source).name: o for o in report.outcomes}
    assert by_name["good.md"].status == "added"
    assert by_name["broken.docx"].code == "corrupt_document"
    assert "broken.docx: damaged DOCX (word/document.xml" in (by_name["broken.docx"].error or "")


def test_a_docx_zip_bomb_is_refused_before_it_is_unpacked(tmp_path: Path) -> None:
    ns = b'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'
    xml = b"<w:document " + ns + b"><w:body><w:p><w:r><w:t>" + b"A" * (300 << 20)
    data = _docx_with(tmp_path, xml + b"</w:t></w:r></w:p></w:body></w:document>", compress=True)
    assert len(data) < 1 << 20  # a 300 MiB part in well under 1 MiB on disk
    with pytest.raises(CorruptDocumentError, match=r"bomb.docx: unpacks to \d+ bytes"):
        parse_bytes(data, "bomb.docx")


def _padded(archive: bytes, members: int) -> bytes:
    """``archive`` with empty members added until it holds ``members`` in all."""
    out = io.BytesIO(archive)
    with zipfile.ZipFile(out, "a") as z:
        for i in range(members - len(z.infolist())):
            z.writestr(f"pad/{i}", b"")
    return out.getvalue()


def test_an_archive_of_too_many_members_is_refused_from_its_directory(
    rt: Runtime, tmp_path: Path
) -> None:
    real = write_docx(tmp_path / "real.docx", title="t", sections=[("S", ["Kittens nap."])])
    too_many = MAX_ARCHIVE_MEMBERS + 1
    (tmp_path / "many.docx").write_bytes(_padded(real.read_bytes(), too_many))
    (tmp_path / "many.epub").write_bytes(_padded(epub_book(), too_many))
    (tmp_path / "fine.epub").write_bytes(_padded(epub_book(), 2000))  # a big illustrated book
    report = ingest_paths(rt, [tmp_path], collection="zip-members")
    by_name = {Path(o.source).name: o for o in report.outcomes}
    assert by_name["real.docx"].status == "added" and by_name["fine.epub"].status == "added"
    for name, fmt in (("many.docx", "DOCX"), ("many.epub", "EPUB")):
        assert by_name[name].code == "corrupt_document"
        assert by_name[name].error == str(tmp_path / name) + (
            f": holds {too_many} files in its archive, over the {MAX_ARCHIVE_MEMBERS} "
            f"a {fmt} may hold (not a real document, or one padded with empty entries); "
            f"open it in {'Word or LibreOffice' if fmt == 'DOCX' else 'Calibre or Sigil'} "
            "and save a copy, or split it"
        )


@pytest.mark.parametrize(
    ("encoding", "bom"),
    [("utf-16-le", b"\xff\xfe"), ("utf-16-be", b"\xfe\xff"), ("utf-8", b"\xef\xbb\xbf")],
)
def test_text_with_a_byte_order_mark_is_decoded(encoding: str, bom: bytes) -> None:
    doc = parse_bytes(bom + _BODY.encode(encoding), "notes.txt")
    assert [b.text for b in doc.blocks] == [
        "Widgets are small.",
        "Gadgets are larger than widgets.",
    ]


def test_utf16_without_a_byte_order_mark_is_named() -> None:
    with pytest.raises(DecodeError, match=r"notes.txt: looks like UTF-16 without a byte-order"):
        parse_bytes(_BODY.encode("utf-16-le"), "notes.txt")


@pytest.mark.parametrize("newline", ["\r", "\r\n"])
def test_markdown_with_old_mac_or_windows_line_endings(newline: str) -> None:
    text = "# Title\n\nPara one.\n\n## Sub\n\nPara two.\n".replace("\n", newline)
    doc = parse_bytes(text.encode(), "notes.md")
    assert [(b.type.value, b.text) for b in doc.blocks] == [
        ("heading", "Title"),
        ("paragraph", "Para one."),
        ("heading", "Sub"),
        ("paragraph", "Para two."),
    ]
    assert doc.blocks[-1].section_path == ("Title", "Sub")


def test_a_nul_past_the_binary_sniff_is_refused_before_embedding() -> None:
    data = b"# Notes\n\n" + b"word " * 2000 + b"\x00 and more\n"
    with pytest.raises(BinaryFileError, match=r"notes.md: holds a NUL character at character"):
        parse_bytes(data, "notes.md")


def test_a_file_name_that_is_not_utf8_fails_alone(rt: Runtime, tmp_path: Path) -> None:
    bad = os.fsdecode(b"caf\xe9.md")  # a Latin-1 name: not valid UTF-8
    (tmp_path / bad).write_text("# Cafe\n\nCoffee and cake.\n")
    (tmp_path / "good.md").write_text("# Good\n\nKittens sleep all day.\n")
    report = ingest_paths(rt, [tmp_path], collection="names")
    assert [(Path(o.source).name, o.status, o.code) for o in report.outcomes] == [
        ("caf\\xe9.md", "failed", "invalid_encoding"),
        ("good.md", "added", None),
    ]
    assert "caf\\xe9.md: the file name is not valid UTF-8" in (report.failed[0].error or "")
    json.dumps(asdict(report), default=str).encode()  # the report prints as it is


def test_an_empty_collection_name_is_refused_not_taken_as_the_default(
    rt: Runtime, tmp_path: Path
) -> None:
    (tmp_path / "a.md").write_text("# A\n\nalpha\n")
    with pytest.raises(InputError, match="the collection name is empty"):
        ingest_paths(rt, [tmp_path], collection="")


_RECORD = '{"id": "a", "text": "alpha", "vector": [0.5, 0.5]}\n'


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_RECORD.encode("utf-16"), r"rows.jsonl: the file is UTF-16, not UTF-8; re-save it"),
        (
            _RECORD.encode() + '{"id": "b", "text": "caf\xe9"}\n'.encode("latin-1"),
            r"rows.jsonl line 2: invalid UTF-8 at byte 75; re-save the file as UTF-8",
        ),
    ],
    ids=["utf16", "latin1-line-2"],
)
def test_an_import_file_that_is_not_utf8_is_named(
    tmp_path: Path, data: bytes, message: str
) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_bytes(data)
    with pytest.raises(ImportSourceError, match=message):
        list(JsonlSource(path).records())


def test_an_import_file_that_cannot_be_read_is_one_error(
    cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """``/proc/self/mem`` answers EIO even to root, as a file without read permission
    answers EACCES to its user: the import ended with the ``OSError``'s traceback."""
    args = ("import", "/proc/self/mem", "--format", "jsonl", "-c", "unreadable-import")
    capsys.readouterr()
    assert run_cli(*args, "--model", "m1", "--dimension", "2") == 66
    err = capsys.readouterr().err
    assert "error[file_unreadable]: /proc/self/mem: cannot read: Input/output error" in err
    assert "Traceback" not in err


def test_import_files_saved_with_a_utf8_bom_are_read(tmp_path: Path) -> None:
    (tmp_path / "rows.jsonl").write_bytes(_RECORD.encode("utf-8-sig"))
    assert [r.id for r in JsonlSource(tmp_path / "rows.jsonl").records()] == ["a"]
    # two such files joined with cat: the second BOM opens a later line
    second = _RECORD.replace('"a"', '"b"').encode("utf-8-sig")
    (tmp_path / "rows.jsonl").write_bytes(_RECORD.encode("utf-8-sig") + second)
    assert [r.id for r in JsonlSource(tmp_path / "rows.jsonl").records()] == ["a", "b"]
    np.save(tmp_path / "m.npy", np.array([[0.5, 0.5]], dtype=np.float32))
    (tmp_path / "m.csv").write_bytes("id,text\r\nb,beta\r\n".encode("utf-8-sig"))
    records = list(NumpySource(tmp_path / "m.npy").records())
    assert [(r.id, r.text) for r in records] == [("b", "beta")]
    # two CSV files saved with one joined with cat: the BOM was part of the id "\ufeffc",
    # and the second file's header row a record "id"
    np.save(tmp_path / "m.npy", np.array([[0.5, 0.5]] * 2, dtype=np.float32))
    (tmp_path / "m.csv").write_bytes("id,text\r\nb,beta\r\n\ufeffc,gamma\r\n".encode("utf-8-sig"))
    records = list(NumpySource(tmp_path / "m.npy").records())
    assert [(r.id, r.text) for r in records] == [("b", "beta"), ("c", "gamma")]
    (tmp_path / "m.csv").write_bytes("id,text\nb,beta\n\ufeffid,text\nc,gamma\n".encode())
    with pytest.raises(ImportSourceError, match=r"m\.csv line 3: the header row again \(CSV"):
        list(NumpySource(tmp_path / "m.npy").records())


@pytest.mark.parametrize(
    ("texts", "ids", "message"),
    [
        ("one text", None, r"texts is one string, not a list of texts; pass \[text\]"),
        (["ok \ud800 text"], None, r"texts\[0\] holds a lone surrogate \(U\+D800\) at character 3"),
        (["fine"], ["\udcff"], r"ids\[0\] holds a lone surrogate \(U\+DCFF\) at character 0"),
    ],
    ids=["one-string", "surrogate-text", "surrogate-id"],
)
def test_store_add_texts_refuses_what_is_not_a_list_of_unicode_texts(
    rt: Runtime, texts: Any, ids: list[str] | None, message: str
) -> None:
    with pytest.raises(InputError, match=message):
        Store.from_runtime(rt).add_texts("texts-in", texts, ids=ids)


def test_store_add_document_with_a_lone_surrogate_is_invalid_input(rt: Runtime) -> None:
    with pytest.raises(InputError, match=r"notes.md: the text holds a lone surrogate"):
        Store.from_runtime(rt).add_document("texts-in", "notes.md", "# T\n\nbad \udc80 byte")


def test_store_ingest_of_one_path_string_ingests_that_path(rt: Runtime, tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# A\n\nalpha apples\n")
    out = Store.from_runtime(rt).ingest("one-path", str(tmp_path / "a.md"))
    assert [(Path(d["source"]).name, d["status"]) for d in out["data"]] == [("a.md", "added")]


def test_terminal_control_characters_in_names_are_printed_visibly() -> None:
    from ragstore.cli.output import escape

    name = "/docs/evil\x1b[2J\x07\x9b.md: the file is empty [red]x[/]\nnext line"
    assert escape(name) == (
        "/docs/evil\\x1b[2J\\x07\\x9b.md: the file is empty \\[red]x\\[/]\nnext line"
    )


def test_a_pipe_or_a_dangling_link_given_by_name_says_what_it_is(
    rt: Runtime, tmp_path: Path
) -> None:
    os.mkfifo(tmp_path / "pipe.md")
    (tmp_path / "link.md").symlink_to("gone.md")
    report = ingest_paths(rt, [tmp_path / "pipe.md", tmp_path / "link.md"], collection="odd")
    by_name = {Path(o.source).name: o for o in report.outcomes}
    assert by_name["pipe.md"].code == "file_unreadable"
    assert "pipe.md: not a regular file or folder" in (by_name["pipe.md"].error or "")
    assert by_name["link.md"].code == "path_not_found"
    assert "link.md: a symbolic link to gone.md, which does not exist" in (
        by_name["link.md"].error or ""
    )


def test_a_path_that_cannot_be_looked_at_fails_alone(rt: Runtime, tmp_path: Path) -> None:
    """A named path whose stat fails other than "missing" (here a name too long for the
    file system; a folder on the way without search permission is the same for a user
    who is not root), and a link in a folder that leads to one: ``Path.is_file()`` raised
    ``OSError`` out of the whole ingest, a traceback and nothing stored, --sync too."""
    long = tmp_path / ("n" * 300 + ".md")
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "good.md").write_text("# Good\n\nKittens sleep all day.\n")
    (folder / "far.md").symlink_to(long)
    for sync in (False, True):
        report = ingest_paths(rt, [long, folder], collection="too-long", sync=sync)
        by_name = {Path(o.source).name: o for o in report.outcomes}
        assert set(by_name) == {long.name, "good.md", "far.md"}
        assert by_name["far.md"].status == "skipped"  # a link in a folder: said, not read
        assert by_name[long.name].status == "failed"
        assert by_name[long.name].code == "file_unreadable"
        assert f"{long.name}: cannot look at it: File name too long" in (
            by_name[long.name].error or ""
        )
        assert by_name["good.md"].status == ("unchanged" if sync else "added")


def test_a_link_loop_given_by_name_fails_alone(rt: Runtime, tmp_path: Path) -> None:
    """``a.md -> b.md -> a.md`` named on the command line: ``Path.resolve()`` raised
    ``RuntimeError`` on it (a traceback, nothing stored), with ``--sync`` as well."""
    (tmp_path / "a.md").symlink_to("b.md")
    (tmp_path / "b.md").symlink_to("a.md")
    (tmp_path / "good.md").write_text("# Good\n\nKittens sleep all day.\n")
    for sync in (False, True):
        report = ingest_paths(
            rt, [tmp_path / "a.md", tmp_path / "good.md"], collection="loops", sync=sync
        )
        by_name = {Path(o.source).name: o for o in report.outcomes}
        assert by_name["a.md"].status == "failed"
        assert by_name["a.md"].code == "path_not_found"
        assert "a.md: a symbolic link that loops" in (by_name["a.md"].error or "")
        assert by_name["good.md"].status == ("unchanged" if sync else "added")


def test_documents_show_of_a_link_loop_is_not_found(
    cli_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "good.md").write_text("# Good\n\nKittens sleep all day.\n")
    assert run_cli("ingest", str(tmp_path / "good.md"), "-c", "loops-cli") == 0
    (tmp_path / "a.md").symlink_to("b.md")
    (tmp_path / "b.md").symlink_to("a.md")
    capsys.readouterr()
    assert run_cli("documents", "show", str(tmp_path / "a.md"), "-c", "loops-cli") == 66
    assert "error[document_not_found]" in capsys.readouterr().err
