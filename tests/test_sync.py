"""Incremental folder sync and bad input on the real database with the real model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from psycopg import sql

from ragstore.config import Settings
from ragstore.ingest import ingest_paths
from ragstore.runtime import Runtime
from tests.conftest import run_cli
from tests.fixtures.builders import pdf_bytes, write_inventory_docx


def _stored(rt: Runtime, collection: str) -> dict[str, tuple[int, int]]:
    """file name -> (chunks, vectors) of each stored document."""
    coll = rt.collection(collection)
    with rt.db.connection() as conn:
        rows = conn.execute(
            sql.SQL(
                "SELECT d.source, count(c.id), count(e.chunk_id) FROM documents d"
                " LEFT JOIN chunks c ON c.document_id = d.id"
                " LEFT JOIN {} e ON e.chunk_id = c.id"
                " WHERE d.collection_id = %s GROUP BY d.source"
            ).format(sql.Identifier(coll.table)),
            (coll.id,),
        ).fetchall()
    return {Path(r[0]).name: (int(r[1]), int(r[2])) for r in rows}


def _texts(rt: Runtime, collection: str, name: str) -> list[str]:
    coll = rt.collection(collection)
    with rt.db.connection() as conn:
        rows = conn.execute(
            "SELECT c.text FROM chunks c JOIN documents d ON d.id = c.document_id"
            " WHERE d.collection_id = %s AND d.source LIKE %s ORDER BY c.ordinal",
            (coll.id, f"%/{name}"),
        ).fetchall()
    return [r[0] for r in rows]


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    (root / "sub").mkdir(parents=True)
    (root / "a.md").write_text("# Alpha\n\nApples ripen in autumn.\n")
    (root / "b.txt").write_text("Bananas grow in bunches called hands.\n")
    (root / "sub" / "c.py").write_text("def cherry():\n    return 'stone fruit'\n")
    return root


def test_sync_adds_replaces_skips_and_reports_vanished_files_without_removing_them(
    rt: Runtime, folder: Path
) -> None:
    first = ingest_paths(rt, [folder], "sync1", sync=True)
    assert first.count("added") == 3 and not first.failed
    (folder / "a.md").write_text("# Alpha\n\nApricots ripen in early summer.\n")
    (folder / "b.txt").unlink()
    (folder / "d.md").write_text("Dates grow on palms.\n")
    told: list[list[str]] = []
    report = ingest_paths(rt, [folder], "sync1", sync=True, on_vanished=told.append)
    status = {Path(o.source).name: o.status for o in report.outcomes}
    assert status == {"a.md": "updated", "c.py": "unchanged", "d.md": "added", "b.txt": "vanished"}
    assert told == [[str((folder / "b.txt").resolve())]]
    assert report.embedded == 2, "only the changed paragraph and the new file are embedded"
    stored = _stored(rt, "sync1")
    assert set(stored) == {"a.md", "b.txt", "c.py", "d.md"}, "kept without --prune"
    assert _texts(rt, "sync1", "a.md") == ["Alpha", "Apricots ripen in early summer."]
    assert stored["a.md"] == (2, 1), "old chunks and vectors replaced, heading has none"


def test_prune_reports_vanished_files_first_then_removes_them(rt: Runtime, folder: Path) -> None:
    ingest_paths(rt, [folder], "sync2", sync=True)
    (folder / "sub" / "c.py").unlink()
    (folder / "b.txt").unlink()
    seen_while_told: list[set[str]] = []

    def on_vanished(sources: list[str]) -> None:
        seen_while_told.append(set(_stored(rt, "sync2")))
        assert [Path(s).name for s in sources] == ["b.txt", "c.py"]

    report = ingest_paths(rt, [folder], "sync2", sync=True, prune=True, on_vanished=on_vanished)
    assert seen_while_told == [{"a.md", "b.txt", "c.py"}], "reported before anything changed"
    assert sorted(Path(o.source).name for o in report.outcomes if o.status == "removed") == [
        "b.txt",
        "c.py",
    ]
    assert set(_stored(rt, "sync2")) == {"a.md"}
    coll = rt.collection("sync2")
    with rt.db.connection() as conn:
        orphans = conn.execute(
            sql.SQL(
                "SELECT count(*) FROM {} e LEFT JOIN chunks c ON c.id = e.chunk_id"
                " WHERE c.id IS NULL"
            ).format(sql.Identifier(coll.table))
        ).fetchone()
    assert orphans == (0,)


def test_prune_keeps_a_file_that_came_back_and_was_stored_again(rt: Runtime, folder: Path) -> None:
    # the listing found b.txt gone; before the prune, it is written again (an editor that
    # deletes and recreates, a build that regenerates it) and another ingest stores it,
    # which is told "updated": the prune must not delete what is on disk and acknowledged
    ingest_paths(rt, [folder], "sync5", sync=True)
    (folder / "b.txt").unlink()
    told: list[str] = []

    def meanwhile(sources: list[str]) -> None:
        (folder / "b.txt").write_text("Blueberries are picked in summer.\n")
        other = ingest_paths(rt, [folder / "b.txt"], "sync5")
        told.extend(o.status for o in other.outcomes)

    report = ingest_paths(rt, [folder], "sync5", sync=True, prune=True, on_vanished=meanwhile)
    assert told == ["updated"]
    assert report.count("removed") == 0
    assert "b.txt" in _stored(rt, "sync5")
    assert _texts(rt, "sync5", "b.txt") == ["Blueberries are picked in summer."]


def test_two_prunes_at_once_report_each_removal_once(rt: Runtime, folder: Path) -> None:
    # another sync with --prune runs between this one's listing and its prune: it removes
    # b.txt and says so; this one found nothing left to remove, and said "removed" too
    ingest_paths(rt, [folder], "sync_two_prunes", sync=True)
    (folder / "b.txt").unlink()
    other: list[str] = []

    def meanwhile(sources: list[str]) -> None:
        report = ingest_paths(rt, [folder], "sync_two_prunes", sync=True, prune=True)
        other.extend(Path(o.source).name for o in report.outcomes if o.status == "removed")

    report = ingest_paths(
        rt, [folder], "sync_two_prunes", sync=True, prune=True, on_vanished=meanwhile
    )
    assert other == ["b.txt"]
    assert report.count("removed") == 0, [(o.source, o.status) for o in report.outcomes]
    assert set(_stored(rt, "sync_two_prunes")) == {"a.md", "c.py"}


def test_sync_of_one_folder_leaves_documents_of_other_folders_alone(
    rt: Runtime, folder: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "o.md").write_text("Oranges are citrus fruit.\n")
    ingest_paths(rt, [folder, other], "sync3")
    (other / "o.md").unlink()
    report = ingest_paths(rt, [folder], "sync3", sync=True, prune=True)
    assert report.count("removed") == 0
    assert "o.md" in _stored(rt, "sync3")


def test_cli_sync_prune_lists_removals_before_the_summary(
    cli_env: dict[str, str], folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli("ingest", str(folder), "-c", "sync4", "--sync") == 0
    (folder / "b.txt").unlink()
    capsys.readouterr()
    assert run_cli("ingest", str(folder), "-c", "sync4", "--sync") == 0
    kept = capsys.readouterr().err
    assert "vanished (kept without --prune): 1 document(s) no longer on disk" in kept
    assert "1 vanished" in kept and "--sync --prune to remove them" in kept
    assert run_cli("ingest", str(folder), "-c", "sync4", "--sync", "--prune") == 0
    err = capsys.readouterr().err
    assert err.index("removing: 1 document(s)") < err.index("b.txt") < err.index("1 removed")
    assert run_cli("ingest", str(folder), "-c", "sync4", "--prune") == 64  # a usage error
    assert "error[usage]: Invalid value for '--prune': it only works with --sync" in (
        capsys.readouterr().err
    )


def test_bad_inputs_are_skipped_with_a_reason_and_the_rest_completes(
    settings: Settings, tmp_path: Path
) -> None:
    root = tmp_path / "bad"
    root.mkdir()
    (root / "good.md").write_text("# Good\n\nThis file is fine and gets stored.\n")
    (root / "corrupt.pdf").write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog")
    (root / "locked.pdf").write_bytes(pdf_bytes([["secret"]], password="pw"))
    (root / "fake.docx").write_bytes(b"not a zip at all")
    (root / "huge.txt").write_bytes(b"x" * 300_000)  # one line, no breaks, over the limit
    (root / "mixed.txt").write_bytes("café\n".encode() + "crème\n".encode("latin-1"))
    write_inventory_docx(root / "real.docx")
    small = settings.model_copy(update={"max_file_bytes": 200_000})
    with Runtime(small) as rt:
        report = ingest_paths(rt, [root], "bad-input")
        codes = {Path(o.source).name: o.code for o in report.failed}
        assert codes == {
            "corrupt.pdf": "corrupt_document",
            "locked.pdf": "encrypted_document",
            "fake.docx": "corrupt_document",
            "huge.txt": "payload_too_large",
            "mixed.txt": "invalid_encoding",
        }
        errors = {Path(o.source).name: o.error or "" for o in report.failed}
        assert errors["huge.txt"].endswith(
            "huge.txt: 300000 bytes is over the limit of "
            "200000 bytes; raise RAGSTORE_MAX_FILE_BYTES to "
            "ingest it"
        )
        assert "mixed encodings" in errors["mixed.txt"]
        assert "not a zip archive" in errors["fake.docx"]
        assert report.count("added") == 2
        assert set(_stored(rt, "bad-input")) == {"good.md", "real.docx"}
        with rt.db.connection() as conn:
            metas = dict(
                conn.execute(
                    "SELECT format, metadata FROM documents d JOIN collections c"
                    " ON c.id = d.collection_id WHERE c.name = 'bad-input'"
                ).fetchall()
            )
        assert metas["docx"]["language"] == "English"
        assert metas["docx"]["format"] == "docx" and metas["docx"]["filename"] == "real.docx"
        assert {"path", "size_bytes", "modified_at"} <= set(metas["markdown"])


def test_a_source_that_cannot_be_looked_at_is_not_called_gone(tmp_path: Path) -> None:
    """Only a source known to be absent is vanished (and pruned): one whose path cannot be
    looked at (here a name too long for the file system; a folder without search
    permission is the same for a non-root user) is not, and raises nothing."""
    from ragstore.files import gone_from_disk

    (tmp_path / "here.md").write_text("x")
    (tmp_path / "file").write_text("x")
    assert not gone_from_disk(str(tmp_path / "here.md"))
    assert gone_from_disk(str(tmp_path / "gone.md"))
    assert gone_from_disk(str(tmp_path / "file" / "under-a-file.md"))  # parent not a folder
    assert not gone_from_disk(str(tmp_path / ("n" * 300) / "x.md"))  # ENAMETOOLONG


def test_sync_prunes_a_file_replaced_by_a_link_or_a_pipe(
    rt: Runtime, folder: Path, tmp_path: Path
) -> None:
    """A synced file replaced by a link (to another file of the folder, or to one outside)
    or by a pipe is no longer ingested under its name: the walk takes a link's target (or
    skips it) and passes over a pipe. Its stored document, old content and all, was kept,
    neither reported nor pruned; it is now vanished, and removed with --prune."""
    outside = tmp_path / "elsewhere.md"
    outside.write_text("Elderberries are picked elsewhere.\n")
    (folder / "e.md").write_text("Endives are bitter leaves.\n")
    ingest_paths(rt, [folder], "sync6", sync=True)
    (folder / "a.md").unlink()
    (folder / "a.md").symlink_to(folder / "b.txt")
    (folder / "e.md").unlink()
    (folder / "e.md").symlink_to(outside)
    (folder / "sub" / "c.py").unlink()
    os.mkfifo(folder / "sub" / "c.py")
    report = ingest_paths(rt, [folder], "sync6", sync=True)
    status = sorted((Path(o.source).name, o.status) for o in report.outcomes)
    assert status == [
        ("a.md", "vanished"),
        ("b.txt", "unchanged"),
        ("c.py", "vanished"),
        ("e.md", "skipped"),
        ("e.md", "vanished"),
    ]
    report = ingest_paths(rt, [folder], "sync6", sync=True, prune=True)
    assert sorted(Path(o.source).name for o in report.outcomes if o.status == "removed") == [
        "a.md",
        "c.py",
        "e.md",
    ]
    assert set(_stored(rt, "sync6")) == {"b.txt"}
    # the file back in place of the link: stored again under its name
    (folder / "a.md").unlink()
    (folder / "a.md").write_text("# Alpha\n\nApricots.\n")
    report = ingest_paths(rt, [folder], "sync6", sync=True, prune=True)
    assert report.count("added") == 1 and report.count("removed") == 0
    assert set(_stored(rt, "sync6")) == {"a.md", "b.txt"}


def test_a_stored_file_replaced_by_a_link_or_not_a_file_is_gone(tmp_path: Path) -> None:
    from ragstore.files import gone_from_disk

    tmp_path = tmp_path.resolve()  # a stored source is a real path
    (tmp_path / "real.md").write_text("x")
    (tmp_path / "link.md").symlink_to(tmp_path / "real.md")
    (tmp_path / "dir.md").mkdir()
    (tmp_path / "linked").symlink_to(tmp_path, target_is_directory=True)
    assert not gone_from_disk(str(tmp_path / "real.md"))
    assert gone_from_disk(str(tmp_path / "link.md"))
    assert gone_from_disk(str(tmp_path / "dir.md"))
    assert gone_from_disk(str(tmp_path / "linked" / "real.md"))  # a folder on its way


def test_sync_of_a_folder_holding_the_data_dir_keeps_uploaded_documents(
    rt: Runtime, tmp_path: Path
) -> None:
    """An upload (HTTP, ``Store.add_document``) is stored under ``<data dir>/uploads/<c>/``
    where no file is ever written: a ``--sync --prune`` of a folder holding the data dir
    (the home folder, with the default ``~/.local/share/ragstore``) found those sources
    "gone from disk" and deleted every uploaded document of the collection."""
    import ragstore.jobs  # noqa: F401  (imported first, ingest.documents' import loops)
    from ragstore.ingest.documents import NewDocument, add_documents

    rt.collection("sync7", create=True)
    staged = tmp_path / "staged"
    staged.write_text("# Upload\n\nUploaded through the API.\n")
    [outcome] = add_documents(rt, "sync7", [NewDocument("notes/up.md", staged)])
    assert outcome.status == "added"
    home = rt.settings.data_dir
    (home / "mine.md").write_text("A file of the user's own.\n")
    report = ingest_paths(rt, [home], "sync7", sync=True, prune=True)
    assert sorted((Path(o.source).name, o.status) for o in report.outcomes) == [
        ("mine.md", "added")
    ]
    assert set(_stored(rt, "sync7")) == {"up.md", "mine.md"}


def test_sync_of_a_named_file_replaced_by_a_link_removes_its_old_document(
    rt: Runtime, folder: Path, tmp_path: Path
) -> None:
    """A file named to --sync, stored, then replaced by a link: the link is followed (it
    was named) and its target stored under its own path; the file's old document was
    outside the sync's scope, kept with its old content and never reported."""
    target = tmp_path / "elsewhere.md"
    target.write_text("Elderberries are picked elsewhere.\n")
    named = folder / "a.md"
    ingest_paths(rt, [named], "sync8", sync=True)
    named.unlink()
    named.symlink_to(target)
    report = ingest_paths(rt, [named], "sync8", sync=True, prune=True)
    assert sorted((Path(o.source).name, o.status) for o in report.outcomes) == [
        ("a.md", "removed"),
        ("elsewhere.md", "added"),
    ]
    assert set(_stored(rt, "sync8")) == {"elsewhere.md"}


def test_a_sync_with_another_data_dir_keeps_uploads_and_texts(
    rt: Runtime, settings: Settings, tmp_path: Path
) -> None:
    """Uploads were told apart by the syncing process's own ``<data dir>/uploads/``: a
    ``--sync --prune`` run with another data dir than the server's (the CLI on the host
    of a containerised server, a Store of other settings) deleted every uploaded document
    under the folder it synced, and a text whose id reads as a path under it. Documents
    now carry their origin, and a sync looks at those of files only."""
    import ragstore.jobs  # noqa: F401  (imported first, ingest.documents' import loops)
    from ragstore.ingest.documents import NewDocument, add_documents
    from ragstore.ingest.texts import add_texts

    rt.collection("sync9", create=True)
    staged = tmp_path / "staged"
    staged.write_text("# Upload\n\nUploaded through the API.\n")
    [outcome] = add_documents(rt, "sync9", [NewDocument("notes/up.md", staged)])
    assert outcome.status == "added"
    home = rt.settings.data_dir
    as_path = str(home.resolve() / "texts" / "t.md")
    add_texts(rt, "sync9", ["A text whose id reads as a path."], ids=[as_path])
    (home / "mine.md").write_text("A file of the user's own.\n")
    other = settings.model_copy(update={"data_dir": tmp_path / "elsewhere"})
    with Runtime(other) as cli:
        report = ingest_paths(cli, [home], "sync9", sync=True, prune=True)
    assert sorted((Path(o.source).name, o.status) for o in report.outcomes) == [
        ("mine.md", "added")
    ]
    assert set(_stored(rt, "sync9")) == {"up.md", "t.md", "mine.md"}
    with rt.db.connection() as conn:
        origins = conn.execute(
            "SELECT source, origin FROM documents d JOIN collections c"
            " ON c.id = d.collection_id WHERE c.name = 'sync9' ORDER BY origin"
        ).fetchall()
    assert [(Path(s).name, o) for s, o in origins] == [
        ("mine.md", "file"),
        ("t.md", "text"),
        ("up.md", "upload"),
    ]


def test_prune_of_a_folder_left_empty_keeps_its_documents_and_fails_saying_why(
    cli_env: dict[str, str],
    settings: Settings,
    folder: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A folder given to ``--sync --prune`` that holds no file (a share not mounted leaves
    its mount point empty) removed every document stored from it, exiting 0: the prune
    keeps them, says why, and exits 1; a folder beside it with files is pruned as ever."""
    other = tmp_path / "other"
    other.mkdir()
    (other / "o.md").write_text("Oranges are citrus fruit.\n")
    (other / "p.md").write_text("Pears ripen off the tree.\n")
    assert run_cli("ingest", str(folder), str(other), "-c", "sync_empty", "--sync") == 0
    for entry in [folder / "a.md", folder / "b.txt", folder / "sub" / "c.py"]:
        entry.unlink()
    (folder / "sub").rmdir()
    (other / "p.md").unlink()
    capsys.readouterr()
    args = ("ingest", str(folder), str(other), "-c", "sync_empty", "--sync", "--prune")
    assert run_cli(*args) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert f"{folder}: the folder holds no file to ingest, and --prune would remove all 3" in err
    assert "they were kept" in err and "3 vanished" in err and "1 removed" in err
    assert "run again with --sync --prune" not in err
    with Runtime(settings) as rt:
        assert set(_stored(rt, "sync_empty")) == {"a.md", "b.txt", "c.py", "o.md"}
