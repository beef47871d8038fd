"""The upload staging folder, or the temporary folder the form parser spools to, that the
server may not write (a read-only filesystem; permission denied is the same error).

Only a full disk there was one clear error: any other OSError was a 500 with a traceback in
the log (or, in the form parser, a 422 ``invalid_input`` that blamed the caller's body).
Each is now one 5xx naming the folder, the reason and the fix, nothing stored and no
staging file left. Root bypasses file permissions, so each test mounts a read-only tmpfs
(root only: skipped otherwise, with the reason).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from ragstore.config import Settings
from ragstore.errors import ConfigError
from ragstore.store import Store
from tests.api.conftest import running_server, with_

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="mounting a read-only tmpfs (root ignores file modes) needs root"
)

TEXT = "# Note\n\n" + " ".join(f"word{j}" for j in range(200))


@contextmanager
def _read_only(where: Path) -> Iterator[Path]:
    """A read-only tmpfs mounted at ``where`` (unmounted at the end, whatever happens)."""
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _says_read_only(body: dict[str, object], folder: str) -> None:
    assert (body["code"], body["status"]) == ("config_invalid", 500), body
    detail = str(body["detail"])
    assert folder in detail and "Read-only file system" in detail, detail
    assert "writable" in detail and "nothing of this upload was stored" in detail, detail


def test_a_read_only_staging_folder_answers_one_clear_error(settings: Settings) -> None:
    staging = settings.data_dir / "staging"
    with (
        _read_only(staging),
        running_server(with_(settings, auth="off")) as url,
        httpx.Client(base_url=url, timeout=60) as h,
    ):
        up = h.post(
            "/v1/collections/ro-staging/documents/upload",
            files=[("files", ("a.md", TEXT.encode())), ("files", ("b.md", TEXT.encode()))],
        )
        js = h.post("/v1/collections/ro-staging/documents", json={"name": "c.md", "text": TEXT})
        for r in (up, js):
            _says_read_only(r.json(), "upload staging folder")
            assert r.headers["content-type"].startswith("application/problem+json")
        listed = h.get("/v1/collections/ro-staging/documents")
        assert listed.status_code == 404 or listed.json()["count"] == 0, listed.text
    assert not list(staging.glob("upload-*"))
    with (
        Store(settings=settings) as store,
        _read_only(staging),
        pytest.raises(ConfigError, match="staging folder"),
    ):
        store.add_document("ro-store", "d.md", TEXT)


def test_a_read_only_temporary_folder_while_an_upload_is_read(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Starlette spools an upload's file over 1 MB to the temporary folder."""
    with _read_only(tmp_path / "tmp") as tmp:
        monkeypatch.setattr(tempfile, "tempdir", str(tmp))
        with running_server(with_(settings, auth="off")) as url:
            big = ("# Big\n\n" + "word " * 300_000).encode()  # 1.5 MB: spooled to disk
            r = httpx.post(
                f"{url}/v1/collections/ro-spooled/documents/upload",
                files=[("files", ("big.md", big))],
                timeout=60,
            )
    _says_read_only(r.json(), str(tmp))
    assert "TMPDIR" in r.json()["detail"]
