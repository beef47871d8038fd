"""The SciFact corpus in ../shared/data, read where it lies (never copied into the repo)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"


def records(n: int | None = None) -> list[dict[str, Any]]:
    """The first ``n`` corpus records (all with ``None``), in file order."""
    out: list[dict[str, Any]] = []
    if n == 0:
        return out
    with (SCIFACT / "corpus.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            out.append(json.loads(line))
            if n is not None and len(out) >= n:
                break
    return out
