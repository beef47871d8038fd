"""Where uploaded documents live on disk before (and after) they are ingested.

An upload named ``notes/a.md`` for collection ``docs`` is written to
``<data dir>/uploads/docs/notes/a.md`` and ingested from there, so its source is the same
on every upload: a re-upload of unchanged bytes is skipped by its content hash, a changed
one replaces the document. Workers on other machines must share the data dir's path.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path, PurePosixPath

from ragstore.config import Settings
from ragstore.errors import InputError

_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.,()+=@-]{0,127}$")


def upload_root(settings: Settings, collection: str) -> Path:
    return settings.data_dir / "uploads" / collection


def safe_name(name: str) -> PurePosixPath:
    """The upload's file name as a relative path; anything that could escape is refused."""
    path = PurePosixPath(name.replace("\\", "/"))
    parts = path.parts
    if not parts or len(parts) > 8 or path.is_absolute() or not all(
            _PART.match(p) for p in parts):
        raise InputError(
            f"invalid document name {name!r}: use a relative path of up to 8 parts made of "
            "letters, digits, spaces and _.,()+=@- (each part starting with a letter or digit)")
    return path


def stage(settings: Settings, collection: str, name: str, content: bytes) -> Path:
    """Write the upload atomically to its fixed place and return that path."""
    target = upload_root(settings, collection).joinpath(*safe_name(name).parts)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_file() and target.read_bytes() == content:
        return target
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".upload-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def source_name(settings: Settings, collection: str, source: str) -> str:
    """The name a client gave for a staged source; other sources are returned unchanged."""
    root = str(upload_root(settings, collection).resolve()) + os.sep
    return source[len(root):] if source.startswith(root) else source
