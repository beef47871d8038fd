"""Document names in any script, through a real server on loopback: ``café.md``,
``日本語/メモ.md`` and ``Ärger.txt`` were refused on every server surface (the HTTP routes,
the Python client, ``ragstore ingest`` with ``RAGSTORE_URL``, the MCP tool) as not made of
ASCII letters, though a local ``ragstore ingest`` stored them. A name is stored in its
composed Unicode form (NFC): sent decomposed (NFD, as macOS writes file names) it is the
same document. Characters that make a name read other than it is stay refused, named."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ragstore import Client
from ragstore.config import Settings
from ragstore.errors import InputError
from ragstore.uploads import names

COLL = "unicode-names"
NAMES = ["café.md", "日本語/メモ.md", "Ärger.txt", "हिन्दी/नोट.md"]
TEXTS = {
    "café.md": "# Café\n\nZebra crossings near the café.\n",
    "日本語/メモ.md": "# メモ\n\nZebra notes in Japanese.\n",
    "Ärger.txt": "Zebra trouble, in German.\n",
    "हिन्दी/नोट.md": "# नोट\n\nZebra notes in Hindi.\n",
}


def nfd(name: str) -> str:
    return unicodedata.normalize("NFD", name)


@pytest.fixture(scope="module")
def http(open_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=open_url, timeout=60) as h:
        yield h


def multipart(*parts: tuple[bytes, bytes]) -> bytes:
    """A multipart body of (Content-Disposition parameters, content) file parts, as sent:
    the file name in raw UTF-8 (RFC 7578 §4.2), as browsers and httpx send it."""
    body = b""
    for params, content in parts:
        body += b'--B\r\nContent-Disposition: form-data; name="files"; ' + params
        body += b"\r\n\r\n" + content + b"\r\n"
    return body + b"--B--\r\n"


def upload(http: httpx.Client, body: bytes, collection: str = COLL) -> httpx.Response:
    return http.post(
        f"/v1/collections/{collection}/documents/upload",
        content=body,
        headers={"Content-Type": "multipart/form-data; boundary=B"},
    )


def listed(http: httpx.Client, collection: str = COLL) -> dict[str, dict[str, Any]]:
    r = http.get(f"/v1/collections/{collection}/documents", params={"limit": 500})
    assert r.status_code == 200, r.text[:300]
    return {d["name"]: d for d in r.json()["data"]}


def test_names_in_any_script_are_stored_listed_read_and_found(http: httpx.Client) -> None:
    body = multipart(*((b'filename="' + n.encode() + b'"', TEXTS[n].encode()) for n in NAMES[:3]))
    r = upload(http, body)
    assert r.status_code == 201, r.text[:300]
    assert [d["name"] for d in r.json()["data"]] == NAMES[:3]
    assert {d["status"] for d in r.json()["data"]} == {"added"}
    # the JSON route takes them too
    doc = {"name": NAMES[3], "text": TEXTS[NAMES[3]]}
    r = http.post(f"/v1/collections/{COLL}/documents", json=doc)
    assert r.status_code == 201, r.text[:300]
    assert r.json()["name"] == NAMES[3]
    docs = listed(http)
    assert sorted(docs) == sorted(NAMES)
    for name in NAMES:
        got = http.get(f"/v1/collections/{COLL}/documents/{docs[name]['id']}")
        assert got.status_code == 200, got.text[:300]
        assert got.json()["name"] == name
        assert got.json()["source"] == name  # not the server's path of it
    # a name's start finds it, typed decomposed too
    r = http.get(f"/v1/collections/{COLL}/documents", params={"source_prefix": nfd("café")})
    assert [d["name"] for d in r.json()["data"]] == ["café.md"]
    hits = http.post(
        f"/v1/collections/{COLL}/search", json={"query": "zebra", "k": 10, "mode": "fulltext"}
    ).json()["data"]
    assert {h["source"] for h in hits} == {h["name"] for h in hits} == set(NAMES)

    # the same bytes again: unchanged; the same name decomposed (NFD): the same document
    r = upload(
        http, multipart((b'filename="' + b"caf\xc3\xa9.md" + b'"', TEXTS["café.md"].encode()))
    )
    assert [(d["name"], d["status"]) for d in r.json()["data"]] == [("café.md", "unchanged")]
    for name in ("café.md", "Ärger.txt", "日本語/メモ.md"):
        sent = b'filename="' + nfd(name).encode() + b'"'
        r = upload(http, multipart((sent, TEXTS[name].encode())))
        assert r.status_code == 201, r.text[:300]
        assert [(d["name"], d["status"]) for d in r.json()["data"]] == [(name, "unchanged")]
        assert r.json()["data"][0]["id"] == docs[name]["id"]
    r = upload(http, multipart((b'filename="' + nfd("café.md").encode() + b'"', b"# changed")))
    assert [(d["name"], d["status"]) for d in r.json()["data"]] == [("café.md", "updated")]
    assert sorted(listed(http)) == sorted(NAMES)


def test_a_name_sent_composed_and_decomposed_in_one_upload_is_refused(
    http: httpx.Client,
) -> None:
    """Two names that read alike are one document: stored one over the other, both were
    answered as stored."""
    before = listed(http)
    body = multipart(
        (b'filename="' + "Öl.md".encode() + b'"', b"# one"),
        (b'filename="' + nfd("Öl.md").encode() + b'"', b"# two"),
    )
    r = upload(http, body)
    assert r.status_code == 422, r.text[:300]
    assert "appears twice in one request" in r.json()["detail"]
    assert "the same name in two Unicode forms" in r.json()["detail"]
    assert listed(http) == before


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("evil\u202egnp.md", "U+202E, an invisible formatting character) at position 4"),
        ("a\u2066b.md", "U+2066, an invisible formatting character) at position 1"),
        ("pay\u200bpal.md", "U+200B, an invisible formatting character) at position 3"),
        ("\ufeffa.md", "U+FEFF, an invisible formatting character) at position 0"),
        ("a\u00a0b.md", "U+00A0, a space other than the ASCII space) at position 1"),
        ("a\u2028b.md", "U+2028, a line separator) at position 1"),
        ("a\ue000.md", "U+E000, a private-use character) at position 1"),
        ("a\x07.md", "U+0007, a control character) at position 1"),
        ("a\u034fb.md", "U+034F, a character that shows as nothing) at position 1"),
        ("\u3164.md", "U+3164, a character that shows as nothing) at position 0"),
        ("\u0301a.md", "does not start with a letter or digit"),
        ("日" * 86 + ".md", "is 261 bytes in UTF-8"),
        ("é" * 129, "has 129 characters"),
    ],
    ids=[
        "rlo",
        "lri",
        "zero-width-space",
        "bom",
        "nbsp",
        "line-separator",
        "private-use",
        "bell",
        "grapheme-joiner",
        "hangul-filler",
        "leading-mark",
        "bytes",
        "chars",
    ],
)
def test_a_name_that_reads_other_than_it_is_is_refused_naming_why(
    http: httpx.Client, name: str, says: str
) -> None:
    before = listed(http)
    r = http.post(f"/v1/collections/{COLL}/documents", json={"name": name, "text": "# x"})
    assert r.status_code == 422, r.text[:300]
    assert r.json()["detail"].startswith(f"invalid document name {name!r}: "), r.json()
    assert says in r.json()["detail"], r.json()["detail"]
    assert "made of letters, marks and digits (of any script)" in r.json()["detail"]
    r = upload(http, multipart((b'filename="' + name.encode() + b'"', b"# x")))
    assert r.status_code == 422, r.text[:300]
    assert says in r.json()["detail"], r.json()["detail"]
    assert listed(http) == before


def test_the_python_client_uploads_and_ingests_names_in_any_script(
    open_url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "notes"
    (folder / "日本語").mkdir(parents=True)
    (folder / "日本語" / "メモ.md").write_text(TEXTS["日本語/メモ.md"])
    (folder / nfd("Ärger.txt")).write_text(TEXTS["Ärger.txt"])  # a macOS name
    with Client(open_url) as client:
        out = client.upload("unicode-client", [("café.md", TEXTS["café.md"].encode())])
        assert [d["name"] for d in out["data"]] == ["café.md"]
        out = client.ingest("unicode-client", folder)
        assert sorted(d["name"] for d in out["data"]) == ["Ärger.txt", "日本語/メモ.md"]
        names = [d["name"] for d in client.list_documents("unicode-client")["data"]]
        assert sorted(names) == ["café.md", "Ärger.txt", "日本語/メモ.md"]
        # a local folder may hold NFC and NFD twins (two files on disk): one name here
        (folder / "Ärger.txt").write_text("another file")
        with pytest.raises(InputError, match="the same name in two Unicode forms"):
            client.ingest("unicode-client", folder)
        with pytest.raises(InputError, match=r"U\+202E, an invisible formatting character"):
            client.upload("unicode-client", [("a\u202eb.md", b"# x")])


def test_a_file_name_given_only_as_filename_star_says_to_send_filename(
    http: httpx.Client,
) -> None:
    """RFC 7578 §4.2 forbids ``filename*`` in multipart/form-data and the parser does not
    read it: a part that names its file only so is no file."""
    r = upload(http, multipart((b"filename*=UTF-8''caf%C3%A9.md", b"# c")))
    assert r.status_code == 422, r.text[:300]
    assert "names its file only in filename*" in r.json()["detail"]
    # with both, the plain one is the name
    r = upload(http, multipart((b"filename=\"cafe2.md\"; filename*=UTF-8''caf%C3%A9.md", b"# c")))
    assert [d["name"] for d in r.json()["data"]] == ["cafe2.md"]


def test_an_ascii_name_maps_to_the_source_it_always_did(settings: Settings) -> None:
    root = names.upload_root(settings, "c").resolve()
    for name, parts in (
        ("notes/a.md", ("notes", "a.md")),
        ("notes\\a.md", ("notes", "a.md")),
        ("./x (1)+y=z@w,v.md", ("x (1)+y=z@w,v.md",)),
        ("a" * 128, ("a" * 128,)),
    ):
        assert names.source_of(settings, "c", name) == str(root.joinpath(*parts))
        assert names.source_name(settings, "c", names.source_of(settings, "c", name)) == (
            "/".join(parts)
        )
    assert names.source_of(settings, "c", nfd("café.md")) == str(root / "café.md")
    with pytest.raises(InputError, match=r"its part '\.\.' does not start with a letter"):
        names.safe_name("notes/../a.md")
    with pytest.raises(InputError, match="it has 9 parts"):
        names.safe_name("/".join("a" * 9))


def test_a_local_ingest_keeps_nfc_and_nfd_twins_apart_and_add_document_does_not(
    settings: Settings, tmp_path: Path
) -> None:
    """A local folder may hold ``Öl.md`` composed and decomposed: two files on disk, each
    stored under its own path (as before). A name given to ``add_document`` is an
    upload's, stored composed (NFC): the two spellings are one document."""
    from ragstore import Store

    folder = tmp_path / "twins"
    folder.mkdir()
    (folder / "Öl.md").write_text("# One\n\nOlive oil.\n")
    (folder / nfd("Öl.md")).write_text("# Two\n\nEngine oil.\n")
    with Store(settings=settings) as store:
        out = store.ingest("local-twins", folder)
        sources = sorted(d["source"] for d in out["data"])
        assert sources == sorted([str(folder / "Öl.md"), str(folder / nfd("Öl.md"))])
        first = store.add_document("local-twins", nfd("Öl.md"), "# Oil\n\nOlive.\n")
        again = store.add_document("local-twins", "Öl.md", "# Oil\n\nOlive.\n")
        assert (first["id"], again["status"]) == (again["id"], "unchanged")
        assert again["source"] == again["name"] == "Öl.md"  # composed (NFC), as stored
