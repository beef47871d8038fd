"""The upload files of a process killed mid-request are removed while the server runs,
not only at its start: a worker killed meanwhile, or a server killed less than
``SWEEP_AFTER_S`` before a supervisor started it again, left the uploaded text in the
data folder until some later restart."""

from __future__ import annotations

import os
import time

import pytest

from ragstore.config import Settings
from ragstore.uploads import staging
from tests.api.conftest import running_server, with_


def test_files_a_process_killed_while_the_server_runs_left_are_swept(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(staging, "SWEEP_AFTER_S", 0.5)
    root = settings.data_dir / "staging"
    with running_server(with_(settings, auth="off")):
        root.mkdir(parents=True, exist_ok=True)
        # an area whose process was killed after the server started: its lock held by no one
        left = [root / "area-killed1.lock", root / "upload-killed1-a"]
        for path in left:
            path.write_bytes(b"" if path.suffix else b"# Secret\n\nleft by a killed request")
        deadline = time.monotonic() + 30
        while any(path.exists() for path in left):
            assert time.monotonic() < deadline, f"still there: {os.listdir(root)}"
            time.sleep(0.1)
