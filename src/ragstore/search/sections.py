"""Section hit rates on long documents, with the naive sliding-window baselines beside them.

A question set is a folder holding ``docs/`` (the documents) and ``questions.tsv``: one
question per line, three tab-separated fields, ``question``, ``file`` (its path relative
to ``docs/``, ``/``-separated: a file directly in it by its name) and ``section_regex`` (a
case-insensitive Python regex over heading texts). ``docs/`` is read as ``ragstore
ingest`` walks it (subfolders included, files of the supported formats), by both sides.
A passage is a hit when it comes from ``file`` and its heading path matches: the heading
in force where the passage starts plus every heading inside it (for a search hit: its
section, and the headings its chunk records having merged). The score is the share of
questions with a hit at rank 1 and within the top 3. Questions are searched as plain
text, as ``ragstore eval`` searches (``-word`` and ``or`` in them are words).

SciFact-style sets (one short abstract per document) cannot see chunking or section
structure; this one can. So that a figure means something, the baselines are computed in
the same run on the same documents: fixed ``WINDOW_WORDS``-word windows over the raw text,
ranked by exact cosine with the collection's own model (``windows-dense``), by BM25
(``windows-bm25``) and by their RRF with k=60 (``windows-rrf``).

The BM25 baseline analyses text as ragstore's full-text search does: each window's
lexemes are PostgreSQL's ``to_tsvector`` under the collection's text search
configuration (English Snowball stemming and stop words by default), a lexeme's term
frequency the count of its positions, and a question's lexemes are those of the plain
full-text query (a lexeme the question holds twice weighs twice); Okapi BM25 with
Lucene's idf, k1=1.2, b=0.75, as in the database. Until 2026-12 it split raw words (a
small stop list, no stemming), a weaker baseline than BM25 over the same windows.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ragstore.db import documents
from ragstore.db.errors import translated
from ragstore.embedding.base import Embedder
from ragstore.errors import InputError, PathNotFoundError
from ragstore.files import discover
from ragstore.ingest import ingest_paths
from ragstore.models import Hit
from ragstore.runtime import Runtime
from ragstore.search.bm25 import parse_query
from ragstore.search.eval import scratch_collection
from ragstore.search.hybrid import FusionParams, rrf
from ragstore.search.service import MODES, Mode, SearchParams, run

WINDOW_WORDS = 150
BASELINE_RRF_K = 60.0
BASELINE_DEPTH = 100  # each baseline list fused by RRF is this deep
BASELINES = ("windows-dense", "windows-bm25", "windows-rrf")

_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?[ \t#]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_WORD = re.compile(r"\S+")
# text -> lexeme -> term frequency, for each text (as :func:`documents.lexeme_counts`)
Analyser = Callable[[Sequence[str]], list[dict[str, int]]]


@dataclass(frozen=True)
class Question:
    text: str
    file: str
    pattern: re.Pattern[str]
    number: int  # 1-based position in the file


@dataclass(frozen=True)
class Passage:
    """A ranked unit: where it comes from and the headings that make up its heading path."""

    file: str
    headings: tuple[str, ...]


@dataclass
class ModeScore:
    mode: str
    ranks: dict[int, int | None] = field(default_factory=dict)  # question -> first hit rank

    def hits_at(self, k: int) -> int:
        return sum(1 for r in self.ranks.values() if r is not None and r <= k)


def load_questions(path: Path) -> list[Question]:
    """Every question of a ``questions.tsv``; a malformed line is one error naming it."""
    if not path.is_file():
        raise PathNotFoundError(
            f"{path}: no such file; a question set holds questions.tsv "
            "(question, file, section_regex; tab-separated) and docs/"
        )
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        # said as an error naming the line: read with read_text(), a Latin-1 byte ended
        # ``ragstore eval-sections`` with a UnicodeDecodeError traceback
        lineno = data.count(b"\n", 0, exc.start) + 1
        raise InputError(f"{path}:{lineno}: not UTF-8; save the file as UTF-8") from None
    out: list[Question] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            raise InputError(
                f"{path}:{lineno}: expected 3 tab-separated fields "
                f"(question, file, section_regex), got {len(parts)}"
            )
        try:
            pattern = re.compile(parts[2].strip(), re.IGNORECASE)
        except re.error as exc:
            raise InputError(
                f"{path}:{lineno}: section_regex is not a valid regular expression ({exc})"
            ) from None
        if not parts[0].strip():  # searched, it ended the run after the ingest, unnamed
            raise InputError(f"{path}:{lineno}: the question is empty")
        out.append(Question(parts[0].strip(), parts[1].strip(), pattern, len(out) + 1))
    if not out:
        raise InputError(f"{path}: no questions in the file")
    return out


def select(questions: Sequence[Question], spec: str | None) -> list[Question]:
    """Questions ``spec`` names: ``21-40`` (1-based, inclusive) or all of them for None."""
    if spec is None:
        return list(questions)
    m = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", spec)
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)) <= len(questions):
        n = len(questions)
        first = 21 if n >= 21 else 1  # "21-3" was the example for a set of 3 questions
        raise InputError(
            f"--questions {spec!r} is invalid: give a range FIRST-LAST within "
            f"1-{n}, for example {first}-{n}"
        )
    return list(questions[int(m.group(1)) - 1 : int(m.group(2))])


def heading_lines(text: str) -> list[tuple[int, str]]:
    """(offset, heading text) of every Markdown ATX heading outside fenced code."""
    out: list[tuple[int, str]] = []
    fence: str | None = None
    pos = 0
    for line in text.split("\n"):
        f = _FENCE.match(line)
        if fence is not None:
            if f and f.group(1)[0] == fence[0] and len(f.group(1)) >= len(fence):
                fence = None
        elif f:
            fence = f.group(1)
        else:
            h = _HEADING.match(line)
            if h:
                out.append((pos, (h.group(2) or "").strip()))
        pos += len(line) + 1
    return out


def is_hit(q: Question, p: Passage) -> bool:
    return p.file == q.file and any(q.pattern.search(h) for h in p.headings)


def first_hit(q: Question, ranked: Sequence[Passage]) -> int | None:
    """1-based rank of the first hit in ``ranked``, None when there is none."""
    for rank, p in enumerate(ranked, 1):
        if is_hit(q, p):
            return rank
    return None


def hit_passage(hit: Hit, root: Path | None = None) -> Passage:
    """A search hit's heading path: its section (or itself, for a heading chunk) and the
    headings it records having merged. Its file is its path relative to ``root`` (the
    set's ``docs/``; a source outside it stays whole and matches no question), or with no
    ``root`` its name.

    The chunk's text is not read for heading lines: a ``# comment`` line of a code chunk
    counted as a heading, and a question whose regex it matched scored a hit there."""
    headings: list[str] = []
    if hit.chunk_type == "heading":
        headings.append(hit.text.strip())
    elif hit.section_path:
        headings.append(hit.section_path[-1])
    headings.extend(str(h) for h in hit.metadata.get("headings", ()))
    return Passage(relative_name(hit.source, root), tuple(headings))


def relative_name(source: str, root: Path | None) -> str:
    """``source``'s path relative to ``root`` with ``/`` separators; its name when ``root``
    is None; the source itself when it is not under ``root``. Matched by name alone, a
    hit of ``docs/v1/api.md`` counted for a question on ``docs/api.md``."""
    path = Path(source)
    if root is None:
        return path.name
    try:
        return path.relative_to(root.resolve()).as_posix()
    except ValueError:
        return source


# ---- the naive baselines ----------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    passage: Passage
    text: str


def windows(file: str, text: str, words: int = WINDOW_WORDS) -> list[Window]:
    """Consecutive ``words``-word windows over the raw text, each with its heading path."""
    spans = [(m.start(), m.end()) for m in _WORD.finditer(text)]
    heads = heading_lines(text)
    out: list[Window] = []
    h = 0  # headings[:h] start at or before the window
    for i in range(0, len(spans), words):
        start, end = spans[i][0], spans[min(i + words, len(spans)) - 1][1]
        while h < len(heads) and heads[h][0] <= start:
            h += 1
        path = [heads[h - 1][1]] if h else []
        path.extend(t for off, t in heads[h:] if off < end)
        out.append(Window(Passage(file, tuple(path)), text[start:end]))
    return out


class WindowBM25:
    """Okapi BM25 (Lucene idf, k1=1.2, b=0.75) over the windows, in memory, from their
    analysed lexemes (lexeme -> term frequency each; see the module's text)."""

    def __init__(self, docs: Sequence[Mapping[str, int]], k1: float = 1.2, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self.docs = list(docs)
        self.lengths = np.array([sum(d.values()) for d in self.docs], dtype=np.float64)
        self.avg = float(self.lengths.mean()) if len(self.docs) else 0.0
        self.postings: dict[str, list[int]] = {}
        for i, d in enumerate(self.docs):
            for t in d:
                self.postings.setdefault(t, []).append(i)

    def rank(self, query: Mapping[str, int], depth: int) -> list[int]:
        """Window indexes by BM25 of the query's lexemes (lexeme -> its count in the
        query, which multiplies its weight, as in the database), best first."""
        scores = np.zeros(len(self.docs))
        n = len(self.docs)
        for t, qtf in query.items():
            ids = self.postings.get(t)
            if not ids:
                continue
            idf = math.log(1 + (n - len(ids) + 0.5) / (len(ids) + 0.5))
            tf = np.array([self.docs[i][t] for i in ids], dtype=np.float64)
            norm = self.k1 * (1 - self.b + self.b * self.lengths[ids] / self.avg)
            scores[ids] += qtf * idf * tf * (self.k1 + 1) / (tf + norm)
        order = np.argsort(-scores, kind="stable")[:depth]
        return [int(i) for i in order if scores[i] > 0]


def window_vectors(
    texts: Sequence[str], embedder: Embedder, cache_dir: Path | None, model_key: str
) -> npt.NDArray[np.float32]:
    """The windows' vectors, from ``cache_dir`` when an earlier run encoded the same texts
    with the same model: encoding thousands of windows takes minutes on a small CPU and
    the baselines never change between runs over the same documents."""
    digest = hashlib.sha256(model_key.encode())
    for t in texts:
        digest.update(hashlib.sha256(t.encode()).digest())
    path = None if cache_dir is None else cache_dir / f"windows-{digest.hexdigest()[:24]}.npy"
    if path is not None and path.is_file():
        cached = np.load(path)
        if cached.shape[0] == len(texts):
            return np.asarray(cached, dtype=np.float32)
    vectors = np.asarray(embedder.embed(texts), dtype=np.float32)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, vectors)
        tmp.replace(path)
    return vectors


def baseline_scores(
    docs: dict[str, str],
    questions: Sequence[Question],
    embedder: Embedder,
    lexemes: Analyser | None = None,
    *,
    cache_dir: Path | None = None,
    model_key: str = "",
) -> list[ModeScore]:
    """Section hits of the three window baselines over ``docs`` (path relative to
    ``docs/`` -> raw text); the window vectors are cached under ``cache_dir`` (see
    :func:`window_vectors`). ``lexemes`` analyses texts for BM25 as the database does
    (:func:`database_lexemes`); without it only ``windows-dense`` is scored."""
    wins = [w for name in sorted(docs) for w in windows(name, docs[name])]
    if not wins:
        raise InputError("the question set's docs/ holds no text to cut into windows")
    vectors = window_vectors([w.text for w in wins], embedder, cache_dir, model_key)
    dense = ModeScore("windows-dense")
    sparse = ModeScore("windows-bm25")
    fused = ModeScore("windows-rrf")
    bm25 = queries = None
    if lexemes is not None:
        bm25 = WindowBM25(lexemes([w.text for w in wins]))
        # the question's words as a plain full-text search takes them (``search.bm25``)
        queries = lexemes([parse_query(q.text, plain=True).terms for q in questions])
    for n, q in enumerate(questions):
        qv = embedder.embed_query(q.text)
        sims = vectors @ qv
        d = [int(i) for i in np.argsort(-sims, kind="stable")[:BASELINE_DEPTH]]
        dense.ranks[q.number] = first_hit(q, [wins[i].passage for i in d])
        if bm25 is None or queries is None:
            continue
        s = bm25.rank(queries[n], BASELINE_DEPTH)
        f = [i for i, _ in rrf([d, s], k=BASELINE_RRF_K)]
        for score, ranked in ((sparse, s), (fused, f)):
            score.ranks[q.number] = first_hit(q, [wins[i].passage for i in ranked])
    return [dense] if bm25 is None else [dense, sparse, fused]


def database_lexemes(rt: Runtime, collection: str) -> Analyser:
    """An :data:`Analyser` that asks the database for ``to_tsvector`` under the text search
    configuration of ``collection``'s chunks: the BM25 baseline sees the stems and stop
    words ragstore's full-text search sees."""

    def analyse(texts: Sequence[str]) -> list[dict[str, int]]:
        coll = rt.collection(collection)
        with rt.db.connection() as conn, translated("analysing the baseline's windows"):
            return documents.lexeme_counts(conn, documents.ts_config_name(conn, coll.id), texts)

    return analyse


def system_scores(
    questions: Sequence[Question],
    modes: Sequence[Mode],
    search: Callable[[str, Mode], list[Hit]],
    root: Path | None = None,
) -> list[ModeScore]:
    """Section hits of ragstore's own modes; ``search(query, mode)`` returns ranked hits,
    whose files are named relative to ``root`` (see :func:`hit_passage`)."""
    out = []
    for mode in modes:
        score = ModeScore(mode)
        for q in questions:
            ranked = [hit_passage(h, root) for h in search(q.text, mode)]
            score.ranks[q.number] = first_hit(q, ranked)
        out.append(score)
    return out


def read_docs(folder: Path) -> dict[str, str]:
    """Path relative to ``folder`` (``/``-separated) -> text of every file ``ragstore
    ingest`` takes from it (:func:`ragstore.files.discover`: subfolders too, supported
    formats only): the files the baselines cut are the ones the search ranks. Read only
    at the top level, a set whose documents sat in subfolders had its baselines scored
    on fewer files than the search."""
    if not folder.is_dir():
        raise PathNotFoundError(
            f"{folder}: no such folder; a question set keeps its documents "
            "in docs/ next to questions.tsv"
        )
    top = folder.resolve()
    return {
        p.relative_to(top).as_posix(): p.read_text(encoding="utf-8", errors="replace")
        for p in discover([folder]).files
    }


# ---- one run ----------------------------------------------------------------------------

SEARCH_K = 10  # hits fetched per question and mode (only the top 3 are scored)
SECTIONS_PURPOSE = "eval-sections"  # the "purpose" setting of a collection it created


def collection_name(folder: Path) -> str:
    """``sections-<folder name>-<8 hex digits of its full path>``: named after the folder
    alone, two copies of a set (another checkout, an edited copy) shared one collection
    and each run scored the other's documents too."""
    full = folder.resolve()
    tag = hashlib.sha256(str(full).encode()).hexdigest()[:8]
    return f"sections-{(re.sub(r'[^A-Za-z0-9_.-]', '-', full.name) or 'set')[:46]}-{tag}"


def _refuse_foreign_documents(rt: Runtime, name: str, docs_dir: Path) -> None:
    """Refuse a collection holding documents from outside ``docs_dir`` (texts, or files
    of another copy of the set): they would be ranked beside the set's documents and the
    figures would measure another corpus. The set's own deleted files are pruned by the
    ingest's sync."""
    prefix = str(docs_dir.resolve()).rstrip(os.sep) + os.sep
    coll = rt.collection(name)
    with rt.db.connection() as conn, translated(f"listing documents of {name!r}"):
        stored = documents.sources_under(conn, coll.id, [""])  # every source
    foreign = [s for s in stored if not s.startswith(prefix)]
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise InputError(
            f"collection {name!r} holds documents from outside {docs_dir} ({foreign[0]!r}"
            f"{more}), which would be ranked with the set's documents; delete it "
            f"(`ragstore collections delete {name}`) or name another --collection"
        )


@dataclass
class SectionRun:
    collection: str
    questions: list[Question]
    scores: list[ModeScore]
    ingested: int  # documents newly (re-)ingested in this run
    ingest_seconds: float


def evaluate_sections(
    rt: Runtime,
    folder: Path,
    *,
    modes: Sequence[Mode] = MODES,
    questions: str | None = None,
    collection: str | None = None,
    baselines: bool = True,
    fusion: FusionParams | None = None,
    sections: bool = True,
) -> SectionRun:
    """Ingest ``folder/docs`` (unchanged files are skipped, documents of files deleted
    from it removed), then score each mode and, with ``baselines``, the three window
    baselines on the selected questions. ``sections=False`` ranks chunks alone (no
    section-level aggregation), for comparison."""
    chosen = select(load_questions(folder / "questions.tsv"), questions)
    docs_dir = folder / "docs"
    docs = read_docs(docs_dir)
    missing = sorted({q.file for q in chosen} - set(docs))
    if missing:
        raise InputError(
            f"{folder / 'questions.tsv'}: questions name files that are not in "
            f"{folder / 'docs'}: {', '.join(missing)}"
        )
    default = collection_name(folder)
    name = collection or default
    # into a user's collection its files would be added, and stored documents of the same
    # paths replaced: only a collection this command made (or, unmarked, made under the
    # default name before the mark existed) is used
    scratch_collection(
        rt,
        name,
        purpose=SECTIONS_PURPOSE,
        command="ragstore eval-sections",
        adds=f"the files of {folder / 'docs'} to it and replace its documents of the same "
        "paths; leave --collection out (sections-<set>-<path hash>)",
        unmarked_ok=name == default,
    )
    _refuse_foreign_documents(rt, name, docs_dir)
    # synced and pruned: a file deleted from docs/ since the last run left its document,
    # which went on being ranked (and counted against the questions)
    report = ingest_paths(rt, [docs_dir], name, sync=True, prune=True)
    if report.failed:
        first = report.failed[0]
        raise InputError(
            f"{len(report.failed)} file(s) of {folder / 'docs'} failed to ingest; "
            f"first: {first.error}"
        )
    # questions are prose, searched as plain text as `ragstore eval` searches: parsed as
    # query syntax, a question naming `-inspect` excluded every chunk with "inspect" (and
    # `--inspect` kept only those)
    params = {
        m: SearchParams(
            k=SEARCH_K, mode=m, fusion=fusion or FusionParams(), sections=sections, plain=True
        )
        for m in modes
    }
    scores = system_scores(chosen, modes, lambda q, m: run(rt, q, name, params[m]), docs_dir)
    if baselines:
        coll = rt.collection(name)
        scores.extend(
            baseline_scores(
                docs,
                chosen,
                rt.embedder_for(coll),
                database_lexemes(rt, name),
                cache_dir=rt.settings.data_dir / "cache" / "sections",
                model_key=coll.model.key,
            )
        )
    return SectionRun(
        name, chosen, scores, report.count("added") + report.count("updated"), report.seconds
    )
