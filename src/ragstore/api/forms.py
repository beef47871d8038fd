"""What the multipart parser changed in an upload's text without a word: bytes that were no
text in the upload's charset, and a file name it cut to its last part.

Starlette decodes a form field's value, a part's name and a file's name in the charset the
``Content-Type`` names (UTF-8 unless it names another) and, where the bytes are not text
in it, falls back to latin-1 (one character per byte): an upload whose ``metadata`` held
the bytes of another encoding was stored garbled (``b"\\xe9"`` as ``"é"``), answered 201.
The decoded string no longer tells which happened (``"é"`` is also what valid UTF-8
``b"\\xc3\\xa9"`` decodes to), and Starlette keeps no field's bytes, so
:class:`FormBytesMiddleware` reads the upload's parts as they pass on their way to
Starlette's parser, with python-multipart's public parser (the one Starlette runs, on the
same bytes), and :func:`undecoded_fields` names each field whose value was not text, which
the upload route refuses (``routes/documents.py``). (It had replaced Starlette's private
``formparsers._user_safe_decode`` for the whole process: a Starlette release that renamed
it would have stored garbled text again without a word.)

Nor does either parser check that the body ends with the closing boundary
(``--BOUNDARY--``): a body cut inside its last part, its ``Content-Length`` saying the cut
length (a proxy or a client that gave up mid-stream and sent what it had), was read as the
parts that had ended, the one cut off dropped, and the upload answered 201 for fewer files
than were sent. :class:`FormBytesMiddleware` refuses such a body at its last byte
(:func:`cut_off_error`, raised where the parser reads it, so that Starlette's parser
closes the files it opened and nothing is stored; an empty body is left to the route,
which says that it has no files).

python-multipart, for its part, keeps only the last part of a file name that looks like a
Windows path (``C:\\x.md`` is read as ``x.md``, a workaround for old browsers):
:func:`sent_filename` reads the name as the part's header sent it.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field

from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header
from starlette.datastructures import Headers, UploadFile
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ragstore.errors import InputError


class Undecoded(str):
    """Form text whose bytes were not text in the upload's charset, as Starlette's fallback
    read them (latin-1: each byte one character)."""

    __slots__ = ()


def _marked_decode(src: bytes | bytearray, codec: str) -> str:
    """``src`` as Starlette's parser decodes it, its latin-1 fallback marked
    :class:`Undecoded`."""
    try:
        return src.decode(codec)
    except (UnicodeDecodeError, LookupError):
        return Undecoded(src.decode("latin-1"))


def form_charset(content_type: str) -> str:
    """The codec Starlette's parser decodes a form's text in, read from its
    ``Content-Type`` as it reads it: the ``charset`` named (UTF-8 if none), latin-1 for
    one Python does not know."""
    _, params = parse_options_header(content_type)
    named = params.get(b"charset", b"utf-8").decode("latin-1")
    try:
        return codecs.lookup(named).name
    except LookupError:
        return "latin-1"


# how much of a field's value a refusal quotes (as Starlette's latin-1 fallback reads it)
_QUOTED_BYTES = 60

# where FormBytesMiddleware leaves a request's parts, in its ASGI scope
_SCOPE_KEY = "ragstore.form_parts"


@dataclass
class SentPart:
    """One part of a multipart upload, as sent: its name's bytes, whether it is a file
    (its ``Content-Disposition`` names a ``filename``, as Starlette tells them), and for a
    field whether its value was text in the form's charset, and the value's first bytes."""

    name: bytes = b""
    is_file: bool = False
    # named only in ``filename*`` (RFC 5987), which RFC 7578 forbids in a form and neither
    # parser reads: the part reads as a field, not a file
    star_only: bool = False
    text: bool = True
    head: bytearray = field(default_factory=bytearray)


class _PartReader:
    """python-multipart's parser over an upload's bytes, keeping what :class:`SentPart`
    holds: a field's value is decoded as it passes (one incremental decoder a part), not
    kept, so a part costs its first bytes whatever its size."""

    def __init__(self, boundary: bytes, charset: str) -> None:
        self.charset = charset
        self.parts: list[SentPart] = []
        self.broken = False  # bytes the parser refused: Starlette's parser refuses them too
        self.ended = False  # the closing boundary was read (python-multipart's on_end)
        self._part = SentPart()
        self._decoder: codecs.IncrementalDecoder | None = None
        self._header = self._value = b""
        self._disposition = b""
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._begin,
                "on_header_field": self._header_field,
                "on_header_value": self._header_value,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._data,
                "on_part_end": self._end,
                "on_end": self._ended,
            },
        )

    def write(self, chunk: bytes) -> None:
        if self.broken:
            return
        try:
            self._parser.write(chunk)
        except FormParserError:
            self.broken = True

    def finalize(self) -> None:
        if not self.broken:
            try:
                self._parser.finalize()
            except FormParserError:
                self.broken = True

    def _begin(self) -> None:
        self._part, self._decoder, self._disposition = SentPart(), None, b""

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        if self._header.lower() == b"content-disposition":
            self._disposition = self._value
        self._header = self._value = b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        self._part.name = options.get(b"name", b"")
        self._part.is_file = b"filename" in options
        self._part.star_only = not self._part.is_file and bool(
            _FILENAME_STAR.search(self._disposition)
        )
        if not self._part.is_file:
            self._decoder = codecs.getincrementaldecoder(self.charset)()

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._decoder is None:
            return
        chunk = data[start:end]
        part = self._part
        if len(part.head) < _QUOTED_BYTES:
            part.head += chunk[: _QUOTED_BYTES - len(part.head)]
        if part.text:
            try:
                self._decoder.decode(chunk)
            except UnicodeDecodeError:
                part.text = False

    def _end(self) -> None:
        if self._decoder is not None and self._part.text:
            try:
                self._decoder.decode(b"", final=True)
            except UnicodeDecodeError:
                self._part.text = False
        self.parts.append(self._part)

    def _ended(self) -> None:
        self.ended = True


def cut_off_error(boundary: bytes, parts: int) -> InputError:
    """The refusal of a multipart body that ended without its closing boundary, raised by
    its reader (:class:`FormBytesMiddleware`) to whoever reads the body, and answered as
    the ``InputError`` it is (``api/errors.py``, ``_unreadable_form``)."""
    shown = boundary[:70].decode("latin-1")
    return InputError(
        f"the multipart body ends without its closing boundary (--{shown}--) after "
        f"{parts} whole part(s): it was cut off, and its last part with it; send the whole "
        "upload again, with a Content-Length that counts all of it: nothing was stored"
    )


class FormBytesMiddleware:
    """ASGI middleware: a multipart request's parts, as sent (:class:`SentPart`), read as
    its body passes on to the app, for :func:`undecoded_fields`. Installed innermost, so
    that it reads the bytes Starlette's parser reads."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        content_type = (
            Headers(scope=scope).get("content-type", "") if scope["type"] == "http" else ""
        )
        kind, params = parse_options_header(content_type)
        boundary = params.get(b"boundary")
        if kind != b"multipart/form-data" or not boundary:
            await self.app(scope, receive, send)
            return
        reader = _PartReader(boundary, form_charset(content_type))
        scope[_SCOPE_KEY] = reader
        received = 0

        async def reading() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                body = message.get("body", b"")
                received += len(body)
                reader.write(body)
                if not message.get("more_body", False):
                    reader.finalize()
                    # a body the parser refused is answered so already
                    if received and not reader.ended and not reader.broken:
                        raise cut_off_error(boundary, len(reader.parts))
            return message

        await self.app(scope, reading, send)


_FILENAME_STAR = re.compile(rb"(?i)(?:^|;)\s*filename\*")


def named_by_filename_star(request: Request, field: str) -> list[bool]:
    """For each part of form field ``field`` of ``request`` (a multipart upload whose form
    was read), in order, whether it named its file only in ``filename*``: such a part was
    refused as having no file name, which it had sent."""
    reader = request.scope.get(_SCOPE_KEY)
    if not isinstance(reader, _PartReader):
        return []
    wanted = field.encode(reader.charset, "replace")
    return [p.star_only for p in reader.parts if p.name == wanted]


def undecoded_fields(request: Request) -> list[tuple[str, Undecoded]]:
    """Each form field of ``request`` (a multipart upload whose form was read) whose value
    is not text in the form's charset: its name as Starlette decoded it, and its value's
    first bytes as Starlette's latin-1 fallback read them (for the refusal to quote)."""
    reader = request.scope.get(_SCOPE_KEY)
    if not isinstance(reader, _PartReader):
        raise RuntimeError(
            "a multipart upload reached its route without FormBytesMiddleware "
            "(api/app.py installs it): its fields' bytes were not read"
        )
    return [
        (_marked_decode(p.name, reader.charset), Undecoded(bytes(p.head).decode("latin-1")))
        for p in reader.parts
        if not p.is_file and not p.text
    ]


# the filename parameter renamed, so that the parser's Windows-path workaround (which only
# looks at a key named "filename") leaves its value whole
_FILENAME_KEY = re.compile(r"(?i)(?<![\w*-])filename(?=\s*=)")


def sent_filename(upload: UploadFile, charset: str = "utf-8") -> str | None:
    """The file name of ``upload`` as its part's ``Content-Disposition`` header sent it
    (``None``: the header names none, or it cannot be read), decoded as the parser
    decodes it: an :class:`Undecoded` string where its bytes are not ``charset`` text."""
    header = upload.headers.get("content-disposition")
    if header is None:
        return None
    _, params = parse_options_header(_FILENAME_KEY.sub("sent-filename", header))
    raw = params.get(b"sent-filename")
    return None if raw is None else _marked_decode(raw, charset)
