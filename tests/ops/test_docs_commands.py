"""Every shell block marked ```` ```bash runnable ```` in docs/operations/*.md runs.

Each page's runnable blocks are run in order, as one ``bash -euo pipefail`` script, in a
fresh folder with a fresh embedded data dir (the page's commands share state, e.g. a
backup written by one block and restored by the next). Blocks fenced as plain ``bash``
show commands that need what CI lacks (Docker, a second host); the pages say so.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted((ROOT / "docs" / "operations").glob("*.md"))
_BLOCK = re.compile(r"^```bash runnable[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def runnable_blocks(page: Path) -> list[str]:
    return _BLOCK.findall(page.read_text(encoding="utf-8"))


def test_the_operations_pages_exist_and_show_runnable_commands() -> None:
    names = {p.name for p in PAGES}
    expected = {"install.md", "configure.md", "upgrade.md", "backup-restore.md",
                "rollback.md", "scaling.md"}
    assert expected <= names
    for name in expected:
        assert runnable_blocks(ROOT / "docs" / "operations" / name), f"{name}: no runnable block"


@pytest.mark.parametrize("page", [p for p in PAGES if runnable_blocks(p)], ids=lambda p: p.name)
def test_runnable_blocks_of_page_succeed(page: Path, tmp_path: Path) -> None:
    script = "\n".join(["set -euo pipefail", *runnable_blocks(page)])
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGSTORE_")}
    env.update({
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        "RAGSTORE_DATA_DIR": str(tmp_path / "data"),
        "RAGSTORE_PROFILE": "dev",
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
    })
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    result = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, text=True,
                            capture_output=True, timeout=400, check=False)
    assert result.returncode == 0, (
        f"{page.name}: exit {result.returncode}\n--- stdout\n{result.stdout[-4000:]}"
        f"\n--- stderr\n{result.stderr[-4000:]}")
