"""``ragstore.Client``: the HTTP API from Python, with the server's errors as exceptions.

Every method mirrors one route. A problem+json answer is raised as the
:class:`~ragstore.errors.RagstoreError` subclass whose ``code`` it carries, so code written
against the library catches the same exceptions over HTTP; ``status`` and ``request_id``
are set on it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import httpx

from ragstore.errors import RagstoreError, all_error_classes

LSN_HEADER = "RAGStore-LSN"  # ragstore.db.lsn.HEADER (not imported: the client stays light)


def _error_class(code: str) -> type[RagstoreError]:
    for cls in all_error_classes():
        if cls.code == code:
            return cls
    return RagstoreError


def error_from_problem(status: int, body: Mapping[str, Any]) -> RagstoreError:
    """The exception a problem+json body stands for."""
    code = str(body.get("code") or "internal_error")
    detail = str(body.get("detail") or body.get("title") or f"HTTP {status}")
    cls = _error_class(code)
    exc = cls(detail)
    exc.status = status  # type: ignore[attr-defined]
    exc.request_id = body.get("request_id")  # type: ignore[attr-defined]
    exc.problem = dict(body)  # type: ignore[attr-defined]
    if code in ("rate_limited", "replica_behind") and "retry_after" not in vars(exc):
        exc.retry_after = 1.0  # type: ignore[attr-defined]
    return exc


class Client:
    """A connection to one ragstore server.

    ``Client("http://127.0.0.1:8080", api_key="rsk_...")``; use it as a context manager or
    call :meth:`close`. ``transport`` lets tests and embedders hand in their own httpx
    transport.
    """

    def __init__(self, base_url: str = "http://127.0.0.1:8080", *, api_key: str | None = None,
                 timeout: float = 60.0, transport: httpx.BaseTransport | None = None,
                 read_your_writes: bool = True) -> None:
        # The WAL position of this client's last write (``RAGStore-LSN``). Sent back on later
        # requests so a read served by a replica sees that write; copy it to another client
        # (e.g. one for a read-only server) to carry the guarantee over.
        self.last_lsn: str | None = None
        self.read_your_writes = read_your_writes
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers,
                                  timeout=timeout, transport=transport)

    # --- plumbing ------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send a request; raise the matching RagstoreError for any error answer."""
        if self.read_your_writes and self.last_lsn:
            kwargs["headers"] = {LSN_HEADER: self.last_lsn, **dict(kwargs.get("headers") or {})}
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            from ragstore.errors import DatabaseUnavailableError

            raise DatabaseUnavailableError(
                f"cannot reach the ragstore server at {self._http.base_url}: {exc}") from None
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = {"detail": response.text[:500] or response.reason_phrase}
            if not isinstance(body, dict):
                body = {"detail": str(body)[:500]}
            raise error_from_problem(response.status_code, body)
        written = response.headers.get(LSN_HEADER)
        if written:
            self.last_lsn = written
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    # --- health --------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return cast(dict[str, Any], self._json("GET", "/healthz"))

    def ready(self) -> dict[str, Any]:
        return cast(dict[str, Any], self._json("GET", "/readyz"))

    # --- collections ---------------------------------------------------------------------

    def create_collection(self, name: str, *, model: str | None = None,
                          settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name, "settings": dict(settings or {})}
        if model:
            body["model"] = model
        return cast(dict[str, Any], self._json("POST", "/v1/collections", json=body))

    def list_collections(self) -> list[dict[str, Any]]:
        return cast(list[dict[str, Any]], self._json("GET", "/v1/collections")["data"])

    def get_collection(self, name: str) -> dict[str, Any]:
        return cast(dict[str, Any], self._json("GET", f"/v1/collections/{name}"))

    def delete_collection(self, name: str) -> None:
        self.request("DELETE", f"/v1/collections/{name}")

    # --- documents -----------------------------------------------------------------------

    def add_document(self, collection: str, name: str, text: str, *,
                     metadata: Mapping[str, Any] | None = None,
                     background: bool = False) -> dict[str, Any]:
        """Ingest text as document ``name``: the document, or the job when run in background
        (a job has ``status`` queued/running/...; see :meth:`wait_for_job`)."""
        body = {"name": name, "text": text, "metadata": dict(metadata or {}),
                "background": background}
        return cast(dict[str, Any], self._json(
            "POST", f"/v1/collections/{collection}/documents", json=body))

    def upload(self, collection: str, files: Sequence[Path | str | tuple[str, bytes]], *,
               metadata: Mapping[str, Any] | None = None,
               background: bool = False) -> dict[str, Any]:
        """Upload files: ``{"data": [documents]}`` (201) or a job (202, has ``"id"``)."""
        parts = []
        for f in files:
            if isinstance(f, tuple):
                name, content = f
            else:
                path = Path(f)
                name, content = path.name, path.read_bytes()
            parts.append(("files", (name, content, "application/octet-stream")))
        data = {"metadata": json.dumps(dict(metadata or {})),
                "background": "true" if background else "false"}
        return cast(dict[str, Any], self._json(
            "POST", f"/v1/collections/{collection}/documents/upload", files=parts, data=data))

    def list_documents(self, collection: str, *, cursor: str | None = None, limit: int = 50,
                       format: str | None = None, source_prefix: str | None = None,
                       metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """One page: ``{"data": [...], "count": n, "next_cursor": str | None}``."""
        params: dict[str, Any] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        if format:
            params["format"] = format
        if source_prefix:
            params["source_prefix"] = source_prefix
        if metadata is not None:
            params["metadata"] = json.dumps(dict(metadata))
        return cast(dict[str, Any], self._json(
            "GET", f"/v1/collections/{collection}/documents", params=params))

    def iter_documents(self, collection: str, *, page_size: int = 100,
                       **filters: Any) -> Iterator[dict[str, Any]]:
        """Every document, following the cursor from page to page."""
        cursor: str | None = None
        while True:
            page = self.list_documents(collection, cursor=cursor, limit=page_size, **filters)
            yield from page["data"]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def get_document(self, collection: str, document_id: int) -> dict[str, Any]:
        return cast(dict[str, Any], self._json(
            "GET", f"/v1/collections/{collection}/documents/{document_id}"))

    def delete_document(self, collection: str, document_id: int) -> None:
        self.request("DELETE", f"/v1/collections/{collection}/documents/{document_id}")

    # --- search --------------------------------------------------------------------------

    def search(self, collection: str, query: str, *, k: int = 10, mode: str | None = None,
               where: Mapping[str, Any] | None = None, context: int | str | None = None,
               explain: bool = False, ef_search: int | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"query": query, "k": k, "explain": explain}
        for key, value in (("mode", mode), ("where", where), ("context", context),
                           ("ef_search", ef_search)):
            if value is not None:
                body[key] = dict(value) if isinstance(value, Mapping) else value
        return cast(dict[str, Any], self._json(
            "POST", f"/v1/collections/{collection}/search", json=body))

    # --- models --------------------------------------------------------------------------

    def list_models(self) -> list[dict[str, Any]]:
        return cast(list[dict[str, Any]], self._json("GET", "/v1/models")["data"])

    def model_status(self, collection: str) -> dict[str, Any]:
        return cast(dict[str, Any], self._json("GET", f"/v1/collections/{collection}/model"))

    def migrate_model(self, collection: str, to: str, *, batch_size: int = 256,
                      switch: bool = True, sample_queries: int = 8) -> dict[str, Any]:
        body = {"to": to, "batch_size": batch_size, "switch": switch,
                "sample_queries": sample_queries}
        return cast(dict[str, Any], self._json(
            "POST", f"/v1/collections/{collection}/model/migrate", json=body))

    def rollback_model(self, collection: str) -> dict[str, Any]:
        return cast(dict[str, Any], self._json(
            "POST", f"/v1/collections/{collection}/model/rollback"))

    # --- jobs ----------------------------------------------------------------------------

    def get_job(self, job_id: int) -> dict[str, Any]:
        return cast(dict[str, Any], self._json("GET", f"/v1/jobs/{job_id}"))

    def list_jobs(self, *, cursor: str | None = None, limit: int = 50,
                  status: str | None = None, collection: str | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        for key, value in (("cursor", cursor), ("status", status), ("collection", collection)):
            if value:
                params[key] = value
        return cast(dict[str, Any], self._json("GET", "/v1/jobs", params=params))

    def wait_for_job(self, job_id: int, *, timeout: float = 300.0,
                     poll: float = 0.2) -> dict[str, Any]:
        """Poll until the job succeeded or failed; TimeoutError after ``timeout`` seconds."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            job = self.get_job(job_id)
            if job["status"] in ("succeeded", "failed"):
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['status']} after {timeout:g}s")
            time.sleep(poll)
