"""Validation of source records before anything is written: pure, values in, values out.

Each rule has a kind, and the policy for each kind decides what happens to the records it
finds: ``abort`` refuses the whole import, ``skip`` leaves those records out, ``keep``
(only for ``missing_text``) imports them with an empty text so that they are searchable by
vector only. Every kind is counted and its first offending ids are kept for the report, so
a user sees the whole picture of a dirty store in one run, not one error at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ragstore.db.spaces import HALFVEC_MAX_VALUE, HALFVEC_ZERO, without_direction
from ragstore.errors import InputError
from ragstore.imports.records import Record, Vector
from ragstore.validation import problem_in

KINDS = (
    "missing_id",
    "duplicate_id",
    "existing_id",
    "missing_vector",
    "dimension_mismatch",
    "non_finite",
    "zero_vector",
    "missing_text",
    "unstorable",
)
ACTIONS = ("abort", "skip", "keep")
FIRST_IDS = 5
# a record is one chunk, and PostgreSQL refuses a chunk's tsvector over 1 MB: the import
# failed at its write, naming no record ("string is too long for tsvector")
TOO_MANY_WORDS = (
    "text: too many distinct words for the full-text index (over PostgreSQL's 1 MB "
    "tsvector); split it into several records"
)
# an id is stored as its document's source, under a unique btree index whose entries
# PostgreSQL limits to 2704 bytes: a longer id failed the whole write, naming no record
MAX_ID_BYTES = 2000
SHOWN_ID_CHARS = 60

DESCRIPTIONS = {
    "missing_id": "records without an id",
    "duplicate_id": "ids seen more than once in the source (the first read is kept)",
    "existing_id": "ids already in the target collection",
    "missing_vector": "records without a vector (NULL, or null: an embedding still to be made)",
    "dimension_mismatch": "vectors whose length is not the model's dimension",
    "non_finite": "vectors holding NaN, infinity or a value beyond ±65,504 (the index keeps "
    "vectors in half precision)",
    "zero_vector": "vectors with no direction: all zeros, or, where the collection ranks by "
    f"cosine, every value {HALFVEC_ZERO:.2g} or less in magnitude (zeros in the half "
    "precision the index keeps)",
    "missing_text": "records without text",
    "unstorable": "ids, texts or metadata the database cannot store (a NUL character, a "
    "lone surrogate, a number out of range, a text too large for the full-text index)",
}


def parse_policies(default: str, overrides: Iterable[str]) -> dict[str, str]:
    """``--on-invalid ACTION`` plus ``--policy KIND=ACTION`` items -> kind -> action."""
    if default not in ("abort", "skip"):
        raise InputError(f"--on-invalid {default!r} is not one of abort, skip")
    policies = dict.fromkeys(KINDS, default)
    for item in overrides:
        kind, sep, action = item.partition("=")
        kind, action = kind.strip(), action.strip()
        if not sep or kind not in KINDS:
            raise InputError(
                f"--policy {item!r} is not KIND=ACTION with KIND one of {', '.join(KINDS)}"
            )
        allowed = ACTIONS if kind == "missing_text" else ("abort", "skip")
        if action not in allowed:
            raise InputError(
                f"--policy {item!r}: the action for {kind} must be one of {', '.join(allowed)}"
            )
        policies[kind] = action
    return policies


@dataclass
class Issue:
    kind: str
    action: str
    count: int = 0
    first: list[str] = field(default_factory=list)  # "id" or "id (detail)"

    def add(self, label: str) -> None:
        self.count += 1
        if len(self.first) < FIRST_IDS:
            self.first.append(label)

    @property
    def description(self) -> str:
        return DESCRIPTIONS[self.kind]


@dataclass
class ValidationReport:
    read: int
    kept: list[int]  # indices of the records to write, in source order
    issues: list[Issue]  # only kinds that occurred, in KINDS order

    @property
    def aborting(self) -> list[Issue]:
        return [i for i in self.issues if i.action == "abort"]

    @property
    def skipped(self) -> int:
        return self.read - len(self.kept)

    @property
    def ok(self) -> bool:
        return not self.aborting


def validate(
    records: Sequence[Record],
    dimension: int,
    policies: Mapping[str, str],
    existing_ids: set[str] | frozenset[str] = frozenset(),
    unindexable: set[int] | frozenset[int] = frozenset(),
    cosine: bool = True,
) -> ValidationReport:
    """Judge every record against the declared dimension and the policies.

    ``cosine``: the collection ranks by cosine, where a vector that half precision keeps
    as zeros is never found (:func:`ragstore.db.spaces.without_direction`); by l2 or
    inner product such a vector is the origin, and ranks.

    ``unindexable``: the indices of the records whose text the database found too large
    for its full-text index (:func:`ragstore.imports.service.unindexable_texts`), counted
    as ``unstorable``."""
    policies = {kind: policies.get(kind, "abort") for kind in KINDS}
    issues = {kind: Issue(kind, policies[kind]) for kind in KINDS}
    seen: set[str] = set()
    kept: list[int] = []
    for index, rec in enumerate(records):
        label = rec.id if rec.id is not None else f"#{index + 1}"
        found: list[str] = []
        if rec.id is None:
            issues["missing_id"].add(f"record #{index + 1}")
            found.append("missing_id")
        elif rec.id in seen:
            issues["duplicate_id"].add(label)
            found.append("duplicate_id")
        else:
            seen.add(rec.id)
            if rec.id in existing_ids:
                issues["existing_id"].add(label)
                found.append("existing_id")
        if rec.vector is None:
            issues["missing_vector"].add(label)
            found.append("missing_vector")
        else:
            found += _vector_problems(rec.vector, label, dimension, cosine, issues)
        if rec.text is None or not rec.text.strip():
            issues["missing_text"].add(label)
            found.append("missing_text")
        unstorable = _unstorable(rec)
        if unstorable is None and index in unindexable:
            unstorable = TOO_MANY_WORDS
        if unstorable is not None:
            issues["unstorable"].add(f"{_shown(label)} ({unstorable})")
            found.append("unstorable")
        if not any(policies[k] == "skip" for k in found):
            kept.append(index)
    return ValidationReport(
        read=len(records), kept=kept, issues=[i for i in issues.values() if i.count]
    )


def _vector_problems(
    vec: Vector, label: str, dimension: int, cosine: bool, issues: Mapping[str, Issue]
) -> list[str]:
    """The kinds ``vec`` is found to be (each added to ``issues``), where there is one."""
    found: list[str] = []
    if vec.shape[0] != dimension:
        issues["dimension_mismatch"].add(f"{label} ({vec.shape[0]} dims)")
        found.append("dimension_mismatch")
    if not np.isfinite(vec).all() or np.abs(vec).max(initial=0.0) > HALFVEC_MAX_VALUE:
        issues["non_finite"].add(label)
        found.append("non_finite")
    elif vec.size and (cosine or not vec.any()) and without_direction(vec)[0]:
        # ([] has only too few dimensions) values all tiny (1e-45) are zeros to the
        # index, as add_texts refuses them where cosine: the record was imported and
        # then never found, its distance to every query NaN. All zeros: any distance
        top = float(np.abs(vec).max())
        issues["zero_vector"].add(f"{label} (largest {top:.3g})" if top else label)
        found.append("zero_vector")
    return found


def _unstorable(rec: Record) -> str | None:
    """The first part of ``rec`` PostgreSQL would refuse, named with its field: found here,
    it is one kind with the others, instead of failing the whole write naming no record."""
    size = len(rec.id.encode("utf-8", "surrogatepass")) if rec.id is not None else 0
    if size > MAX_ID_BYTES:
        return f"id: {size} bytes, over the {MAX_ID_BYTES} an id may have"
    for name, value in (("id", rec.id), ("text", rec.text), ("metadata", rec.metadata)):
        problem = problem_in(value, paths=name == "metadata")
        if problem is not None:
            return f"{name}: {problem.split(';')[0]}"
    return None


def _shown(label: str) -> str:
    """An id as a report can print it: a NUL or a lone surrogate escaped, a long one cut."""
    shown = label.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    return shown if len(shown) <= SHOWN_ID_CHARS else shown[:SHOWN_ID_CHARS] + "..."
