"""Uploaded documents: their names and stored sources (:mod:`~ragstore.uploads.names`) and
the staging files their bytes wait in (:mod:`~ragstore.uploads.staging`).

Below the HTTP API, the ``Store``, ingest, search, the job queue and the client, which all
use it; it imports none of them. Nothing is imported here, so the client can read names
without loading the staging area's dependencies.
"""
