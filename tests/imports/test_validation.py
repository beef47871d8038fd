"""Validation before writing: each kind of bad record counted with its first ids, the
policies (abort, skip, keep), --dry-run, and the declared model's checks."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
from decimal import Decimal
from pathlib import Path

import numpy as np
import psycopg
import pytest

from ragstore import Store
from ragstore.errors import ImportSourceError, ImportValidationError, InputError
from ragstore.imports import (
    ImportOptions,
    SourceOptions,
    files,
    open_source,
    plan_import,
    run_import,
)
from ragstore.imports.records import Record, json_safe
from ragstore.imports.validate import parse_policies, validate
from ragstore.runtime import Runtime
from tests.conftest import run_cli
from tests.imports.helpers import collection_state, vectors, write_jsonl

DIM = 8


def _rec(rid: str | None, vec: list[float] | np.ndarray, text: str | None = "t") -> Record:
    return Record(rid, text, np.asarray(vec, dtype=np.float32), {})


def _dirty_store(path: Path) -> Path:
    """Twenty good records and every kind of bad one, several times over."""
    good = vectors(20, DIM)
    with path.open("w") as fh:
        for i in range(20):
            fh.write(
                json.dumps({"id": f"ok{i}", "text": f"good {i}", "vector": good[i].tolist()}) + "\n"
            )
        for i in range(3):  # 3 dimension mismatches
            fh.write(json.dumps({"id": f"short{i}", "text": "x", "vector": [1.0] * 5}) + "\n")
        fh.write('{"id": "nan1", "text": "x", "vector": [NaN, 1, 1, 1, 1, 1, 1, 1]}\n')
        fh.write('{"id": "inf1", "text": "x", "vector": [Infinity, 1, 1, 1, 1, 1, 1, 1]}\n')
        fh.write('{"id": "big1", "text": "x", "vector": [1e300, 1, 1, 1, 1, 1, 1, 1]}\n')
        # fits float32, not the half precision the HNSW index keeps
        fh.write('{"id": "half1", "text": "x", "vector": [1e5, 1, 1, 1, 1, 1, 1, 1]}\n')
        fh.write(json.dumps({"id": "zero1", "text": "x", "vector": [0.0] * DIM}) + "\n")
        fh.write(json.dumps({"id": "ok3", "text": "again", "vector": good[0].tolist()}) + "\n")
        fh.write(json.dumps({"id": "ok4", "text": "again", "vector": good[0].tolist()}) + "\n")
        fh.write(json.dumps({"id": "notext1", "vector": good[1].tolist()}) + "\n")
        fh.write(json.dumps({"id": "notext2", "text": "  ", "vector": good[2].tolist()}) + "\n")
        fh.write(json.dumps({"text": "no id", "vector": good[3].tolist()}) + "\n")
        # what PostgreSQL cannot store: the import failed at the write, naming no record
        fh.write(json.dumps({"id": "nul1", "text": "a\x00b", "vector": good[4].tolist()}) + "\n")
        bad_key = {"id": "sur1", "text": "x", "metadata": {"k\ud800": 1}}
        fh.write(json.dumps({**bad_key, "vector": good[5].tolist()}) + "\n")
    return path


def test_every_kind_is_counted_with_its_first_ids() -> None:
    recs = [
        _rec("a", [1.0] * DIM),
        _rec("a", [1.0] * DIM),
        _rec("b", [1.0] * 3),
        _rec("b0", []),  # no values: a dimension_mismatch, and it was a zero_vector too
        _rec("c", [np.nan] + [1.0] * 7),
        _rec("d", [0.0] * DIM),
        _rec("e", [1.0] * DIM, None),
        _rec(None, [1.0] * DIM),
        _rec("old", [1.0] * DIM),
        _rec("f", [1.0] * DIM, "nul\x00text"),
        Record("g", "t", np.ones(DIM, dtype=np.float32), {"a": {"b\x00": 1}}),
        _rec("h" * 2001, [1.0] * DIM),
        Record("v", "t", None, {}),  # no vector: only that, not a dimension_mismatch too
    ]
    report = validate(recs, DIM, parse_policies("skip", []), existing_ids={"old"})
    found = {i.kind: (i.count, i.first) for i in report.issues}
    assert found == {
        "missing_id": (1, ["record #8"]),
        "duplicate_id": (1, ["a"]),
        "existing_id": (1, ["old"]),
        "missing_vector": (1, ["v"]),
        "dimension_mismatch": (2, ["b (3 dims)", "b0 (0 dims)"]),
        "non_finite": (1, ["c"]),
        "zero_vector": (1, ["d"]),
        "missing_text": (1, ["e"]),
        "unstorable": (
            3,
            [
                "f (text: a NUL byte (\\u0000))",
                "g (metadata: a NUL byte (\\u0000) in a key at 'a')",
                "h" * 60 + "... (id: 2001 bytes, over the 2000 an id may have)",
            ],
        ),
    }
    assert report.kept == [0]
    assert report.skipped == 12 and report.ok


def test_a_vector_of_values_all_tiny_is_a_zero_vector() -> None:
    """Values all zero in half precision (1e-45, 2e-8 each) are zeros to the index: such
    a record was imported into a cosine space and then never found, where add_texts
    refuses it. One value at half precision's smallest subnormal (2**-24) gives the vector
    a direction, as do values of 5e-5 (subnormals: coarse, found). By l2 or inner product
    a vector of zeros in half precision is the origin, and ranks; all zeros stay refused."""
    edge = [2.0**-24] + [1e-45] * (DIM - 1)
    recs = [
        _rec("tiny", [1e-45] * DIM),
        _rec("small", [-2e-8] * DIM),
        _rec("zero", [0.0] * DIM),
        _rec("edge", edge),
        _rec("subnormal", [-5e-5] * DIM),
        _rec("ok", [1.0] * DIM),
    ]
    report = validate(recs, DIM, parse_policies("skip", []))
    found = {i.kind: (i.count, i.first) for i in report.issues}
    assert found == {
        "zero_vector": (3, ["tiny (largest 1.4e-45)", "small (largest 2e-08)", "zero"])
    }
    assert report.kept == [3, 4, 5] and report.skipped == 3
    by_l2 = validate(recs, DIM, parse_policies("skip", []), cosine=False)
    assert {i.kind: (i.count, i.first) for i in by_l2.issues} == {"zero_vector": (1, ["zero"])}
    assert by_l2.kept == [0, 1, 3, 4, 5]


def test_a_metadata_key_no_filter_can_name_is_unstorable() -> None:
    """A key past the longest filter path (256 characters) was imported and stored."""
    recs = [Record("k", "t", np.ones(DIM, dtype=np.float32), {"k" * 300: 1})]
    report = validate(recs, DIM, parse_policies("skip", []), existing_ids=set())
    found = {i.kind: (i.count, i.first) for i in report.issues}
    assert found == {
        "unstorable": (1, [f"k (metadata: a key of 300 characters ({'k' * 40!r}...))"])
    }
    assert report.kept == []
    recs = [Record("p", "t", np.ones(DIM, dtype=np.float32), {"a" * 200: {"b" * 100: 1}})]
    (issue,) = validate(recs, DIM, parse_policies("skip", [])).issues
    assert issue.first[0].startswith("p (metadata: a key path of 301 characters ('aaa")


def test_an_empty_or_escaped_long_metadata_key_in_a_jsonl_record_is_unstorable(
    tmp_path: Path,
) -> None:
    """A JSONL record's metadata ``{"": 1}`` was imported, a key no filter can name (a
    filter refuses an empty key), and so was a key of a dot and 200 more, measured
    unescaped (201 characters) where a filter names it escaped (401)."""
    jsonl = write_jsonl(
        tmp_path / "keys.jsonl",
        ["e", "n", "v", "ok"],
        vectors(4, DIM),
        extra=[{"metadata": m} for m in [{"": 1}, {"a": {"": 1}}, {"v" + "." * 200: 1}, {}]],
    )
    recs = list(open_source(str(jsonl), SourceOptions()).records())
    report = validate(recs, DIM, parse_policies("skip", []))
    (issue,) = report.issues
    assert (issue.kind, issue.count) == ("unstorable", 3)
    assert issue.first == [
        "e (metadata: an empty key)",
        "n (metadata: an empty key at 'a')",
        "v (metadata: a key path of 401 characters ("
        + repr("v" + "\\." * 19 + "\\")
        + "..."
        + repr("\\." * 10)
        + ") as a search filter names it)",
    ]
    assert report.kept == [3]


def test_metadata_holding_nan_or_infinity_is_unstorable_not_null(tmp_path: Path) -> None:
    """Python's JSON reader takes ``NaN`` and ``Infinity``: in a JSONL record's (or a CSV
    sidecar's) metadata they were stored as null, another value than the source's, where
    add_texts, the HTTP API and the CLI refuse them. A PostgreSQL numeric NaN too."""
    vec = [1.0] * DIM
    jsonl = tmp_path / "nan.jsonl"
    jsonl.write_text(
        f'{{"id": "n1", "text": "t", "vector": {vec}, "metadata": {{"m": {{"score": NaN}}}}}}\n'
        f'{{"id": "i1", "text": "t", "vector": {vec}, "rank": -Infinity}}\n'
    )
    matrix = tmp_path / "side.npy"
    np.save(matrix, np.ones((1, DIM), dtype=np.float32))
    (tmp_path / "side.csv").write_text('id,text,metadata\nc1,t,"{""s"": NaN}"\n')
    recs = list(open_source(str(jsonl), SourceOptions()).records())
    recs += list(open_source(str(matrix), SourceOptions()).records())
    recs.append(Record("d1", "t", np.ones(DIM, dtype=np.float32), json_safe({"p": Decimal("NaN")})))
    (issue,) = validate(recs, DIM, parse_policies("abort", [])).issues
    assert (issue.kind, issue.count) == ("unstorable", 4)
    assert issue.first == [
        "n1 (metadata: a non-finite number (nan) at 'm.score')",
        "i1 (metadata: a non-finite number (-inf) at 'rank')",
        "c1 (metadata: a non-finite number (nan) at 's')",
        "d1 (metadata: a non-finite number (nan) at 'p')",
    ]


def test_first_ids_stop_at_five_but_the_count_goes_on() -> None:
    recs = [_rec(f"z{i}", [0.0] * DIM) for i in range(12)]
    (issue,) = validate(recs, DIM, parse_policies("abort", [])).issues
    assert (issue.kind, issue.count, issue.first) == (
        "zero_vector",
        12,
        ["z0", "z1", "z2", "z3", "z4"],
    )


def test_missing_text_can_be_kept_and_other_kinds_cannot() -> None:
    recs = [_rec("a", [1.0] * DIM, None)]
    report = validate(recs, DIM, parse_policies("abort", ["missing_text=keep"]))
    assert report.ok and report.kept == [0]
    with pytest.raises(InputError, match="the action for zero_vector must be one of abort, skip"):
        parse_policies("abort", ["zero_vector=keep"])
    with pytest.raises(InputError, match="is not KIND=ACTION"):
        parse_policies("abort", ["nonsense=skip"])


def test_dry_run_reports_every_problem_and_writes_nothing(
    cli_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = _dirty_store(tmp_path / "dirty.jsonl")
    assert (
        run_cli(
            "import",
            str(src),
            "-c",
            "val-dry",
            "--model",
            "legacy@v1",
            "--dimension",
            str(DIM),
            "--dry-run",
        )
        == 65
    )
    out = capsys.readouterr()
    lines = {ln.split()[0]: ln.split() for ln in out.out.splitlines() if ln.startswith("  ")}
    assert lines["dimension_mismatch"][1:3] == ["3", "abort"]
    assert "short0 (5 dims), short1 (5 dims), short2 (5 dims)" in out.out
    assert lines["non_finite"][1] == "4" and "nan1, inf1, big1, half1" in out.out
    assert lines["zero_vector"][1] == "1"
    assert lines["duplicate_id"][1] == "2" and "first: ok3, ok4" in out.out
    assert lines["missing_text"][1] == "2" and "notext1, notext2" in out.out
    assert lines["missing_id"][1] == "1"
    assert lines["unstorable"][1] == "2" and "first: nul1 (text: a NUL byte" in out.out
    assert "error[import_invalid]" in out.err and "nothing was written" in out.err
    assert collection_state(cli_env["RAGSTORE_DATABASE_URL"], "val-dry")["exists"] is False


def test_dry_run_of_a_clean_plan_says_what_it_would_do(
    cli_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = _dirty_store(tmp_path / "dirty.jsonl")
    assert (
        run_cli(
            "import",
            str(src),
            "-c",
            "val-dry2",
            "--model",
            "legacy@v1",
            "--dimension",
            str(DIM),
            "--dry-run",
            "--on-invalid",
            "skip",
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "dry run: would import 20 records into 'val-dry2'; nothing was written" in out
    assert collection_state(cli_env["RAGSTORE_DATABASE_URL"], "val-dry2")["exists"] is False


def test_abort_policy_refuses_the_import_with_counts_and_ids(
    cli_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = _dirty_store(tmp_path / "dirty.jsonl")
    assert (
        run_cli(
            "import",
            str(src),
            "-c",
            "val-abort",
            "--model",
            "legacy@v1",
            "--dimension",
            str(DIM),
            "--policy",
            "missing_id=skip",
            "--policy",
            "dimension_mismatch=skip",
            "--policy",
            "non_finite=skip",
            "--policy",
            "missing_text=keep",
            "--policy",
            "duplicate_id=skip",
            "--policy",
            "unstorable=skip",
            "--no-backup",
        )
        == 65
    )
    err = capsys.readouterr().err.strip()
    assert err == (
        "error[import_invalid]: JSONL file " + str(src) + ": 1 zero_vector (first: "
        "zero1); nothing was written. Fix the source, or choose --policy KIND=skip "
        "(or --on-invalid skip) to leave such records out"
    )
    assert collection_state(cli_env["RAGSTORE_DATABASE_URL"], "val-abort")["exists"] is False


def test_skip_policy_imports_only_the_good_records(
    cli_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = _dirty_store(tmp_path / "dirty.jsonl")
    assert (
        run_cli(
            "import",
            str(src),
            "-c",
            "val-skip",
            "--model",
            "legacy@v1",
            "--dimension",
            str(DIM),
            "--on-invalid",
            "skip",
            "--policy",
            "missing_text=keep",
            "--no-backup",
            "--json",
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert (report["read"], report["written"], report["skipped"]) == (35, 22, 13)
    state = collection_state(cli_env["RAGSTORE_DATABASE_URL"], "val-skip")
    sources = {d[0] for d in state["docs"]}
    assert {"ok0", "ok19", "ok3", "ok4", "notext1"} <= sources
    assert not {"short0", "nan1", "big1", "half1", "zero1", "nul1", "sur1"} & sources


def test_ids_already_in_the_collection_are_reported(
    cli_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = [f"e{i}" for i in range(10)]
    src = write_jsonl(tmp_path / "a.jsonl", ids, vectors(10, DIM))
    args = (
        "import",
        str(src),
        "-c",
        "val-exist",
        "--model",
        "legacy@v1",
        "--dimension",
        str(DIM),
        "--no-backup",
    )
    assert run_cli(*args) == 0
    capsys.readouterr()
    assert run_cli(*args) == 65
    assert "10 existing_id (first: e0, e1, e2, e3, e4)" in capsys.readouterr().err


def test_an_id_stored_after_the_plan_is_not_overwritten(rt: Runtime, tmp_path: Path) -> None:
    # the plan found no existing ids; another writer stores one of them before the write
    # (the plan reads the whole source first, which takes a while for a large one): the
    # import must not replace the document that writer was told was added
    ids = [f"r{i}" for i in range(5)]
    src = write_jsonl(tmp_path / "race.jsonl", ids, vectors(5, DIM))
    Store.from_runtime(rt).create_collection("val-race2", model="legacy-race@v1", dimension=DIM)
    opts = ImportOptions(
        collection="val-race2", model="legacy-race@v1", dimension=DIM, backup=False
    )
    plan = plan_import(rt, open_source(str(src), SourceOptions()), opts)
    assert plan.validation.ok and plan.to_write == 5
    theirs = Store.from_runtime(rt).add_texts(
        "val-race2", ["theirs"], [{"by": "them"}], ids=["r3"], vectors=[[1.0] * DIM]
    )
    assert theirs["added"] == 1
    with pytest.raises(ImportValidationError, match=r"1 existing_id \(first: r3\)"):
        run_import(rt, plan, opts)
    kept = Store.from_runtime(rt).get_texts("val-race2", ids)
    assert [(t["id"], t["text"], t["metadata"]) for t in kept] == [("r3", "theirs", {"by": "them"})]


def test_unknown_model_needs_a_declared_dimension(
    cli_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = write_jsonl(tmp_path / "a.jsonl", ["x"], vectors(1, DIM))
    assert run_cli("import", str(src), "-c", "val-nodim", "--model", "mystery-model") == 65
    assert (
        "model 'mystery-model' is neither built in nor pinned, so ragstore cannot know "
        "its dimension: declare it with --dimension N"
    ) in capsys.readouterr().err


def test_builtin_model_dimension_is_checked(
    cli_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = write_jsonl(tmp_path / "a.jsonl", ["x"], vectors(1, DIM))
    assert (
        run_cli(
            "import",
            str(src),
            "-c",
            "val-mini",
            "--model",
            "all-MiniLM-L6-v2",
            "--dimension",
            "768",
        )
        == 78
    )
    assert "has 384 dimensions but --dimension says 768" in capsys.readouterr().err
    assert (
        run_cli("import", str(src), "-c", "val-mini", "--model", "all-MiniLM-L6-v2", "--dry-run")
        == 65
    )
    assert "1 dimension_mismatch (first: x (8 dims))" in capsys.readouterr().err


def test_existing_collection_with_another_model_is_refused(
    cli_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = write_jsonl(tmp_path / "a.jsonl", ["x1", "x2"], vectors(2, DIM))
    assert (
        run_cli(
            "import",
            str(src),
            "-c",
            "val-model",
            "--model",
            "first@v1",
            "--dimension",
            str(DIM),
            "--no-backup",
        )
        == 0
    )
    capsys.readouterr()
    src2 = write_jsonl(tmp_path / "b.jsonl", ["y1"], vectors(1, DIM))
    assert (
        run_cli(
            "import",
            str(src2),
            "-c",
            "val-model",
            "--model",
            "second@v1",
            "--dimension",
            str(DIM),
            "--no-backup",
        )
        == 78
    )
    err = capsys.readouterr().err
    assert "error[model_mismatch]: collection 'val-model' is pinned to first@v1 (8 dims)" in err


def test_malformed_line_names_file_and_line(
    cli_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "broken.jsonl"
    src.write_text('{"id": "a", "text": "t", "vector": [1, 2]}\n{"id": "b", "vector": [1, \n')
    assert (
        run_cli(
            "import",
            str(src),
            "-c",
            "val-broken",
            "--model",
            "legacy-2d@v1",
            "--dimension",
            "2",
            "--dry-run",
        )
        == 65
    )
    assert f"error[import_source_invalid]: {src} line 2: not valid JSON" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize("dry_run", [False, True])
def test_an_import_that_leaves_out_every_record_makes_no_collection(
    dry_run: bool, cli_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # every record skipped (here: none has the declared dimension): the import made an
    # empty collection pinned to the model and said "imported 0 records" with exit 0
    src = write_jsonl(tmp_path / "a.jsonl", [f"w{i}" for i in range(6)], vectors(6, DIM))
    name = f"val-none-{dry_run}".lower()
    args = ["import", str(src), "-c", name, "--model", "legacy-none@v1", "--dimension", "4"]
    code = run_cli(*args, "--on-invalid", "skip", *(["--dry-run"] if dry_run else []))
    out = capsys.readouterr()
    assert code == 65, out.err
    assert (
        "all 6 records are left out by the policies (6 dimension_mismatch (first: w0 (8 dims)"
        in out.err
    )
    assert f"nothing was written and collection {name!r} was not created" in out.err
    assert "would import" not in out.out and "imported 0" not in out.out
    assert collection_state(cli_env["RAGSTORE_DATABASE_URL"], name)["exists"] is False
    backups = Path(cli_env["RAGSTORE_DATA_DIR"]) / "backups"
    assert not backups.exists() or not list(backups.glob("*-import.dump"))


def test_an_import_run_again_that_skips_every_existing_id_changes_nothing(
    cli_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = write_jsonl(tmp_path / "a.jsonl", [f"g{i}" for i in range(6)], vectors(6, DIM))
    args = ["import", str(src), "-c", "val-again", "--model", "legacy@v1", "--dimension", str(DIM)]
    assert run_cli(*args, "--no-backup") == 0
    before = collection_state(cli_env["RAGSTORE_DATABASE_URL"], "val-again")
    capsys.readouterr()
    assert run_cli(*args, "--no-backup", "--policy", "existing_id=skip", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["read"], report["written"], report["skipped"]) == (6, 0, 6)
    assert collection_state(cli_env["RAGSTORE_DATABASE_URL"], "val-again") == before


def test_a_text_too_large_for_the_full_text_index_is_unstorable(
    cli_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a record is one chunk: a text of ~200k distinct words makes a tsvector over the
    # 1 MB PostgreSQL allows, and the import failed at its write past every policy,
    # naming no record ("string is too long for tsvector")
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = " ".join(
        a + b + c + d for a in letters for b in letters for c in letters for d in letters[:12]
    )
    long_ok = " ".join(["same words again"] * 40_000)  # as long, few distinct words: fine
    vecs = vectors(4, DIM)
    src = tmp_path / "long.jsonl"
    with src.open("w") as fh:
        for rid, text, vec in zip(
            ["short", "huge", "long-ok", "short2"], ["a", words, long_ok, "b"], vecs, strict=True
        ):
            fh.write(json.dumps({"id": rid, "text": text, "vector": vec.tolist()}) + "\n")
    args = ["import", str(src), "-c", "val-long", "--model", "legacy@v1", "--dimension", str(DIM)]
    assert run_cli(*args, "--no-backup") == 65
    err = capsys.readouterr().err
    assert "1 unstorable (first: huge (text: too many distinct words for the full-text" in err
    assert collection_state(cli_env["RAGSTORE_DATABASE_URL"], "val-long")["exists"] is False
    assert run_cli(*args, "--no-backup", "--policy", "unstorable=skip", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["read"], report["written"], report["skipped"]) == (4, 3, 1)
    state = collection_state(cli_env["RAGSTORE_DATABASE_URL"], "val-long")
    assert [d[0] for d in state["docs"]] == ["long-ok", "short", "short2"]


@pytest.mark.parametrize(
    ("line", "said"),
    [
        # arrays nested thousands deep: the parser's RecursionError
        (
            '{"id": "b", "vector": [1, 1], "m": ' + "[" * 100_000 + "]" * 100_000 + "}",
            "line 2: cannot be read as JSON (nested too deeply)",
        ),
        # an integer of 5,000 digits: Python's int conversion limit, a ValueError
        (
            '{"id": "b", "vector": [1, 1], "m": ' + "9" * 5000 + "}",
            "line 2: cannot be read as "
            "JSON (Exceeds the limit (4300 digits) for integer string conversion",
        ),
        # lines ending in a bare CR are one line: it said "Extra data" and nothing more
        (
            '{"id": "b", "text": "t", "vector": [1, 1]}\r{"id": "c", "vector": [1, 1]}',
            "line 2: not valid JSON (Extra data); the lines end in a bare CR, not LF or CRLF",
        ),
        # a key given twice: the parser kept the last, so the record arrived as "c"
        (
            '{"id": "b", "text": "t", "vector": [1, 1], "id": "c"}',
            "line 2: the key 'id' is given twice in one object",
        ),
        # two vectors under two of the names a vector is read from: the second was metadata
        (
            '{"id": "b", "text": "t", "vector": [1, 1], "embedding": [2, 2]}',
            "line 2: the vector is given twice, under the keys 'vector' and 'embedding'; "
            'keep one of them (a value meant as metadata goes inside the "metadata" object)',
        ),
        (
            '{"id": "b", "text": "t", "values": [1, 1], "embedding": [1, 1]}',
            "line 2: the vector is given twice, under the keys 'embedding' and 'values'",
        ),
        # two texts under two of the names a text is read from: the second was metadata
        (
            '{"id": "b", "text": "t", "vector": [1, 1], "content": "u"}',
            "line 2: the text is given twice, under the keys 'text' and 'content'; "
            'keep one of them (a value meant as metadata goes inside the "metadata" object)',
        ),
        (
            '{"id": "b", "content": "t", "document": "u", "text": "v", "vector": [1, 1]}',
            "line 2: the text is given three times, under the keys 'text', 'document' and "
            "'content'",
        ),
        # a key in the metadata and beside it: the top-level value replaced the other
        (
            '{"id": "b", "text": "t", "vector": [1, 1], "metadata": {"lang": "en"}, "lang": "fr"}',
            """line 2: the key 'lang' is in the metadata ("en") and beside it ("fr")""",
        ),
    ],
)
def test_a_line_the_json_parser_chokes_on_names_file_and_line(
    line: str,
    said: str,
    cli_env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    src = tmp_path / "choke.jsonl"
    src.write_text('{"id": "a", "text": "t", "vector": [1, 2]}\n' + line + "\n")
    args = ["import", str(src), "-c", "val-choke", "--model", "legacy-2d@v1", "--dimension", "2"]
    assert run_cli(*args, "--dry-run") == 65
    assert f"error[import_source_invalid]: {src} {said}" in capsys.readouterr().err


def test_a_jsonl_sidecar_row_with_two_texts_is_refused(tmp_path: Path) -> None:
    """A sidecar row is read as a JSONL record is: its second text was metadata."""
    np.save(tmp_path / "m.npy", vectors(2, DIM))
    sidecar = tmp_path / "m.jsonl"
    sidecar.write_text('{"id": "a", "text": "t"}\n{"id": "b", "document": "t", "content": "u"}\n')
    with pytest.raises(ImportSourceError) as err:
        list(open_source(str(tmp_path / "m.npy"), SourceOptions()).records())
    assert str(err.value).startswith(
        f"{sidecar} line 2: the text is given twice, under the keys 'document' and 'content'"
    )


def test_a_compressed_file_or_one_over_long_line_is_named_before_it_is_read_whole(
    cli_env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a gzipped JSONL was "invalid UTF-8 at byte 1; re-save the file as UTF-8", and a file
    # of no line breaks (a JSON array) was read whole into memory, seven times its size
    line = b'{"id": "a", "text": "t", "vector": [1, 2]}\n'
    args = ["-c", "val-packed", "--model", "legacy-2d@v1", "--dimension", "2", "--dry-run"]
    for name, data, said in [
        ("gz", gzip.compress(line), "the file is gzip-compressed, not text; unpack it first"),
        ("xz", lzma.compress(line), "the file is xz-compressed"),
        ("bz2", bz2.compress(line), "the file is bzip2-compressed"),
    ]:
        src = tmp_path / f"packed-{name}.jsonl"
        src.write_bytes(data)
        assert run_cli("import", str(src), *args) == 65
        assert f"error[import_source_invalid]: {src}: {said}" in capsys.readouterr().err
    # named by its suffix, it was "cannot tell the store's format from .gz"
    src = (tmp_path / "packed-gz.jsonl").rename(tmp_path / "store.jsonl.gz")
    assert run_cli("import", str(src), *args) == 65
    assert f"error[unsupported_format]: {src} is compressed (.gz); unpack it first (gunzip" in (
        capsys.readouterr().err
    )
    monkeypatch.setattr(files, "MAX_LINE_BYTES", 1024)
    src = tmp_path / "array.jsonl"
    src.write_bytes(line + line.replace(b'"a"', b'"b"').rstrip() * 30)
    assert run_cli("import", str(src), *args) == 65
    assert f"{src} line 2: the line is longer than 1,024 bytes, more than one record may take" in (
        capsys.readouterr().err
    )
    # a line of 1,024 bytes and its \n is read
    src.write_bytes(line + b" " * (1025 - len(line)) + line.replace(b'"a"', b'"b"'))
    assert run_cli("import", str(src), *args) == 0, capsys.readouterr().err


def test_an_integer_beyond_float64_in_a_vector_is_non_finite(
    cli_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 1e400 was read as infinity and counted non_finite; 1 followed by 400 zeros raised
    # NumPy's OverflowError past every policy, as a traceback
    src = tmp_path / "huge.jsonl"
    src.write_text(
        '{"id": "a", "text": "t", "vector": [1, 2]}\n'
        '{"id": "b", "text": "t", "vector": [1' + "0" * 400 + ", 2]}\n"
        '{"id": "c", "text": "t", "vector": [-1' + "0" * 400 + ", 2]}\n"
    )
    args = ["import", str(src), "-c", "val-huge", "--model", "legacy-2d@v1", "--dimension", "2"]
    assert run_cli(*args, "--dry-run") == 65
    assert "2 non_finite (first: b, c)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("vector", "said"),
    [
        ('"[1, 2]"', 'line 2: the vector is a string ("[1, 2]"), not a list of numbers'),
        ('["0.5", "2"]', 'line 2: the vector\'s value 1 is a string ("0.5"), not a number'),
        ("[1, true]", "line 2: the vector's value 2 is a boolean (true), not a number"),
    ],
)
def test_a_vector_of_strings_or_booleans_is_named_not_parsed(
    vector: str,
    said: str,
    cli_env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # NumPy parsed ["0.5", "2"] and made true 1.0: imported and verified as numbers the
    # store never held; a vector kept as a string holding an array was named without a fix
    src = tmp_path / "words.jsonl"
    src.write_text(
        '{"id": "a", "text": "t", "vector": [1, 2]}\n'
        + '{"id": "b", "text": "t", "vector": '
        + vector
        + "}\n"
    )
    args = ["import", str(src), "-c", "val-words", "--model", "legacy-2d@v1", "--dimension", "2"]
    assert run_cli(*args, "--dry-run") == 65
    err = capsys.readouterr().err
    assert f"error[import_source_invalid]: {src} {said}" in err, err
    assert "JSON array of numbers" in err


@pytest.mark.parametrize("dry_run", [False, True])
def test_a_collection_name_that_cannot_be_made_is_refused_before_anything(
    dry_run: bool, cli_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the dry run said "would import 3 records into 'my notes'", and the import read the
    # whole source and took a backup before the write refused the name
    src = write_jsonl(tmp_path / "a.jsonl", ["n1", "n2", "n3"], vectors(3, DIM))
    args = ["import", str(src), "-c", "my notes", "--model", "legacy@v1", "--dimension", "8"]
    assert run_cli(*args, *(["--dry-run"] if dry_run else [])) == 65
    out = capsys.readouterr()
    assert "error[invalid_input]: invalid collection name 'my notes'" in out.err
    assert "would import" not in out.out and "source:" not in out.out
    backups = Path(cli_env["RAGSTORE_DATA_DIR"]) / "backups"
    assert not backups.exists() or not list(backups.glob("*-import.dump"))


@pytest.mark.parametrize("option", [("--min-recall", "1.5"), ("--ef-search", "0")])
def test_verification_options_out_of_range_are_refused_by_the_dry_run_too(
    option: tuple[str, str],
    cli_env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    src = write_jsonl(tmp_path / "a.jsonl", ["o1", "o2"], vectors(2, DIM))
    args = ["import", str(src), "-c", "val-opts", "--model", "legacy@v1", "--dimension", "8"]
    assert run_cli(*args, *option, "--dry-run") == 65
    out = capsys.readouterr()
    assert f"error[invalid_input]: {option[0]} must be between" in out.err
    assert "would import" not in out.out


def test_a_dry_run_with_a_builtin_model_pins_nothing(
    cli_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # "nothing was written", and the dry run had pinned the built-in model
    url = cli_env["RAGSTORE_DATABASE_URL"]
    src = write_jsonl(tmp_path / "a.jsonl", ["m1", "m2"], vectors(2, 384))

    def pins() -> list[tuple[str, str]]:
        with psycopg.connect(url) as conn:
            return conn.execute("SELECT name, revision FROM embedding_models ORDER BY 1").fetchall()

    before = pins()
    assert not [p for p in before if p[0] == "all-MiniLM-L6-v2"]
    # random vectors: --trust-vectors, or the model check refuses them
    args = ["import", str(src), "-c", "val-pin", "--model", "all-MiniLM-L6-v2", "--trust-vectors"]
    assert run_cli(*args, "--dry-run") == 0
    assert "dry run: would import 2 records" in capsys.readouterr().out
    assert pins() == before


def _sidecar_error(tmp_path: Path, csv_text: str) -> str:
    """The error a CSV sidecar gives, read with a matrix of three rows."""
    np.save(tmp_path / "s.npy", vectors(3, 2))
    (tmp_path / "s.csv").write_text(csv_text, newline="")
    with pytest.raises(ImportSourceError) as caught:
        list(files.NumpySource(tmp_path / "s.npy").records())
    return str(caught.value)


@pytest.mark.parametrize(
    ("tail", "said"),
    [
        ("id,text,lang\n", "line 5: the header row again"),
        ("c,z,en,w\n", "line 5: 4 fields, but the header names 3 columns"),
        ('c,"two\nlines",en,w\n', "line 5: 4 fields"),  # a row spanning lines: its first
        ("\n\nc,z,en,w\n", "line 7: 4 fields"),  # blank lines are skipped
        ('c,z,fr,"{""lang"": ""en""}"\n', "line 5: the key 'lang' is in the metadata"),
        ("\nc,y\rd,z,en\n", "line 6: not a readable CSV file"),
    ],
)
def test_csv_sidecar_rows_are_named_by_the_line_they_start_on(
    tail: str, said: str, tmp_path: Path
) -> None:
    # rows were numbered by count (row n on line n + 1): after a field spanning lines,
    # every later row was named by a line before it
    head = 'id,text,lang\na,"two\nlines",en\nb,y,en\n'
    if "metadata" in said:
        head = 'id,text,lang,metadata\na,"two\nlines",en,\nb,y,en,\n'
    assert f"s.csv {said}" in _sidecar_error(tmp_path, head + tail)


def test_a_line_over_the_limit_is_named_by_what_the_file_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a CSV sidecar was told of JSONL and jq, and a file with bare-CR line ends (one line,
    # the whole file) to split its records, not to convert its line ends
    monkeypatch.setattr(files, "MAX_LINE_BYTES", 1024)
    said = "line 2: the line is longer than 1,024 bytes"
    csv_error = _sidecar_error(tmp_path, "id,text\na," + "word " * 300 + "\n")
    assert f"s.csv {said}, more than one record may take; a CSV row" in csv_error
    assert "JSONL" not in csv_error and "jq" not in csv_error
    cr_error = _sidecar_error(tmp_path, "id,text\r" + "a,word\r" * 300)
    assert "s.csv line 1: the line is longer than 1,024 bytes and holds a CR" in cr_error
    assert "convert them (tr '\\r' '\\n' < old.csv > new.csv)" in cr_error
    line = '{"id": "a", "text": "t", "vector": [1, 2]}\r'
    (tmp_path / "cr.jsonl").write_text(line * 100, newline="")
    with pytest.raises(ImportSourceError) as caught:
        list(files.JsonlSource(tmp_path / "cr.jsonl").records())
    assert "line 1: the line is longer than 1,024 bytes and holds a CR: the lines end in a " in (
        str(caught.value)
    )
    assert "(tr '\\r' '\\n' < old.jsonl > new.jsonl)" in str(caught.value)
