"""``api/forms.py``: an upload's parts read as sent, beside Starlette's form parser, through
public APIs only (python-multipart's parser on the bytes that pass)."""

from __future__ import annotations

import json
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ragstore.api import create_app
from ragstore.api.forms import FormBytesMiddleware, undecoded_fields
from ragstore.config import Settings

BODY = (
    b"--B\r\n"
    b'Content-Disposition: form-data; name="files"; filename="a.md"\r\n\r\n'
    b"# \xff not text, but a file's bytes are the file's\r\n"
    b"--B\r\n"
    b'Content-Disposition: form-data; name="metadata"\r\n\r\n'
    + '{"t": "équipe, 東京"}'.encode()
    + b"\r\n--B\r\n"
    b'Content-Disposition: form-data; name="note"\r\n\r\n'
    b"caf\xe9 au lait\r\n"
    b"--B--\r\n"
)


async def _form(request: Request) -> JSONResponse:
    async with request.form() as form:  # its files closed as it ends
        seen = {k: type(v).__name__ for k, v in form.multi_items()}
    fields = undecoded_fields(request) if "ragstore.form_parts" in request.scope else None
    return JSONResponse({"types": seen, "undecoded": fields})


async def _post(app: Any, body: bytes, chunk: int) -> dict[str, Any]:
    """POST ``body`` to ``app`` through ASGI, ``chunk`` bytes a message (as a slow client's
    body reaches the server), and the JSON it answers."""
    pieces = [body[i : i + chunk] for i in range(0, len(body), chunk)]
    messages = [
        {"type": "http.request", "body": p, "more_body": i < len(pieces) - 1}
        for i, p in enumerate(pieces)
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/form",
        "raw_path": b"/form",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"multipart/form-data; boundary=B")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    await app(scope, receive, send)
    assert sent[0]["status"] == 200, sent
    answer: dict[str, Any] = json.loads(b"".join(m.get("body", b"") for m in sent[1:]))
    return answer


def _app(*, middleware: bool) -> Any:
    app = Starlette(routes=[Route("/form", _form, methods=["POST"])])
    return FormBytesMiddleware(app) if middleware else app


async def test_a_fields_bytes_are_read_however_the_body_is_cut() -> None:
    """A value is decoded as its bytes pass: a UTF-8 character cut between two of the
    body's chunks is text, a latin-1 byte is not, whatever the cut; a file's bytes are
    never a field's."""
    for chunk in (1, 2, 3, 7, len(BODY)):
        got = await _post(_app(middleware=True), BODY, chunk)
        assert got["undecoded"] == [["note", "caf\xe9 au lait"]], chunk


async def test_the_api_leaves_starlettes_form_parser_as_it_is(settings: Settings) -> None:
    """The API replaced a private function of Starlette's form parser for the whole
    process, so that another Starlette app in it (an embedder's) read its forms' latin-1
    fallback as ragstore's ``Undecoded`` strings; it reads them beside the parser now."""
    create_app(settings)
    got = await _post(_app(middleware=False), BODY, len(BODY))
    assert got["types"] == {"files": "UploadFile", "metadata": "str", "note": "str"}
    assert got["undecoded"] is None
