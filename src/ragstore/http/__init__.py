"""What ragstore's HTTP surfaces share: the HTTP API (``ragstore.api``), MCP over HTTP
(``ragstore.integrations.mcp``) and the metrics ports (``ragstore.observability``).

Problem+json answers (:mod:`~ragstore.http.problems`), the loopback guards of a server
started without keys (:mod:`~ragstore.http.guard`), the bearer token
(:mod:`~ragstore.http.bearer`), body limits (:mod:`~ragstore.http.limits`), listening
sockets (:mod:`~ragstore.http.listen`) and coalesced checks (:mod:`~ragstore.http.coalesce`).
A layer below those surfaces: it imports none of them.
"""
