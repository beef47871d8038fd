"""`ragstore search` with --mode, --where and --explain, and its one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli


@pytest.fixture()
def corpus(cli_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    (tmp_path / "cats.md").write_text(
        "# Cats\n\nCats sleep for most of the day.\n\n"
        "| breed | hours |\n|---|---|\n| tabby | 16 |\n"
    )
    (tmp_path / "dogs.md").write_text("# Dogs\n\nDogs bark at the mail carrier.\n")
    assert run_cli("ingest", str(tmp_path), "-c", "cli-search", "--meta", "team=pets") == 0
    capsys.readouterr()
    return "cli-search"


def test_search_modes_where_and_explain_as_json(
    corpus: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        run_cli(
            "search",
            "how long do cats sleep",
            "-c",
            corpus,
            "--json",
            "--explain",
            "--mode",
            "hybrid",
            "-k",
            "3",
        )
        == 0
    )
    hits = json.loads(capsys.readouterr().out)
    assert hits[0]["text"] == "Cats sleep for most of the day."
    assert hits[0]["explain"]["vector"]["rank"] == 1
    assert hits[0]["explain"]["fulltext"]["rank"] == 1
    assert hits[0]["explain"]["rrf"]["k"] == 10

    assert (
        run_cli(
            "search",
            "tabby",
            "-c",
            corpus,
            "--json",
            "--mode",
            "fulltext",
            "--where",
            '{"chunk_type": "table", "team": "pets"}',
        )
        == 0
    )
    hits = json.loads(capsys.readouterr().out)
    assert [h["chunk_type"] for h in hits] == ["table"]

    assert (
        run_cli(
            "search",
            "cats",
            "-c",
            corpus,
            "--json",
            "--mode",
            "vector",
            "--where",
            '{"chunk_type": {"$in": ["code", "list"]}}',
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out) == []


def test_a_filter_that_keeps_nothing_says_where_the_fields_are_listed(
    corpus: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A filter on a path no document carries is valid and keeps nothing: the text output
    says so and names ``collections fields``; a search with hits, or without a filter,
    says nothing more."""
    where = '{"teem": "pets"}'
    assert run_cli("search", "cats", "-c", corpus, "--mode", "fulltext", "--where", where) == 0
    out, err = capsys.readouterr()
    assert "no results" in out
    assert f"`ragstore collections fields {corpus}` lists the fields" in " ".join(err.split())
    where = '{"team": "pets"}'
    assert run_cli("search", "cats", "-c", corpus, "--mode", "fulltext", "--where", where) == 0
    assert "collections fields" not in capsys.readouterr().err


def test_explain_in_text_output_shows_each_list(
    corpus: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        run_cli("search", "dogs bark", "-c", corpus, "--explain", "-k", "1", "--ef-search", "40")
        == 0
    )
    out = capsys.readouterr().out
    assert "vector #1 distance" in out and "fulltext #1 bm25" in out
    assert "Dogs bark at the mail carrier." in out


@pytest.mark.parametrize(
    ("args", "start"),
    [
        (
            ["--where", '{"year": {"$regex": "x"}}'],
            "error[invalid_filter]: invalid filter at 'year': unknown operator '$regex'",
        ),
        (["--where", "{year: 1}"], "error[invalid_filter]: the filter is not valid JSON"),
        (
            ["--mode", "semantic"],
            "error[usage]: Invalid value for '--mode': unknown search mode 'semantic';"
            " use one of vector, fulltext, hybrid",
        ),
        (
            ["--rrf-k", "-3"],
            "error[usage]: Invalid value for '--rrf-k': the RRF constant k must be between 0 "
            "and 10000",
        ),
        # read whole, /dev/zero filled memory until the kernel killed the command
        (
            ["--vector", "@/dev/zero"],
            "error[invalid_input]: --vector @/dev/zero: the file is over 4 MiB",
        ),
        (["--vector", "@"], "error[invalid_input]: --vector @ names no file"),
        # an integer json.loads will not convert (over 4,300 digits), or float() will not
        # (over 308): a ValueError or OverflowError, a traceback
        (
            ["--where", '{"year": ' + "9" * 5000 + "}"],
            "error[invalid_filter]: the filter is not valid JSON: an integer of more than "
            "4300 digits",
        ),
        (
            ["--vector", "[" + "9" * 5000 + "]"],
            "error[invalid_input]: --vector is not a JSON array of numbers: an integer of "
            "more than 4300 digits",
        ),
        (
            ["--vector", "[" + "9" * 400 + "]"],
            "error[invalid_input]: --vector holds an integer too large for a float",
        ),
        # str.isdigit() is true of '²', and int('²') raised a ValueError: a traceback
        (
            ["--context", "\u00b2"],
            "error[usage]: Invalid value for '--context': the value '\u00b2' is invalid",
        ),
    ],
)
def test_bad_search_options_are_one_line(
    corpus: str, capsys: pytest.CaptureFixture[str], args: list[str], start: str
) -> None:
    code = run_cli("search", "cats", "-c", corpus, *args)
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert err.startswith(start)
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "option"),
    [(["-m", "nonsense"], "--mode"), (["--context", "banana"], "--context")],
)
def test_a_bad_choice_of_an_option_is_a_usage_error(
    corpus: str, capsys: pytest.CaptureFixture[str], args: list[str], option: str
) -> None:
    """TROUBLESHOOTING.md: a bad option value exits 64 (``error[usage]``), as ``jobs list
    --status bogus`` does; ``-m nonsense`` and ``--context banana`` exited 65
    (``invalid_input``, the API's 422)."""
    assert run_cli("search", "cats", "-c", corpus, *args) == 64
    err = capsys.readouterr().err
    assert err.startswith(f"error[usage]: Invalid value for '{option}': "), err
    assert err.rstrip().endswith("(see 'ragstore search --help')"), err


# each value the hybrid search refuses, and what the usage line says of it
BAD_FUSION = [
    (["--rrf-k", "-3"], "'--rrf-k': the RRF constant k must be between 0 and 10000, got -3"),
    (["--rrf-k", "10001"], "'--rrf-k': the RRF constant k must be between 0 and 10000"),
    (["--rrf-k", "nan"], "'--rrf-k': the value must be a finite number (not NaN or infinity)"),
    (["--vector-weight", "-0.5"], "'--vector-weight': the vector weight must be between 0 and"),
    (["--vector-weight", "inf"], "'--vector-weight': the value must be a finite number"),
    (["--fulltext-weight", "101"], "'--fulltext-weight': the full-text weight must be between"),
    (["--fulltext-weight", "-inf"], "'--fulltext-weight': the value must be a finite number"),
    (
        ["--vector-weight", "0", "--fulltext-weight", "0"],
        "'--vector-weight' / '--fulltext-weight': the vector and full-text weights cannot "
        "both be 0",
    ),
]


@pytest.mark.parametrize(("args", "said"), BAD_FUSION)
def test_a_hybrid_option_out_of_range_is_a_usage_error(
    corpus: str, capsys: pytest.CaptureFixture[str], args: list[str], said: str
) -> None:
    """``--rrf-k``, ``--vector-weight`` and ``--fulltext-weight`` out of range (negative,
    over the limit, NaN, infinity, both weights 0) exited 65 (``invalid_input``, the API's
    422) where every other bad option value exits 64; they exit 64 now, one usage line
    naming the option. ``ragstore eval`` takes the same options and says the same."""
    assert run_cli("search", "cats", "-c", corpus, *args) == 64
    err = capsys.readouterr().err
    assert err.startswith(f"error[usage]: Invalid value for {said}"), err
    assert err.rstrip().endswith("(see 'ragstore search --help')") and err.count("\n") == 1
    # checked before the dataset is read: the folder need not exist
    assert run_cli("eval", str(Path(corpus) / "no-such-dataset"), *args) == 64
    assert capsys.readouterr().err.startswith(f"error[usage]: Invalid value for {said}")


@pytest.mark.parametrize(
    "command", [["search", "cats"], ["eval", "/nowhere/beir"], ["eval-sections", "/nowhere/set"]]
)
def test_a_bad_mode_is_the_same_usage_error_in_every_command(
    cli_env: dict[str, str], capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    """``eval --mode bogus`` (and ``eval-sections``'s) exited 65, ``invalid_input``, where
    ``search --mode bogus`` exits 64: every command taking ``--mode`` says it as search
    does, one usage line naming the option and the modes, before any dataset is read."""
    name = command[0]
    assert run_cli(*command, "-m", "fulltext", "--mode", "bogus") == 64
    err = capsys.readouterr().err
    assert err.startswith(
        "error[usage]: Invalid value for '--mode': unknown search mode 'bogus'; use one of "
        "vector, fulltext, hybrid"
    ), err
    assert err.rstrip().endswith(f"(see 'ragstore {name} --help')") and err.count("\n") == 1


def test_the_printed_score_is_the_one_the_hits_are_ordered_by(
    corpus: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Hits are ordered by their section's score; the text output printed each chunk's
    own score, so a reader saw 0.077 above 0.083. It prints the section's (``--json``
    keeps both); ``--explain`` names the chunk's."""
    query = ("search", "cats sleep tabby dogs", "-c", corpus, "-k", "5")
    assert run_cli(*query, "--json") == 0
    hits = json.loads(capsys.readouterr().out)
    sorted_by = [f"{h['section_score']:.3f}" for h in hits]
    own = [f"{h['score']:.3f}" for h in hits]
    assert len(hits) > 1 and sorted_by != own  # else the test could not tell them apart
    assert run_cli(*query) == 0
    out = capsys.readouterr().out
    ranks = [line.split() for line in out.splitlines() if line[:3].strip().endswith(".")]
    assert [r[1] for r in ranks] == sorted_by, out
    assert run_cli(*query, "--explain") == 0
    out = capsys.readouterr().out
    assert f"chunk score {own[0]}" in out, out


def test_a_vector_file_that_is_not_utf8_is_one_line(
    corpus: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--vector @FILE`` holding bytes that are not UTF-8 ended with a traceback."""
    bad = tmp_path / "q.json"
    bad.write_bytes(b"\xff\xfe[0.1]")
    assert run_cli("search", "-c", corpus, "--vector", f"@{bad}") == 65
    err = capsys.readouterr().err.strip()
    assert err == (
        f"error[invalid_input]: --vector @{bad}: the file is not UTF-8 (byte 0); "
        "give a file holding one JSON array of numbers"
    )


def test_mmr_search_and_its_bad_options(corpus: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``--mmr`` picks among the best ``--fetch-k`` (search/mmr.py); with ``--lambda-mult 1``
    in vector mode it is the plain top k; bad values are one line."""
    args = ["search", "how long do cats sleep", "-c", corpus, "--json", "--mode", "vector"]
    assert run_cli(*args, "-k", "2") == 0
    plain = [h["chunk_id"] for h in json.loads(capsys.readouterr().out)]
    assert run_cli(*args, "-k", "2", "--mmr", "--fetch-k", "4", "--lambda-mult", "1") == 0
    assert [h["chunk_id"] for h in json.loads(capsys.readouterr().out)] == plain
    assert run_cli(*args, "-k", "2", "--mmr", "--explain") == 0
    assert json.loads(capsys.readouterr().out)[1]["explain"]["mmr"]["rank"] == 2
    for bad, message in (
        (["-k", "3", "--mmr", "--fetch-k", "2"], r"fetch_k (2) is smaller than k (3)"),
        (["--mmr", "--lambda-mult", "2"], "lambda_mult must be between 0"),
        (
            ["--fetch-k", "5"],
            "--fetch-k only applies to a maximal-marginal-relevance search; set --mmr too",
        ),
    ):
        assert run_cli(*args, *bad) != 0
        err = capsys.readouterr().err.strip()
        assert err.startswith("error[invalid_input]: ") and message in err
        assert len(err.splitlines()) == 1
