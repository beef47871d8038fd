"""Every shell block marked ```` ```bash runnable ```` in docs/operations/*.md runs.

Each page's runnable blocks are run in order, as one ``bash -euo pipefail`` script, in a
fresh folder with a fresh embedded data dir (the page's commands share state, e.g. a
backup written by one block and restored by the next). All pages start at once. Blocks
fenced as plain ``bash`` show commands that need what CI lacks (Docker, a second host);
the pages say so.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted((ROOT / "docs" / "operations").glob("*.md"))
_BLOCK = re.compile(r"^```bash runnable[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def runnable_blocks(page: Path) -> list[str]:
    return _BLOCK.findall(page.read_text(encoding="utf-8"))


def test_the_operations_pages_exist_and_show_runnable_commands() -> None:
    names = {p.name for p in PAGES}
    expected = {
        "install.md",
        "configure.md",
        "upgrade.md",
        "backup-restore.md",
        "rollback.md",
        "scaling.md",
    }
    assert expected <= names
    for name in expected:
        assert runnable_blocks(ROOT / "docs" / "operations" / name), f"{name}: no runnable block"


RUNNABLE = [p for p in PAGES if runnable_blocks(p)]


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, subprocess.Popen[str]]]:
    """Every page's script, started at once (they share nothing; the CPU is the limit)."""
    procs: dict[str, subprocess.Popen[str]] = {}
    for page in RUNNABLE:
        folder = tmp_path_factory.mktemp(page.stem)
        (folder / "tmp").mkdir()  # what a page's `mktemp -d` makes is the test's to remove
        script = "\n".join(["set -euo pipefail", *runnable_blocks(page)])
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAGSTORE_")}
        env.update(
            {
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
                "RAGSTORE_DATA_DIR": str(folder / "data"),
                "TMPDIR": str(folder / "tmp"),
                "RAGSTORE_PROFILE": "dev",
                "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1",
            }
        )
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        procs[page.name] = subprocess.Popen(
            ["bash", "-c", script],
            cwd=folder,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    yield procs
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.parametrize("page", RUNNABLE, ids=lambda p: p.name)
def test_runnable_blocks_of_page_succeed(
    page: Path, started: dict[str, subprocess.Popen[str]]
) -> None:
    proc = started[page.name]
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, (
        f"{page.name}: exit {proc.returncode}\n--- stdout\n{stdout[-4000:]}"
        f"\n--- stderr\n{stderr[-4000:]}"
    )


def test_the_upgrade_page_names_the_newest_revision() -> None:
    """upgrade.md spells out the revision chain (it follows ``down_revision``, not the file
    numbers); it had stopped at 0022 while the code went on to newer heads."""
    from ragstore.db import migrations

    text = (ROOT / "docs" / "operations" / "upgrade.md").read_text(encoding="utf-8")
    chain = text.split("The chain follows", 1)[1].split("known_revisions()", 1)[0]
    named = re.findall(r"\b0\d{3}\b", chain)
    assert named and named[-1] == migrations.known_revisions()[-1], named
