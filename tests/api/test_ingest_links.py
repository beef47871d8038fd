"""A folder's walk stays inside the folder: a link in it that points elsewhere is reported,
not followed, by ``ragstore ingest``, ``Store.ingest`` and ``Client.ingest`` alike (a
followed one ingested, or uploaded to a server, a file from anywhere on the machine, and
``--sync`` never removed it). Real server on loopback, real database and model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ragstore import Client, Store
from ragstore.config import Settings
from ragstore.files import discover
from ragstore.ingest import ingest_paths
from ragstore.runtime import Runtime

SECRET = "The launch code of the reactor is swordfish."


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    """``docs/`` with a note, a link to that note, a link to a file outside and a link
    to a folder outside; the outside file holds a secret."""
    outside = tmp_path / "private"
    outside.mkdir()
    (outside / "secret.md").write_text(f"# Secret\n\n{SECRET}\n")
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "note.md").write_text("# Note\n\nCats sleep most of the day.\n")
    (docs / "sub" / "again.md").symlink_to(docs / "note.md")
    (docs / "secret.md").symlink_to(outside / "secret.md")
    (docs / "private").symlink_to(outside, target_is_directory=True)
    return docs


def test_discover_keeps_inside_links_and_reports_outside_ones(folder: Path) -> None:
    found = discover([folder])
    assert found.files == [(folder / "note.md").resolve()]
    assert found.missing == []
    assert found.outside == [(folder / "secret.md", (folder.parent / "private/secret.md"))]
    # named explicitly, a link is followed: the user chose it
    assert discover([folder / "secret.md"]).files == [(folder.parent / "private/secret.md")]
    # a folder given twice, or inside another given, is reported once
    assert discover([folder, folder, folder / "."]).outside == found.outside
    # the folder it points to is walked when it is given too: then nothing is reported
    both = discover([folder, folder.parent / "private"])
    assert both.outside == [] and len(both.files) == 2


def test_discover_gives_real_paths_for_a_folder_named_through_a_link_or_dots(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plain files are not resolved one by one: their path is the walked folder's real one
    joined with their name, the same as resolving them gives."""
    note = (folder / "note.md").resolve()
    alias = folder.parent / "alias"
    alias.symlink_to(folder, target_is_directory=True)
    monkeypatch.chdir(folder / "sub")
    for named in (alias, Path(".."), Path("../sub/..")):
        found = discover([named])
        assert found.files == [note], named
        assert [t for _, t in found.outside] == [folder.parent / "private/secret.md"]


def test_ingest_skips_a_link_out_of_the_folder(rt: Runtime, folder: Path) -> None:
    report = ingest_paths(rt, [folder], "links-cli")
    assert [(o.status, o.code) for o in report.outcomes] == [
        ("skipped", "link_outside_folder"),
        ("added", None),
    ]
    skipped = report.outcomes[0]
    assert skipped.error is not None
    assert str(folder / "secret.md") in skipped.error and "private/secret.md" in skipped.error
    assert "name the file itself" in skipped.error
    assert report.failed == []
    with rt.db.connection() as conn:
        sources = [
            r[0]
            for r in conn.execute(
                "SELECT d.source FROM documents d JOIN collections c ON c.id = d.collection_id"
                " WHERE c.name = 'links-cli'"
            )
        ]
        texts = conn.execute("SELECT count(*) FROM chunks WHERE text LIKE '%swordfish%'").fetchone()
    assert sources == [str((folder / "note.md").resolve())]
    assert texts == (0,)


def test_store_and_client_report_the_link_and_upload_nothing_of_it(
    settings: Settings, open_url: str, folder: Path
) -> None:
    with Store(settings=settings) as store:
        local = store.ingest("links-store", folder)
    with Client(open_url) as client:
        remote = client.ingest("links-client", [folder])
        for answer, name in ((local, "links-store"), (remote, "links-client")):
            assert answer["count"] == 1, answer
            assert [s["code"] for s in answer["skipped"]] == ["link_outside_folder"]
            assert answer["skipped"][0]["source"] == str(folder / "secret.md")
            hits = client.search(name, "reactor launch code", mode="fulltext")
            assert all("swordfish" not in h["text"] for h in hits["data"]), hits
        docs = client.list_documents("links-client")["data"]
    # the link inside the folder is its target, uploaded once; the secret not at all
    assert [Path(d["source"]).name for d in docs] == ["note.md"]


def test_an_upload_with_a_bad_file_says_what_it_stored(open_url: str, tmp_path: Path) -> None:
    """Documents are stored one by one, so a bad file does not undo the good ones: the
    error answer must say they are in (it read as "nothing stored", and the CLI, sending
    the files again one by one, reported them as unchanged)."""
    good = b"# Ferns\n\nFerns reproduce by spores, not seeds.\n"
    with Client(open_url) as client:
        with pytest.raises(Exception) as failed:
            client.upload(
                "partial", [("ferns.md", good), ("blob.md", b"\x00\x01\x02"), ("e.txt", b"")]
            )
        exc = failed.value
        problem = exc.problem  # type: ignore[attr-defined]
        assert exc.status == 415 and problem["code"] == "binary_file"  # type: ignore[attr-defined]
        assert "1 other file(s) of this upload were stored" in problem["detail"]
        assert [(d["name"], d["status"]) for d in problem["stored"]] == [("ferns.md", "added")]
        assert [(f["name"], f["code"]) for f in problem["failed"]] == [
            ("blob.md", "binary_file"),
            ("e.txt", "empty_document"),
        ]
        assert [d["name"] for d in client.list_documents("partial")["data"]] == ["ferns.md"]
        # every file failed: the first failure, and the lists say nothing was stored
        with pytest.raises(Exception) as none:
            client.upload("partial", [("blob2.md", b"\x00"), ("e2.txt", b"")])
        assert "stored" not in str(none.value)
        assert none.value.problem["stored"] == []  # type: ignore[attr-defined]
        assert len(none.value.problem["failed"]) == 2  # type: ignore[attr-defined]
        # one file: its error alone, as before
        with pytest.raises(Exception) as one:
            client.upload("partial", [("blob3.md", b"\x00")])
        assert "stored" not in one.value.problem  # type: ignore[attr-defined]


def test_the_remote_cli_counts_a_partial_batch_as_the_server_stored_it(
    open_url: str, tmp_path: Path
) -> None:
    from ragstore.cli.remote import ingest_remote

    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a.md").write_text("# A\n\nMosses have no roots.\n")
    (folder / "b.md").write_bytes(b"\x00binary")
    (folder / "c.md").write_text("# C\n\nLichens are fungi and algae together.\n")
    with Client(open_url) as client:
        result = ingest_remote(client, open_url, [folder], "mixed", {}, lambda *a: None)
    assert result.counts == {"added": 2, "failed": 1}, result
    assert [(f["document"], f["code"]) for f in result.failed] == [("mixed/b.md", "binary_file")]


def test_the_remote_cli_fails_an_unreadable_file_alone(open_url: str, tmp_path: Path) -> None:
    """A file that cannot be read (``/proc/self/mem`` answers EIO even to root) ended the
    whole ingest through the server with an ``OSError`` traceback; a local ingest fails
    it alone as ``file_unreadable``."""
    from ragstore.cli.remote import ingest_remote

    good = tmp_path / "good.md"
    good.write_text("# Good\n\nLiverworts grow in damp places.\n")
    with Client(open_url) as client:
        result = ingest_remote(
            client, open_url, [Path("/proc/self/mem"), good], "unreadable", {}, lambda *a: None
        )
    assert result.counts == {"added": 1, "failed": 1}, result
    [failed] = result.failed
    assert failed["code"] == "file_unreadable"  # named as the walk resolved it: /proc/PID/mem
    assert Path(str(failed["document"])).name == "mem"
    assert f"{failed['document']}: cannot read" in str(failed["detail"])


def test_the_remote_cli_says_what_a_named_path_is_as_a_local_ingest_does(
    open_url: str, tmp_path: Path
) -> None:
    """A link loop, a broken link or a pipe named to ``ingest`` through a server was
    reported as "no such file or directory"; it gets the local ingest's words now."""
    import os

    from ragstore.cli.remote import ingest_remote

    (tmp_path / "loop1").symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(tmp_path / "loop1")
    (tmp_path / "broken").symlink_to(tmp_path / "nowhere.md")
    os.mkfifo(tmp_path / "pipe")
    long = tmp_path / ("n" * 300)  # its stat fails: Path.is_file() raised out of discover
    named = [
        tmp_path / "loop1",
        tmp_path / "broken",
        tmp_path / "pipe",
        tmp_path / "gone.md",
        long,
    ]
    with Client(open_url) as client:
        result = ingest_remote(client, open_url, named, "named-paths", {}, lambda *a: None)
    got = {Path(str(f["document"])).name: (f["code"], str(f["detail"])) for f in result.failed}
    assert got["loop1"][0] == "path_not_found" and "loops" in got["loop1"][1]
    assert got["broken"][0] == "path_not_found" and "nowhere.md" in got["broken"][1]
    assert got["pipe"][0] == "file_unreadable" and "pipe" in got["pipe"][1]
    assert got[long.name][0] == "file_unreadable"
    assert "cannot look at it: File name too long" in got[long.name][1]
    assert got["gone.md"] == (
        "path_not_found",
        f"{tmp_path / 'gone.md'}: no such file or directory",
    )


def test_the_client_raises_ragstore_errors_for_files_it_cannot_read(
    open_url: str, tmp_path: Path
) -> None:
    """``Client.ingest`` and ``upload`` read the files here: a missing or unreadable one
    raised the bare ``OSError``, where ``Store.ingest`` raises ``path_not_found`` or
    ``file_unreadable`` (a caller's ``except RagstoreError`` missed it)."""
    from ragstore.errors import FileUnreadableError, PathNotFoundError

    with Client(open_url) as client:
        with pytest.raises(FileUnreadableError, match="cannot read"):
            client.ingest("unreadable-client", ["/proc/self/mem"])
        with pytest.raises(PathNotFoundError, match="no such file"):
            client.upload("unreadable-client", [tmp_path / "gone.md"])
        with pytest.raises(FileUnreadableError, match="too long"):  # was OSError from is_dir
            client.ingest("unreadable-client", [tmp_path / ("n" * 300 + ".md")])


def test_store_ingest_error_says_what_it_stored(settings: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a.md").write_text("# A\n\nHornworts are small plants.\n")
    (folder / "b.md").write_bytes(b"\x00binary")
    with Store(settings=settings) as store, pytest.raises(Exception) as failed:
        store.ingest("store-mixed", folder)
    exc = failed.value
    assert getattr(exc, "code", None) == "binary_file"
    assert "1 other file(s) were stored" in str(exc)
    members = exc.problem_members  # type: ignore[attr-defined]
    assert [(Path(d["source"]).name, d["status"]) for d in members["stored"]] == [("a.md", "added")]
    assert [(Path(f["name"]).name, f["code"]) for f in members["failed"]] == [
        ("b.md", "binary_file")
    ]


@pytest.fixture()
def locked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``docs/`` with a readable note and a subfolder ``locked/`` that cannot be listed, as
    one without read permission cannot for a user who is not root (the tests run as root,
    whom ``chmod`` does not stop, so the listing's error is raised for it here)."""
    import errno
    import os

    docs = tmp_path / "docs"
    (docs / "locked").mkdir(parents=True)
    (docs / "note.md").write_text("# Note\n\nCats sleep most of the day.\n")
    (docs / "locked" / "inside.md").write_text("# Inside\n\nOwls hunt at night.\n")
    real = os.scandir

    def scandir(path: Any = ".") -> Any:
        if Path(os.fspath(path)).name == "locked":
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    return docs


def test_a_folder_that_cannot_be_listed_is_one_failure_and_the_rest_is_stored(
    rt: Runtime, open_url: str, locked: Path
) -> None:
    """``os.walk`` passed over a folder it could not list without a word: its files were
    neither stored nor reported, and the ingest said all went well (exit status 0)."""
    from ragstore.cli.remote import ingest_remote
    from ragstore.errors import FileUnreadableError

    report = ingest_paths(rt, [locked], "unlisted")
    got = sorted((Path(o.source).name, o.status, o.code) for o in report.outcomes)
    assert got == [("locked", "failed", "file_unreadable"), ("note.md", "added", None)]
    assert "locked: cannot list this folder (Permission denied)" in (report.failed[0].error or "")
    with Client(open_url) as client:
        result = ingest_remote(client, open_url, [locked], "unlisted-remote", {}, lambda *a: None)
        assert [(Path(f["document"]).name, f["code"]) for f in result.failed] == [
            ("locked", "file_unreadable")
        ]
        assert result.counts.get("added") == 1
        with pytest.raises(FileUnreadableError, match="cannot list this folder"):
            client.ingest("unlisted-client", [locked])


def test_a_pipe_or_a_broken_link_in_a_folder_is_reported_skipped_everywhere(
    rt: Runtime, settings: Settings, open_url: str, tmp_path: Path
) -> None:
    """A pipe (or device, socket) or a link to nothing with a supported suffix in a walked
    folder was passed over without a word by every ingest: the document was just missing.
    Each is now reported skipped, saying why, by ``ingest``, ``Store``, ``Client`` and the
    remote CLI; the rest is stored."""
    import os

    from ragstore.cli.remote import ingest_remote

    folder = tmp_path / "odd"
    folder.mkdir()
    (folder / "ok.md").write_text("# Ok\n\nOtters hold hands while sleeping.\n")
    os.mkfifo(folder / "pipe.md")
    (folder / "dead.md").symlink_to(tmp_path / "nowhere.md")
    (folder / "loop.md").symlink_to(folder / "loop.md")
    want = {
        "dead.md": ("path_not_found", "which does not exist"),
        "loop.md": ("path_not_found", "loops"),
        "pipe.md": ("file_unreadable", "not a regular file"),
    }

    def check(skipped: list[tuple[str, str | None, str | None]]) -> None:
        got = {Path(s).name: (c, d) for s, c, d in skipped}
        assert set(got) == set(want), skipped
        for name, (code, says) in want.items():
            assert got[name][0] == code and says in str(got[name][1]), got[name]

    report = ingest_paths(rt, [folder, folder], "odd-local")  # given twice: said once
    assert report.count("added") == 1 and report.failed == []
    assert report.count("skipped") == 3
    check([(o.source, o.code, o.error) for o in report.outcomes if o.status == "skipped"])
    with Store(settings=settings) as store:
        local = store.ingest("odd-store", folder)
    with Client(open_url) as client:
        remote = client.ingest("odd-client", [folder])
        result = ingest_remote(client, open_url, [folder], "odd-cli", {}, lambda *a: None)
    for answer in (local, remote):
        assert answer["count"] == 1, answer
        check([(s["source"], s["code"], s["detail"]) for s in answer["skipped"]])
    assert result.counts.get("added") == 1 and result.counts.get("skipped") == 3, result.counts
    check([(str(s["document"]), s["code"], s["detail"]) for s in result.skipped])
