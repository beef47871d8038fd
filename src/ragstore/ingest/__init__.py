"""Ingest: files in, documents with embedded chunks stored, unchanged content skipped."""

from ragstore.ingest.service import FileOutcome, IngestInterrupted, IngestReport, ingest_paths

__all__ = ["FileOutcome", "IngestInterrupted", "IngestReport", "ingest_paths"]
