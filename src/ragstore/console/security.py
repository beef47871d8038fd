"""Security headers for every response of the server, the console's pages foremost.

A strict Content-Security-Policy: scripts, styles and everything else only from this
origin, no inline script or style, no framing, forms post only here. With every stored
text rendered through Jinja's autoescape or ``textContent``, a document holding
``<script>`` or ``<img onerror>`` is shown as text; the policy is the second wall should
an escape ever be missed (inline handlers do not run), and Trusted Types the third (an
HTML sink refuses any string, so the markup is never made).

The headers go on every answer, not only under ``/ui``: the API reference at ``/docs``
is an HTML page too (it was FastAPI's Swagger UI, which any site could frame and which
loaded its script from a CDN), and a JSON or problem+json answer that echoes its input
(a path in ``detail``) must not be sniffed as HTML nor framed. Only the pages
(:func:`is_page_path`) are also kept out of caches.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ragstore.api.deps import route_path

CONSOLE_PREFIX = "/ui"

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
        # the third wall: a string handed to an HTML or script sink (innerHTML,
        # insertAdjacentHTML, document.write, a script's src) throws in the browser
        # instead of being parsed; the console never uses one, so an escape missed later
        # fails loudly rather than injecting markup the rules above would let stand (an
        # <a href>, an <img> of this origin, a <form>)
        "require-trusted-types-for 'script'",
        "trusted-types 'none'",
    )
)

DOCS_PATH = "/docs"  # the API reference (ragstore.console.apidocs)

# on every answer of the server. Cross-Origin-Resource-Policy: another site's page cannot
# load an answer as its own <script>, <img> or the like (with auth off on loopback such a
# load needs no key); the console and the API reference load nothing across origins, and
# clients outside a browser ignore it.
BASE_HEADERS: dict[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
# on the console's and the reference's answers
SECURITY_HEADERS: dict[str, str] = {**BASE_HEADERS, "Cache-Control": "no-store"}


def is_console_path(path: str) -> bool:
    return path == CONSOLE_PREFIX or path.startswith(CONSOLE_PREFIX + "/")


def is_page_path(path: str) -> bool:
    """The console and the API reference: HTML pages, kept out of caches."""
    return is_console_path(path) or path == DOCS_PATH


def security_headers(path: str) -> dict[str, str]:
    """The headers an answer for ``path`` carries: :data:`SECURITY_HEADERS` on a page
    (:func:`is_page_path`), else :data:`BASE_HEADERS`."""
    return SECURITY_HEADERS if is_page_path(path) else BASE_HEADERS


class SecurityHeadersMiddleware:
    """Adds :data:`BASE_HEADERS` to every HTTP response (errors included), and
    :data:`SECURITY_HEADERS` to those of :func:`is_page_path`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # the path without the root path (``--root-path``): with it, no console page was
        # taken for one and each went without its ``Cache-Control: no-store``
        added = security_headers(route_path(scope) if "path" in scope else "")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in added.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)
