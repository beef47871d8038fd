"""Importing vectors from basic stores (JSONL, NumPy, PostgreSQL tables, Chroma) with proof.

Read -> validate (:mod:`.validate`) -> back up -> write, index and verify in one transaction
(:mod:`.service`, :mod:`.verify`). Readers live in :mod:`.files`, :mod:`.postgres` and
:mod:`.chroma`; :func:`open_source` picks one for a SOURCE argument.
"""

from ragstore.imports.records import Record, Source
from ragstore.imports.service import (
    ImportOptions,
    ImportPlan,
    ImportReport,
    declared_spec,
    plan_import,
    refuse_if_invalid,
    run_import,
)
from ragstore.imports.sources import SourceOptions, detect_format, open_source
from ragstore.imports.validate import KINDS, parse_policies
from ragstore.imports.verify import Verification

__all__ = [
    "KINDS",
    "ImportOptions",
    "ImportPlan",
    "ImportReport",
    "Record",
    "Source",
    "SourceOptions",
    "Verification",
    "declared_spec",
    "detect_format",
    "open_source",
    "parse_policies",
    "plan_import",
    "refuse_if_invalid",
    "run_import",
]
