"""``ragstore eval-sections``: question files, heading paths, the window baselines, and
one end-to-end run on a tiny question set with the real database and model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bench import longdoc_variants

from ragstore.config import Settings
from ragstore.embedding.registry import load_embedder, resolve_spec
from ragstore.errors import InputError, PathNotFoundError
from ragstore.models import Hit
from ragstore.parsing import parse_bytes
from ragstore.runtime import Runtime
from ragstore.search.sections import (
    Passage,
    WindowBM25,
    collection_name,
    evaluate_sections,
    first_hit,
    heading_lines,
    hit_passage,
    load_questions,
    read_docs,
    select,
    windows,
)
from tests.conftest import run_cli

MANUAL = """# Kettle manual

Intro words about the kettle.

## Descaling

Fill the kettle with white vinegar and water, boil it and rinse it twice to remove lime.

```sh
# not a heading: a shell comment inside a fence
echo rinse
```

## Warranty

The warranty covers the heating element for two years from the date of purchase.
"""
GARDEN = """# Garden

## Roses

Prune roses in late winter, just above an outward-facing bud.

## Tomatoes

Tomatoes need full sun, deep watering twice a week and a stake to climb.
"""
QUESTIONS = (
    "how do I get rid of limescale in my kettle?\tkettle.md\t^Descaling$\n"
    "how long is the heating element guaranteed?\tkettle.md\twarranty\n"
    "when should I cut back my rose bushes?\tgarden.md\t^Roses$\n"
)


def _question_set(root: Path) -> Path:
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "kettle.md").write_text(MANUAL)
    (root / "docs" / "garden.md").write_text(GARDEN)
    (root / "questions.tsv").write_text(QUESTIONS)
    return root


def test_questions_file_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "questions.tsv"
    path.write_text("ok?\ta.md\tx\nmissing a field\ta.md\n")
    with pytest.raises(InputError, match=r"questions.tsv:2: expected 3 tab-separated fields"):
        load_questions(path)
    path.write_text("bad regex?\ta.md\t(unclosed\n")
    with pytest.raises(InputError, match=r"questions.tsv:1: section_regex is not a valid"):
        load_questions(path)
    with pytest.raises(PathNotFoundError, match="no such file"):
        load_questions(tmp_path / "nope.tsv")
    path.write_text(QUESTIONS)
    qs = load_questions(path)
    assert [q.number for q in select(qs, "2-3")] == [2, 3]
    with pytest.raises(InputError, match=r"--questions '3-9' is invalid"):
        select(qs, "3-9")
    # the example is a range the set has (it was "21-3" for three questions)
    with pytest.raises(InputError, match=rf"within 1-{len(qs)}, for example 1-{len(qs)}$"):
        select(qs, "abc")


def test_a_questions_file_that_is_not_utf8_is_one_error_naming_the_line(
    tmp_path: Path,
) -> None:
    """A Latin-1 byte in questions.tsv ended ``ragstore eval-sections`` with a
    UnicodeDecodeError traceback; the error now names the file and the line."""
    path = tmp_path / "questions.tsv"
    path.write_bytes(b"ok?\ta.md\tx\nqu'est-ce que c'est\xe9?\ta.md\tx\n")
    with pytest.raises(InputError, match=r"questions.tsv:2: not UTF-8"):
        load_questions(path)
    # an empty question ended the run after the ingest with "the query is empty"
    path.write_text("ok?\ta.md\tx\n \ta.md\tx\n")
    with pytest.raises(InputError, match=r"questions.tsv:2: the question is empty"):
        load_questions(path)


def test_heading_paths_skip_fenced_code_and_follow_the_scoring_rule(tmp_path: Path) -> None:
    assert [h for _, h in heading_lines(MANUAL)] == ["Kettle manual", "Descaling", "Warranty"]
    wins = windows("kettle.md", MANUAL, words=12)
    # the heading in force where the window starts, plus every heading inside it
    assert wins[0].passage.headings == ("Kettle manual", "Descaling")
    assert wins[1].passage.headings == ("Descaling",)
    assert wins[-1].passage.headings[-1] == "Warranty"
    assert " ".join(w.text for w in wins).split() == MANUAL.split()
    (tmp_path / "questions.tsv").write_text(QUESTIONS)
    q = load_questions(tmp_path / "questions.tsv")[0]
    ranked = [
        Passage("kettle.md", ("Warranty",)),
        Passage("garden.md", ("Descaling",)),
        Passage("kettle.md", ("Kettle manual", "descaling")),
    ]
    assert first_hit(q, ranked) == 3, "same file, heading matched case-insensitively"


def test_window_bm25_prefers_the_window_with_the_rare_terms() -> None:
    docs = [
        {"kettl": 1, "boil": 1, "water": 1},
        {"vinegar": 1, "remov": 1, "lime": 1, "kettl": 1},
        {"warranti": 1, "cover": 1, "two": 1, "year": 1},
    ]
    bm25 = WindowBM25(docs)
    assert bm25.rank({"lime": 1, "vinegar": 1, "kettl": 1}, 3)[0] == 1
    assert bm25.rank({"warranti": 1}, 3) == [2]
    assert bm25.rank({}, 3) == [], "a question of stop words alone matches nothing"
    # a lexeme the question holds twice weighs twice, as in the database's BM25
    assert bm25.rank({"kettl": 1, "boil": 1}, 3)[0] == 0
    assert bm25.rank({"kettl": 1, "boil": 1, "remov": 3}, 3)[0] == 1


def _hit(text: str, chunk_type: str, section: list[str], source: str, **meta: object) -> Hit:
    return Hit(1, 1, source, None, text, chunk_type, section, 0, None, 1.0, dict(meta))


def test_a_hit_takes_its_headings_from_its_section_not_from_comment_lines(
    tmp_path: Path,
) -> None:
    """A ``# comment`` line of a code chunk was read as a heading: a question whose regex
    matched the comment scored a hit in whatever section held the code."""
    root = tmp_path / "docs"
    code = _hit("# Warranty\necho rinse", "code", ["Kettle", "Descaling"], f"{root}/kettle.md")
    assert hit_passage(code, root) == Passage("kettle.md", ("Descaling",))
    merged = _hit("text", "paragraph", ["Garden"], f"{root}/sub/garden.md", headings=["Roses"])
    assert hit_passage(merged, root) == Passage("sub/garden.md", ("Garden", "Roses"))
    heading = _hit("Tomatoes", "heading", ["Garden"], "/elsewhere/garden.md")
    assert hit_passage(heading, root).file == "/elsewhere/garden.md", "outside docs/: no match"


def test_eval_sections_cli_scores_every_mode_and_the_baselines(
    cli_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _question_set(tmp_path / "set")
    assert run_cli("eval-sections", str(root), "--json", "-c", "sections-tiny") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["questions"] == 3 and out["ingested"] == 2
    modes = out["modes"]
    assert set(modes) == {
        "vector",
        "fulltext",
        "hybrid",
        "windows-dense",
        "windows-bm25",
        "windows-rrf",
    }
    assert modes["fulltext"]["top3"] == 3 and modes["hybrid"]["top3"] == 3
    assert modes["windows-bm25"]["ranks"]["2"] == 1
    # a second run finds every file unchanged and ingests nothing
    assert (
        run_cli(
            "eval-sections",
            str(root),
            "--json",
            "-c",
            "sections-tiny",
            "--no-baselines",
            "--chunks",
            "-m",
            "fulltext",
            "-q",
            "1-2",
        )
        == 0
    )
    again = json.loads(capsys.readouterr().out)
    assert again["ingested"] == 0 and set(again["modes"]) == {"fulltext"}
    assert again["modes"]["fulltext"]["ranks"] == {"1": 1, "2": 1}
    (root / "questions.tsv").write_text(QUESTIONS + "lost?\tmissing.md\tx\n")
    assert run_cli("eval-sections", str(root), "-c", "sections-tiny") == 65
    assert "questions name files that are not in" in capsys.readouterr().err


LONG_STEP = (
    "Pour out the water, fill the kettle halfway with white vinegar, top it up with water "
    "and let it stand for an hour before you boil it once and empty it into the sink. "
) * 4


def test_longdoc_variants_scores_vectors_offline_and_encodes_each_text_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _question_set(tmp_path / "set")
    steps = "\n\n".join(f"Step {i}. {LONG_STEP}" for i in range(1, 5))
    (root / "docs" / "kettle.md").write_text(
        MANUAL.replace("## Warranty", steps + "\n\n## Warranty")
    )
    cache = tmp_path / "cache"
    args = [str(root), "--cache", str(cache), "--split", "2", "--json"]
    variants = ["--variant", "current", "--variant", "prefix=last,summaries=all"]
    longdoc_variants.main([*args, *variants])
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {"current", "prefix=last,summaries=all", "windows-dense"}
    current = report["current"]
    assert current["vectors"] >= 4 and current["encoded_now"] == current["vectors"]
    assert current["sections"]["q3-3"][1] == 1, "the rose question finds its section"
    assert current["sections"]["q1-2"][1] == 2, "both kettle questions within the top 3"
    other = report["prefix=last,summaries=all"]
    assert other["vectors"] == current["vectors"] + 1, "one summary: the long Descaling section"
    assert 0 < other["encoded_now"] <= other["vectors"]
    longdoc_variants.main([*args, "--variant", "current"])
    again = json.loads(capsys.readouterr().out)
    assert again["current"]["encoded_now"] == 0, "every vector comes from the cache"
    assert again["current"]["sections"] == current["sections"]
    with pytest.raises(SystemExit, match="prefix=full"):
        longdoc_variants.parse_variant("prefix=middle")

    # hybrid: the variant's vectors fused with a full-text list (here a made-up one that
    # ranks the rose chunk first, then a heading chunk, which has no vector)
    spec = resolve_spec(Settings().model)
    embedder = load_embedder(spec, device="cpu")
    docs = {n: parse_bytes(t.encode(), n) for n, t in read_docs(root / "docs").items()}
    v = longdoc_variants.parse_variant("current")
    units = longdoc_variants.variant_units(docs, embedder, spec.max_tokens, v)
    cached = longdoc_variants.VectorCache(cache, embedder, spec.key)
    questions = load_questions(root / "questions.tsv")
    matrix = cached.get([u.text for u in units])
    qvecs = cached.get([q.text for q in questions])
    assert cached.encoded == 0
    rose = next(u for u in units if "Roses" in u.headings)
    listed = [((rose.file, rose.ordinal), rose.headings), (("garden.md", 0), ("Garden",))]
    fulltext = {q.number: listed for q in questions}
    ranks = longdoc_variants.hybrid_ranks(units, matrix, questions, qvecs, fulltext)
    assert ranks[3] == 1, "both lists put the rose section first"
    assert ranks[1] is not None and ranks[1] <= 3


def test_eval_sections_refuses_a_collection_it_did_not_create(
    cli_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``ragstore eval-sections -c NOTES`` ingested the question set's files into the
    user's collection (replacing its documents of the same paths); it is refused and the
    collection stays as it was, while a collection the command made is used again."""
    from ragstore.runtime import Runtime
    from ragstore.store import Store

    root = _question_set(tmp_path / "set")
    with Runtime() as rt:
        store = Store.from_runtime(rt)
        store.add_texts("my-manuals", ["my own note on the kettle"], ids=["note"])
        before = store.list_documents("my-manuals")["data"]
    assert run_cli("eval-sections", str(root), "-c", "my-manuals", "--no-baselines") == 65
    err = capsys.readouterr().err
    assert "collection 'my-manuals' was not created by `ragstore eval-sections`" in err
    assert "leave --collection out" in err
    with Runtime() as rt:
        after = Store.from_runtime(rt).list_documents("my-manuals")["data"]
    assert [(d["id"], d["source"]) for d in after] == [(d["id"], d["source"]) for d in before]


def test_eval_sections_searches_plain_text_and_stems_the_bm25_baseline(
    rt: Runtime, tmp_path: Path
) -> None:
    """Questions were parsed as query syntax (``-warranty`` excluded every chunk holding
    "warranty", so its own section could not be found; ``--word`` required the word), and
    the BM25 baseline split raw words: "pruning" did not meet "Prune", which ragstore's
    full-text search stems alike."""
    root = _question_set(tmp_path / "set")
    (root / "questions.tsv").write_text(
        "what does the -warranty clause cover for the heating element?\tkettle.md\twarranty\n"
        "when is pruning done?\tgarden.md\t^Roses$\n"
    )
    result = evaluate_sections(rt, root, modes=["fulltext"])
    ranks = {s.mode: s.ranks for s in result.scores}
    assert ranks["fulltext"][1] == 1, "-warranty is a word of the question"
    assert ranks["windows-bm25"][2] == 1, "pruning and Prune are one lexeme"


def test_eval_sections_covers_subfolders_and_prunes_deleted_files(
    rt: Runtime, tmp_path: Path
) -> None:
    """Both sides read docs/ as the ingest walks it (the baselines read its top level
    only), a hit counts for the file at the question's path, not any file of that name,
    documents of files deleted since the last run are removed, and two copies of a set
    get collections of their own (named after the folder alone, they shared one)."""
    root = _question_set(tmp_path / "set")
    (root / "docs" / "old").mkdir()
    # the rose question's words, under the same file name and heading in a subfolder:
    # ranked first, it is no hit for the question on docs/garden.md
    (root / "docs" / "old" / "garden.md").write_text(
        "# Garden\n\n## Roses\n\nCut back rose bushes hard: cut back every rose bush "
        "to three buds.\n"
    )
    (root / "docs" / "deep").mkdir()
    (root / "docs" / "deep" / "clock.md").write_text(
        "# Clock\n\n## Chimes\n\nThe grandfather clock chimes every quarter hour.\n"
    )
    (root / "questions.tsv").write_text(
        QUESTIONS + "how often does the grandfather clock chime?\tdeep/clock.md\t^Chimes$\n"
    )
    assert set(read_docs(root / "docs")) == {
        "kettle.md",
        "garden.md",
        "old/garden.md",
        "deep/clock.md",
    }
    result = evaluate_sections(rt, root, modes=["fulltext"], questions="3-4")
    assert result.collection == collection_name(root)
    ranks = {s.mode: s.ranks for s in result.scores}
    assert ranks["fulltext"] == {3: 2, 4: 1}
    assert ranks["windows-bm25"] == {3: 2, 4: 1}

    def stored() -> list[str]:
        with rt.db.connection() as conn:
            rows = conn.execute(
                "SELECT d.source FROM documents d JOIN collections k"
                " ON k.id = d.collection_id WHERE k.name = %s ORDER BY 1",
                (result.collection,),
            ).fetchall()
        return [Path(r[0]).relative_to((root / "docs").resolve()).as_posix() for r in rows]

    assert stored() == ["deep/clock.md", "garden.md", "kettle.md", "old/garden.md"]
    (root / "docs" / "old" / "garden.md").unlink()
    again = evaluate_sections(rt, root, modes=["fulltext"], questions="3-4", baselines=False)
    assert stored() == ["deep/clock.md", "garden.md", "kettle.md"], "its document is pruned"
    assert again.scores[0].ranks == {3: 1, 4: 1}
    copy = _question_set(tmp_path / "copy" / "set")
    assert collection_name(copy) != collection_name(root), "same folder name, another set"
    # named for the other copy, the collection is refused, not scored with both sets' files
    with pytest.raises(InputError, match="holds documents from outside"):
        evaluate_sections(rt, copy, collection=result.collection, baselines=False)
    assert stored() == ["deep/clock.md", "garden.md", "kettle.md"]
