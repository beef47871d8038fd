"""The CLI reads its own writes across commands through a server with a read replica:
``ragstore ingest`` then ``ragstore search``, two processes, find the document while the
standby has not replayed it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ragstore import Client
from tests.api.conftest import running_server
from tests.replica.conftest import Pair

CLI = [sys.executable, "-c", "import sys; from ragstore.cli import main; main(sys.argv[1:])"]


def _cli(url: str, cache: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``ragstore ARGS`` in a process of its own, through the server at ``url``, with
    ``cache`` as its XDG_CACHE_HOME (where the positions are kept)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGSTORE_")}
    env.update(RAGSTORE_URL=url, XDG_CACHE_HOME=str(cache))
    return subprocess.run(
        [*CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def _titles(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert result.returncode == 0, result.stderr
    return [hit["title"] for hit in json.loads(result.stdout)]


def test_a_cli_search_after_a_cli_ingest_finds_it_with_the_replica_behind(
    pair: Pair, tmp_path: Path
) -> None:
    doc = tmp_path / "walrus.md"
    doc.write_text("# Walrus\n\nA walrus uses its long ivory tusks to haul out onto ice.\n")
    cache = tmp_path / "cache"
    # a replica this far behind is still read from: the lag alone does not send the
    # search to the primary, only the position the ingest answered does
    settings = pair.settings(max_replica_lag_s=600.0, replica_wait_s=0.3)
    with running_server(settings) as url:
        with Client(url) as c:
            c.create_collection("cli")
        pair.wait_caught_up()  # the standby has the (empty) collection
        pair.pause_replay(True)
        try:
            ingest = _cli(url, cache, tmp_path, "ingest", "-c", "cli", str(doc))
            assert ingest.returncode == 0, ingest.stderr
            assert "1 added" in ingest.stderr, ingest.stderr  # the summary goes to stderr
            query = ["search", "-c", "cli", "--json", "-k", "1", "walrus tusks"]
            # a command without the ingest's position is served by the paused standby
            assert _titles(_cli(url, tmp_path / "other-cache", tmp_path, *query)) == []
            # the next command through the same server carries it
            assert _titles(_cli(url, cache, tmp_path, *query)) == ["Walrus"]
        finally:
            pair.pause_replay(False)
    kept = json.loads((cache / "ragstore" / "client" / "positions.json").read_text())
    assert list(kept["servers"]) == [url]
