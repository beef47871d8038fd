"""/healthz (the process answers) and /readyz (database, schema and models are usable)."""

from __future__ import annotations

from fastapi import APIRouter

from ragstore.api.deps import Rt
from ragstore.api.errors_doc import responses
from ragstore.api.schemas import Health, Readiness, ReplicaPublic
from ragstore.db import catalog, migrations
from ragstore.db.errors import translated
from ragstore.errors import NotReadyError, RagstoreError

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="The process is alive")
async def healthz() -> Health:
    return Health()


@router.get("/readyz", response_model=Readiness, summary="Ready to serve",
            responses=responses(503))
def readyz(rt: Rt) -> Readiness:
    """Database reachable, schema at the code's revision, every active model loads and
    matches its pin. Not ready answers 503 ``not_ready`` naming the failing check."""
    checks: dict[str, str] = {}
    try:
        db = rt.raw_db()
        db.ping()
        checks["database"] = "ok"
    except RagstoreError as exc:
        raise NotReadyError(f"database unreachable: {exc}") from None
    st = migrations.status(db)
    if not st.is_current:
        raise NotReadyError(
            f"schema is at {st.current or 'none'}, the code needs {st.head}: "
            "run `ragstore db upgrade`")
    checks["schema"] = st.head
    try:
        with rt.db.connection() as conn, translated("listing collections"):
            names = catalog.collection_names(conn)
        for name in names:
            rt.embedder_for(rt.collection(name))
    except RagstoreError as exc:
        raise NotReadyError(f"model check failed: {exc}") from None
    checks["models"] = f"{len(names)} collection(s) validated"
    checks["role"] = "replica (read-only)" if rt.read_only else "primary"
    replicas = [r.public() for r in rt.router.statuses()]
    if replicas:
        up = sum(1 for r in replicas if r["up"])
        checks["replicas"] = f"{up} of {len(replicas)} serving reads"
    return Readiness(checks=checks,
                     replicas=[ReplicaPublic(**r) for r in replicas] if replicas else None)
