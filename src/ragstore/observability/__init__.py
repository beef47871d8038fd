"""Observability: Prometheus metrics (:mod:`.metrics`) and structured logs (:mod:`.logging`).

Nothing is configured at import time; entry points call ``configure_logging`` and the API
mounts ``/metrics``. Code paths record through the one-line helpers in :mod:`.metrics`.
"""
