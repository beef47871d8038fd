"""The embedding models an archive's collections are pinned to, and whether this machine
can load them: read from a restore's script before anything is dropped.

A restore of an archive whose pinned local weights this machine does not have (or has
other ones of) went through and said "restored": every search and ingest of its
collections then failed ``model_mismatch``, the store it replaced gone, and ``db check``
found nothing. :func:`refuse_unusable_models` refuses such an archive first, naming each
model and what to do, unless told to restore it anyway (``--ignore-models``: a scratch
restore, the weights installed afterwards).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ragstore.errors import ModelMismatchError
from ragstore.models import ModelSpec

# the tables read, as their COPY statements in a pg_restore script name them
_TABLES = ("collections", "embedding_models", "embedding_spaces")
_COPY = re.compile(r"^COPY public\.(\w+) \(([^)]*)\) FROM stdin;$")
# a space whose model searches or ingests use: its collection's current space, or one a
# migration is filling (a retired one is only kept for a rollback)
_IN_USE = ("active", "building")
_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{1,2}|[0-7]{1,3}|.)")


@dataclass(frozen=True)
class UnusablePin:
    """A pinned model of the archive whose weights this machine cannot load."""

    spec: ModelSpec
    collections: tuple[str, ...]  # the collections whose searches it would refuse
    problem: str  # what the load would refuse it for, and what to do


def _unescape(match: re.Match[str]) -> str:
    code = match.group(1)
    if code[0] == "x" and len(code) > 1:
        return chr(int(code[1:], 16))
    if code[0] in "01234567":
        return chr(int(code, 8))
    return _ESCAPES.get(code, code)


def _field(raw: str) -> str | None:
    """One field of a COPY text-format row (``\\N`` is NULL)."""
    return None if raw == "\\N" else _ESCAPE.sub(_unescape, raw)


def _copied_rows(script: Path) -> dict[str, list[dict[str, str | None]]]:
    """The rows the script copies into :data:`_TABLES`, each as column -> text; read line
    by line (the script is the whole database), stopping once all of them were read."""
    rows: dict[str, list[dict[str, str | None]]] = {}
    with script.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            head = _COPY.match(line.rstrip("\n"))
            if head is None or head.group(1) not in _TABLES:
                continue
            columns = [c.strip().strip('"') for c in head.group(2).split(",")]
            table = rows.setdefault(head.group(1), [])
            for row in _until_end(lines):
                table.append(dict(zip(columns, map(_field, row.split("\t")), strict=False)))
            if len(rows) == len(_TABLES):
                break
    return rows


def _until_end(lines: Iterator[str]) -> Iterator[str]:
    for line in lines:
        row = line.rstrip("\n")
        if row == "\\.":
            return
        yield row


def _spec(row: dict[str, str | None]) -> ModelSpec:
    """A pin as the archive holds it (columns an older schema lacked get their defaults:
    the weights check reads the provider, path and checksum)."""
    return ModelSpec(
        provider=row.get("provider") or "",
        name=row.get("name") or "",
        revision=row.get("revision") or "",
        dimension=int(row.get("dimension") or 0),
        distance=row.get("distance") or "cosine",
        normalize=row.get("normalize") == "t",
        max_tokens=int(row.get("max_tokens") or 0),
        checksum=row.get("checksum") or "",
        options=dict(json.loads(row.get("options") or "{}")),
    )


def unusable_pins(script: Path) -> list[UnusablePin]:
    """The archive's models that a collection searches or ingests with (an active or
    building space) whose local weights are missing here or differ from the pin."""
    # imported here: the embedding stack takes most of a second to import, which every
    # `ragstore backup` paid for though it checks no model
    from ragstore.embedding.registry import weights_problem

    rows = _copied_rows(script)
    names = {r.get("id"): r.get("name") or "" for r in rows.get("collections", [])}
    users: dict[str | None, set[str]] = {}
    for space in rows.get("embedding_spaces", []):
        if space.get("status") in _IN_USE:
            users.setdefault(space.get("model_id"), set()).add(
                names.get(space.get("collection_id"), f"#{space.get('collection_id')}")
            )
    found = []
    for model in rows.get("embedding_models", []):
        if model.get("id") not in users:
            continue
        spec = _spec(model)
        problem = weights_problem(spec)
        if problem is not None:
            found.append(UnusablePin(spec, tuple(sorted(users[model.get("id")])), problem))
    return found


def refuse_unusable_models(path: Path, script: Path) -> None:
    """Refuse, before anything is dropped, an archive whose collections' models this
    machine cannot load: restored, none of them could be searched or written."""
    pins = unusable_pins(script)
    if not pins:
        return
    each = "; ".join(
        f"model {p.spec.key} (collection{'s' if len(p.collections) > 1 else ''} "
        f"{', '.join(repr(c) for c in p.collections)}): {p.problem}"
        for p in pins
    )
    raise ModelMismatchError(
        f"{path} holds collections pinned to embedding models whose weights this machine "
        "does not have or that differ from the pin, so none of those collections could be "
        f"searched or written once restored; nothing was changed. {each}. Install the "
        "pinned weights where the pin names them and run the restore again, or add "
        "--ignore-models to restore it anyway (those collections then refuse searches and "
        "ingests with model_mismatch until their weights are installed; `ragstore db "
        "check` names them)"
    )
