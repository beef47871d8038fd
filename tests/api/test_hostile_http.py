"""Hostile HTTP framing sent to a real server on loopback: a compressed body, a query
parameter given twice, a multipart body the form parser cannot read. Each is refused with
one problem naming what to change (422; 415 for a compressed body), and a refused write
stores nothing; so are upload names and metadata the parser changed on the way. (The JSON
bodies themselves are fuzzed in test_fuzz_inputs.py; the HTTP parser's limits in
test_server_limits.py.)"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator

import httpx
import pytest

from ragstore import Client

COLL = "hh"
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def http(open_url: str) -> Iterator[httpx.Client]:
    with Client(open_url) as c:
        c.create_collection(COLL)
        c.add_texts(COLL, ["alpha beta", "gamma delta"], ids=["a", "b"])
    with httpx.Client(base_url=open_url, timeout=30) as h:
        yield h


def refused(
    r: httpx.Response, says: str, *, status: int = 422, code: str = "invalid_input"
) -> None:
    assert r.status_code == status, r.text[:300]
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == code
    assert says in r.json()["detail"], r.json()["detail"]


def stored_ids(http: httpx.Client) -> list[str]:
    r = http.post(f"/v1/collections/{COLL}/texts/get", json={"ids": ["a", "b", "z1", "z2"]})
    assert r.status_code == 200, r.text[:300]
    return sorted(t["id"] for t in r.json()["data"])


def test_a_compressed_body_is_refused_naming_its_content_encoding(http: httpx.Client) -> None:
    """415 with Accept-Encoding: identity (it was a 422 invalid_input). Nothing decodes a
    Content-Encoding: a gzipped JSON body was answered "not UTF-8
    text: the byte 0x8b", a gzipped upload "body.files: Field required", and a body
    labelled br but sent plain was read as if unlabelled."""
    texts = json.dumps({"texts": ["zeta"], "ids": ["z1"]}).encode()
    upload = (
        b'--B\r\nContent-Disposition: form-data; name="files"; filename="z.md"\r\n\r\n'
        b"# z\r\n--B--\r\n"
    )
    for path, body, ctype, coding in (
        (f"/v1/collections/{COLL}/search", gzip.compress(b'{"query": "alpha"}'), JSON, "gzip"),
        (f"/v1/collections/{COLL}/texts", gzip.compress(texts), JSON, "gzip"),
        (f"/v1/collections/{COLL}/texts", texts, JSON, "br"),
        (f"/v1/collections/{COLL}/texts", texts, JSON, "identity, x-zip"),
        (
            f"/v1/collections/{COLL}/documents/upload",
            gzip.compress(upload),
            {"Content-Type": "multipart/form-data; boundary=B"},
            "gzip",
        ),
    ):
        r = http.post(path, content=body, headers={**ctype, "Content-Encoding": coding})
        # RFC 9110 15.5.16: 415 for a content coding not taken; RFC 7694: say what is
        refused(
            r,
            f"sent with Content-Encoding: {coding.removeprefix('identity, ')}, which",
            status=415,
            code="unsupported_content_encoding",
        )
        assert r.headers["accept-encoding"] == "identity"
        assert "send it uncompressed" in r.json()["detail"]
    assert stored_ids(http) == ["a", "b"]
    docs = http.get(f"/v1/collections/{COLL}/documents").json()["data"]
    assert "z.md" not in [d["name"] for d in docs]
    # identity is no encoding at all
    r = http.post(
        f"/v1/collections/{COLL}/texts",
        content=json.dumps({"texts": ["eta"], "ids": ["z2"]}).encode(),
        headers={**JSON, "Content-Encoding": "identity"},
    )
    assert r.status_code == 201, r.text[:300]
    assert stored_ids(http) == ["a", "b", "z2"]


@pytest.mark.parametrize(
    ("path", "param"),
    [
        ("/v1/collections?limit=1&limit=500", "limit"),
        (f"/v1/collections/{COLL}/documents?format=text&format=markdown", "format"),
        (f"/v1/collections/{COLL}/documents?limit=1&cursor=x&limit=2", "limit"),
        ("/v1/jobs?collection=hh&collection=other", "collection"),
    ],
)
def test_a_query_parameter_given_twice_is_refused_naming_it(
    http: httpx.Client, path: str, param: str
) -> None:
    """The route read the last value and dropped the first without a word, as a JSON
    key given twice was before it was refused: ``?limit=1&limit=500`` answered 500."""
    refused(http.get(path), f"query parameter {param!r} is given 2 times for GET")
    assert http.get(path.split("&")[0]).status_code == 200


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (
            b'--B\r\nContent-Disposition: form-data; name="files"; filename="'
            + b"n" * 10_000
            + b'.md"\r\n\r\n# n\r\n--B--\r\n',
            "(Maximum header size exceeded)",
        ),
        (b"no boundary here", "(Expected boundary character"),
    ],
    ids=["10k-file-name", "no-boundary"],
)
def test_a_multipart_body_the_parser_cannot_read_says_why(
    http: httpx.Client, body: bytes, says: str
) -> None:
    """Starlette answered both "Invalid multipart data.": neither what was wrong nor how
    to send the upload."""
    before = http.get(f"/v1/collections/{COLL}").json()["documents"]
    r = http.post(
        f"/v1/collections/{COLL}/documents/upload",
        content=body,
        headers={"Content-Type": "multipart/form-data; boundary=B"},
    )
    refused(r, f"the multipart body could not be read {says}")
    assert "at most 4 KB" in r.json()["detail"]
    assert http.get(f"/v1/collections/{COLL}").json()["documents"] == before


def multipart(*parts: tuple[bytes, bytes | None, bytes]) -> bytes:
    """A multipart body of (field name, file name or None, content) parts, as sent."""
    body = b""
    for name, filename, content in parts:
        named = b"" if filename is None else b'; filename="' + filename + b'"'
        body += b'--B\r\nContent-Disposition: form-data; name="' + name + b'"' + named
        body += b"\r\n\r\n" + content + b"\r\n"
    return body + b"--B--\r\n"


def upload(http: httpx.Client, body: bytes) -> httpx.Response:
    return http.post(
        f"/v1/collections/{COLL}/documents/upload",
        content=body,
        headers={"Content-Type": "multipart/form-data; boundary=B"},
    )


def doc_names(http: httpx.Client) -> list[str]:
    r = http.get(f"/v1/collections/{COLL}/documents", params={"limit": 500})
    return sorted(d["name"] for d in r.json()["data"])


@pytest.mark.parametrize(
    ("filename", "says"),
    [
        (rb"C:\x.md", r"invalid document name 'C:\\x.md': it is an absolute path"),
        # quoted: \\srv\x.md, a Windows share, which the parser also cut to x.md
        (rb"\\\\srv\\x.md", r"invalid document name '\\\\srv\\x.md': it is an absolute"),
        (b"x.md/", "invalid document name 'x.md/': it ends with a slash"),
        (b"a.md ", "its part 'a.md ' starts or ends with white space; remove it"),
        (b"\xe9t\xe9.md", "its file name is not UTF-8 text (read as '\xe9t\xe9.md')"),
    ],
    ids=["windows-drive", "windows-share", "trailing-slash", "trailing-space", "latin-1"],
)
def test_an_upload_name_changed_on_the_way_is_refused_naming_its_part(
    http: httpx.Client, filename: bytes, says: str
) -> None:
    """Each was stored under another name, answered 201: ``C:\\x.md`` as ``x.md`` (the
    parser keeps a Windows path's last part), ``x.md/`` as ``x.md``, ``a.md `` as a text
    document, latin-1 bytes garbled. One bad name refuses the whole upload, as before."""
    before = doc_names(http)
    body = multipart((b"files", b"ok.md", b"# ok"), (b"files", filename, b"# bad"))
    r = upload(http, body)
    refused(r, "part 1 of field 'files' (counting from 0): ")
    assert says in r.json()["detail"], r.json()["detail"]
    assert "nothing was stored" in r.json()["detail"]
    assert doc_names(http) == before


@pytest.mark.parametrize(
    "cut",
    [
        b'--B\r\nContent-Disposition: form-data; name="files"; filename="cut2.md"\r\n\r\n# cu',
        b"",  # the last part ended, its closing boundary not sent
        b'--B\r\nContent-Disposition: form-data; name="background"\r\n\r\ntrue\r\n',
    ],
    ids=["inside-a-file", "before-the-closing-boundary", "after-a-field"],
)
def test_a_multipart_body_cut_off_is_refused_and_nothing_stored(
    http: httpx.Client, cut: bytes
) -> None:
    """A body cut off with a Content-Length that counts only what was sent (a proxy or a
    client giving up mid-stream): neither parser checks for the closing boundary, so the
    parts that had ended were stored, the one cut off dropped, and the upload answered
    201 for fewer files than were sent (with ``background``: "body.files: Field
    required")."""
    before = doc_names(http)
    whole = multipart((b"files", b"cut1.md", b"# one whole file"))
    body = whole.removesuffix(b"--B--\r\n") + cut
    r = upload(http, body)
    refused(r, "the multipart body ends without its closing boundary (--B--) after ")
    assert "it was cut off" in r.json()["detail"]
    assert "nothing was stored" in r.json()["detail"]
    assert doc_names(http) == before
    assert http.get("/v1/jobs").json()["count"] == 0


def test_the_json_route_refuses_the_same_names(http: httpx.Client) -> None:
    for name, says in (("x.md/", "it ends with a slash"), ("a.md ", "its part 'a.md ' starts")):
        r = http.post(f"/v1/collections/{COLL}/documents", json={"name": name, "text": "# x"})
        refused(r, f"invalid document name {name!r}: {says}")
    assert "x.md" not in doc_names(http)


def test_upload_metadata_that_is_not_utf8_is_refused(http: httpx.Client) -> None:
    """Starlette read the bytes as latin-1 and the metadata was stored garbled."""
    before = doc_names(http)
    body = multipart((b"files", b"m.md", b"# m"), (b"metadata", None, b'{"team": "\xe9quipe"}'))
    r = upload(http, body)
    refused(r, "form field 'metadata' of the upload is not UTF-8 text (read as")
    assert doc_names(http) == before
    # the same text in UTF-8 is stored as sent
    good = multipart((b"files", b"m.md", b"# m"), (b"metadata", None, '{"t": "équipe"}'.encode()))
    r = upload(http, good)
    assert r.status_code == 201, r.text[:300]
    assert r.json()["data"][0]["metadata"]["t"] == "équipe"


def test_a_metadata_key_no_filter_can_name_is_refused_on_every_route(http: httpx.Client) -> None:
    """A key of 1 MB was stored, though a filter names keys of 256 characters at most."""
    long = "k" * 257
    says = f"holds a key of 257 characters ({long[:40]!r}...)"
    before = doc_names(http)
    refused(
        http.post(
            f"/v1/collections/{COLL}/texts",
            json={"texts": ["zeta"], "ids": ["z1"], "metadatas": [{long: 1}]},
        ),
        says,
    )
    refused(
        http.post(
            f"/v1/collections/{COLL}/documents",
            json={"name": "k.md", "text": "# k", "metadata": {"a": {long: 1}}},
        ),
        f"{says} at 'metadata.a'; a key may have at most 256 characters, the longest a",
    )
    meta = json.dumps({long: 1}).encode()
    refused(upload(http, multipart((b"files", b"k.md", b"# k"), (b"metadata", None, meta))), says)
    assert doc_names(http) == before
    assert "z1" not in stored_ids(http)


def test_a_metadata_key_path_no_filter_can_name_is_refused_on_every_route(
    http: httpx.Client,
) -> None:
    """Keys of 200 and 100 characters passed the key rule, and their path (301 characters
    joined by dots, past what a filter names) was stored; the request body's own keys
    (``metadata``) are not counted in it."""
    a, b = "a" * 200, "b" * 100
    says = "holds a key path of 301 characters"
    before = doc_names(http)
    texts = {"texts": ["zeta"], "ids": ["z1"], "metadatas": [{a: {b: 1}}]}
    refused(http.post(f"/v1/collections/{COLL}/texts", json=texts), says)
    doc = {"name": "p.md", "text": "# p", "metadata": {a: {b: 1}}}
    refused(http.post(f"/v1/collections/{COLL}/documents", json=doc), says)
    meta = json.dumps({a: {b: 1}}).encode()
    refused(upload(http, multipart((b"files", b"p.md", b"# p"), (b"metadata", None, meta))), says)
    assert doc_names(http) == before
    assert "z1" not in stored_ids(http)
    edge = {"a" * 250: {"b" * 5: 1}}  # 256 characters: stored
    doc = {"name": "edge.md", "text": "# edge", "metadata": edge}
    assert http.post(f"/v1/collections/{COLL}/documents", json=doc).status_code == 201


@pytest.mark.parametrize(
    ("meta", "says"),
    [
        ({"": 1}, "holds an empty key; a search filter cannot name an empty key"),
        ({"a": {"": 1}}, "holds an empty key at 'a'; a search filter cannot name"),
        ({"v" + "." * 200: 1}, "holds a key path of 401 characters ('v\\\\."),
    ],
)
def test_an_empty_or_escaped_long_metadata_key_is_refused_on_every_route(
    http: httpx.Client, meta: dict[str, object], says: str
) -> None:
    """An upload's metadata ``{"": 1}`` was answered 201 and stored while a search naming
    the key was refused 400 ("non-empty keys"); a key of a dot and 200 more passed the
    path rule measured unescaped (201 characters), where a filter names it escaped (401)."""
    before = doc_names(http)
    texts = {"texts": ["zeta"], "ids": ["z1"], "metadatas": [meta]}
    refused(http.post(f"/v1/collections/{COLL}/texts", json=texts), f"metadatas[0] {says}")
    doc = {"name": "e.md", "text": "# e", "metadata": meta}
    refused(http.post(f"/v1/collections/{COLL}/documents", json=doc), f"metadata {says}")
    body = multipart((b"files", b"e.md", b"# e"), (b"metadata", None, json.dumps(meta).encode()))
    refused(upload(http, body), f"metadata {says}")
    assert doc_names(http) == before
    assert "z1" not in stored_ids(http)


def test_a_large_float_in_metadata_reads_back_as_the_float_it_was(http: httpx.Client) -> None:
    """PostgreSQL writes a ``jsonb`` number back without an exponent: ``1e20`` was read as
    the integer 100000000000000000000 and ``1.5e300`` as an integer of 301 digits (not
    even equal to it), so metadata read from ragstore was refused when written back
    ("an integer out of the 64-bit range"). Integers within 64 bits stay integers."""
    meta = {"big": 1e20, "huge": 1.5e300, "int": 2**63 - 1, "neg": -(2**63)}
    texts = {"texts": ["omega float"], "ids": ["f1"], "metadatas": [meta]}
    assert http.post(f"/v1/collections/{COLL}/texts", json=texts).status_code == 201
    r = http.post(f"/v1/collections/{COLL}/texts/get", json={"ids": ["f1"]})
    got = {k: r.json()["data"][0]["metadata"][k] for k in meta}
    assert got == meta
    assert [type(v) for v in got.values()] == [float, float, int, int]
    # a search hit's metadata is read from JSON text by the search itself: the same reader
    body = {"query": "omega float", "k": 1, "mode": "fulltext"}
    r = http.post(f"/v1/collections/{COLL}/search", json=body)
    hit = r.json()["data"][0]
    assert {k: hit["metadata"][k] for k in meta} == meta, hit["metadata"]
    assert [type(hit["metadata"][k]) for k in meta] == [float, float, int, int]
    again = {"texts": ["omega again"], "ids": ["f2"], "metadatas": [got]}
    r = http.post(f"/v1/collections/{COLL}/texts", json=again)
    assert r.status_code == 201, r.text[:300]
    r = http.post(f"/v1/collections/{COLL}/texts/delete", json={"ids": ["f1", "f2"]})
    assert r.status_code == 200, r.text[:300]


def test_a_document_name_with_a_character_not_allowed_names_it(http: httpx.Client) -> None:
    """``café.md`` was refused as not "made of letters, digits, ...", é being a letter,
    with no word of which character was wrong (it is allowed now: test_unicode_names.py);
    so was a name holding a newline."""
    before = doc_names(http)
    says = "the character '€' (U+20AC) at position 4 is not allowed; "
    doc = {"name": "cost€.md", "text": "# c"}
    refused(http.post(f"/v1/collections/{COLL}/documents", json=doc), says)
    refused(upload(http, multipart((b"files", "cost€.md".encode(), b"# c"))), says)
    r = upload(http, multipart((b"files", "cost€.md".encode(), b"# c")))
    assert "made of letters, marks and digits (of any script)" in r.json()["detail"]
    doc = {"name": "a\nb.md", "text": "# n"}
    says = "the character '\\n' (U+000A, a control character) at position 1 is not allowed"
    refused(http.post(f"/v1/collections/{COLL}/documents", json=doc), says)
    assert doc_names(http) == before
