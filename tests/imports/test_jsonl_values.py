"""A JSONL record's NaN or Infinity: no id (refused naming the line), and metadata the
database cannot store (refused as unstorable, or left out with its record)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.imports.helpers import checksum, collection_state, import_json, stored_metadata, vectors

DIM = 12


@pytest.mark.parametrize("spelled", ["NaN", "Infinity", "-Infinity"])
def test_a_jsonl_id_that_is_nan_or_infinity_is_refused_naming_the_line(
    spelled: str, cli_env: dict[str, str], tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # Python's JSON reader takes NaN and Infinity, and such an id was stored as "nan" or
    # "inf": no id the source has, and no JSON one
    vecs = vectors(2, DIM, seed=33)
    src = tmp_path / "nan.jsonl"
    src.write_text(
        json.dumps({"id": "a", "text": "t", "vector": vecs[0].tolist()})
        + "\n"
        + f'{{"id": {spelled}, "text": "t", "vector": {json.dumps(vecs[1].tolist())}}}\n'
    )
    coll = f"jsonl-nan-{spelled.lower()}"
    args = [str(src), "-c", coll, "--model", "legacy@v1", "--dimension", str(DIM)]
    for more in ([], ["--on-invalid", "skip"]):
        code, _, err = import_json(capsys, *args, *more)
        assert code == 65, err
        assert f"{src} line 2: the id is {spelled}" in err
        assert 'give the id as a string ("' in err
        assert not collection_state(cli_env["RAGSTORE_DATABASE_URL"], coll)["exists"]


def test_jsonl_metadata_nan_is_refused_as_unstorable_and_skip_leaves_its_record_out(
    cli_env: dict[str, str], tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # NaN and infinities have no JSON form: such metadata is refused naming the record
    # and key, as add_texts refuses it, never stored as null or dropped
    vecs = vectors(2, DIM, seed=34)
    src = tmp_path / "meta.jsonl"
    src.write_text(
        json.dumps({"id": "a", "text": "t", "vector": vecs[0].tolist(), "score": 1.5})
        + "\n"
        + f'{{"id": "b", "text": "t", "vector": {json.dumps(vecs[1].tolist())}, '
        '"metadata": {"score": NaN}}\n'
    )
    args = [str(src), "-c", "jsonl-meta-nan", "--model", "legacy@v1", "--dimension", str(DIM)]
    code, _, err = import_json(capsys, *args)
    assert code == 65
    assert "1 unstorable (first: b (metadata: " in err
    assert "score" in err
    db = cli_env["RAGSTORE_DATABASE_URL"]
    assert not collection_state(db, "jsonl-meta-nan")["exists"]
    code, report, err = import_json(capsys, *args, "--policy", "unstorable=skip")
    assert code == 0, err
    assert stored_metadata(db, "jsonl-meta-nan") == {"a": {"score": 1.5}}
    assert report["verification"]["source_checksum"] == checksum(["a"], vecs[:1])
