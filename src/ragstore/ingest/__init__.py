"""Ingest: files in, documents with embedded chunks stored, unchanged content skipped."""

from ragstore.ingest.service import FileOutcome, IngestReport, ingest_paths

__all__ = ["FileOutcome", "IngestReport", "ingest_paths"]
