"""The names the HTTP API's server and its clients agree on over the wire: the headers one
side writes and the other reads, and what one upload may hold.

Both sides read them here. The server's body limit (``http/limits.py``) and middleware took
them from the client's module (``_requests.py``), and the client kept its own copy of the
server's ``RAGStore-LSN``: a server reaching into the client, and two spellings a rename
could part. This module imports nothing, so the client that reads it stays light.
"""

from __future__ import annotations

# An upload (or a document's text) over the server's RAGSTORE_BACKGROUND_INGEST_BYTES is
# queued as a job (202) even when not asked to be: sent again after its answer was lost
# (an "upsert" is), it queued a second job storing the same documents. Sent with this
# header, fresh per send and the same on its retries, the server answers a request sent
# again with the job the first one queued (``jobs.service.submit_ingest``).
IDEMPOTENCY_HEADER = "Idempotency-Key"
# Sent ("1") on every answer of a server that honours IDEMPOTENCY_HEADER (revision 0036 on;
# api/middleware.py ``RequestIdMiddleware``). An older server ignored the key, and a
# background upload sent to it again after its answer was lost queued a second job: the
# clients send one again only once an earlier answer of the server carried this header.
IDEMPOTENCY_SUPPORT_HEADER = "RAGStore-Idempotency"
# On a 413 (http/limits.py): the limit that refused the body, an upload's or a JSON
# body's; the clients send an upload again in requests within the one it says.
UPLOAD_LIMIT_HEADER = "RAGStore-Max-Upload-Bytes"
REQUEST_LIMIT_HEADER = "RAGStore-Max-Request-Bytes"
# Read-your-writes: the primary's WAL position after a write's commit, which a client
# sends back with its next reads (db/lsn.py, api/routing.py)
LSN_HEADER = "RAGStore-LSN"
# which server answered a read, the primary or a replica (api/routing.py)
READ_FROM_HEADER = "RAGStore-Read-From"
# the files one upload may hold: the multipart parser's ``max_files``, which FastAPI keeps
# (GET /v1/health says it, and the clients split a larger upload)
MAX_UPLOAD_FILES = 1000
