"""Section hit rates on long documents, with the naive sliding-window baselines beside them.

A question set is a folder holding ``docs/`` (the documents) and ``questions.tsv``: one
question per line, three tab-separated fields, ``question``, ``file`` (a basename in
``docs/``) and ``section_regex`` (a case-insensitive Python regex over heading texts).
A passage is a hit when it comes from ``file`` and its heading path matches: the heading
in force where the passage starts plus every heading inside it. The score is the share of
questions with a hit at rank 1 and within the top 3.

SciFact-style sets (one short abstract per document) cannot see chunking or section
structure; this one can. So that a figure means something, the baselines are computed in
the same run on the same documents: fixed ``WINDOW_WORDS``-word windows over the raw text,
ranked by exact cosine with the collection's own model (``windows-dense``), by BM25
(``windows-bm25``) and by their RRF with k=60 (``windows-rrf``).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ragstore.embedding.base import Embedder
from ragstore.errors import InputError, PathNotFoundError
from ragstore.ingest import ingest_paths
from ragstore.models import Hit
from ragstore.runtime import Runtime
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
_TERM = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    (
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "can",
        "do",
        "does",
        "for",
        "from",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "so",
        "that",
        "the",
        "their",
        "then",
        "there",
        "these",
        "they",
        "this",
        "to",
        "was",
        "what",
        "when",
        "where",
        "which",
        "while",
        "who",
        "why",
        "will",
        "with",
        "without",
        "you",
        "your",
    )
)


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


def hit_passage(hit: Hit) -> Passage:
    """A search hit's heading path: its section (or itself, for a heading chunk), the
    headings it records having merged, and any Markdown heading line in its text."""
    headings: list[str] = []
    if hit.chunk_type == "heading":
        headings.append(hit.text.strip())
    elif hit.section_path:
        headings.append(hit.section_path[-1])
    headings.extend(str(h) for h in hit.metadata.get("headings", ()))
    headings.extend(h for _, h in heading_lines(hit.text))
    return Passage(Path(hit.source).name, tuple(headings))


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


def terms(text: str) -> list[str]:
    return [t for t in _TERM.findall(text.lower()) if t not in _STOP]


class WindowBM25:
    """Okapi BM25 (Lucene idf, k1=1.2, b=0.75) over the windows, in memory."""

    def __init__(self, texts: Sequence[str], k1: float = 1.2, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self.docs = [Counter(terms(t)) for t in texts]
        self.lengths = np.array([sum(d.values()) for d in self.docs], dtype=np.float64)
        self.avg = float(self.lengths.mean()) if len(self.docs) else 0.0
        self.postings: dict[str, list[int]] = {}
        for i, d in enumerate(self.docs):
            for t in d:
                self.postings.setdefault(t, []).append(i)

    def rank(self, query: str, depth: int) -> list[int]:
        scores = np.zeros(len(self.docs))
        n = len(self.docs)
        for t in set(terms(query)):
            ids = self.postings.get(t)
            if not ids:
                continue
            idf = math.log(1 + (n - len(ids) + 0.5) / (len(ids) + 0.5))
            tf = np.array([self.docs[i][t] for i in ids], dtype=np.float64)
            norm = self.k1 * (1 - self.b + self.b * self.lengths[ids] / self.avg)
            scores[ids] += idf * tf * (self.k1 + 1) / (tf + norm)
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
    *,
    cache_dir: Path | None = None,
    model_key: str = "",
) -> list[ModeScore]:
    """Section hits of the three window baselines over ``docs`` (basename -> raw text);
    the window vectors are cached under ``cache_dir`` (see :func:`window_vectors`)."""
    wins = [w for name in sorted(docs) for w in windows(name, docs[name])]
    if not wins:
        raise InputError("the question set's docs/ holds no text to cut into windows")
    vectors = window_vectors([w.text for w in wins], embedder, cache_dir, model_key)
    bm25 = WindowBM25([w.text for w in wins])
    dense = ModeScore("windows-dense")
    sparse = ModeScore("windows-bm25")
    fused = ModeScore("windows-rrf")
    for q in questions:
        qv = embedder.embed_query(q.text)
        sims = vectors @ qv
        d = [int(i) for i in np.argsort(-sims, kind="stable")[:BASELINE_DEPTH]]
        s = bm25.rank(q.text, BASELINE_DEPTH)
        f = [i for i, _ in rrf([d, s], k=BASELINE_RRF_K)]
        for score, ranked in ((dense, d), (sparse, s), (fused, f)):
            score.ranks[q.number] = first_hit(q, [wins[i].passage for i in ranked])
    return [dense, sparse, fused]


def system_scores(
    questions: Sequence[Question], modes: Sequence[Mode], search: Callable[[str, Mode], list[Hit]]
) -> list[ModeScore]:
    """Section hits of ragstore's own modes; ``search(query, mode)`` returns ranked hits."""
    out = []
    for mode in modes:
        score = ModeScore(mode)
        for q in questions:
            score.ranks[q.number] = first_hit(q, [hit_passage(h) for h in search(q.text, mode)])
        out.append(score)
    return out


def read_docs(folder: Path) -> dict[str, str]:
    """basename -> text of every file directly in ``folder`` (the set's ``docs/``)."""
    if not folder.is_dir():
        raise PathNotFoundError(
            f"{folder}: no such folder; a question set keeps its documents "
            "in docs/ next to questions.tsv"
        )
    return {
        p.name: p.read_text(encoding="utf-8", errors="replace")
        for p in sorted(folder.iterdir())
        if p.is_file()
    }


# ---- one run ----------------------------------------------------------------------------

SEARCH_K = 10  # hits fetched per question and mode (only the top 3 are scored)
SECTIONS_PURPOSE = "eval-sections"  # the "purpose" setting of a collection it created


def collection_name(folder: Path) -> str:
    return "sections-" + (re.sub(r"[^A-Za-z0-9_.-]", "-", folder.resolve().name) or "set")[:55]


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
    """Ingest ``folder/docs`` (unchanged files are skipped), then score each mode and,
    with ``baselines``, the three window baselines on the selected questions.
    ``sections=False`` ranks chunks alone (no section-level aggregation), for comparison."""
    chosen = select(load_questions(folder / "questions.tsv"), questions)
    docs = read_docs(folder / "docs")
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
        "paths; leave --collection out (sections-<set>)",
        unmarked_ok=name == default,
    )
    report = ingest_paths(rt, [folder / "docs"], name)
    if report.failed:
        first = report.failed[0]
        raise InputError(
            f"{len(report.failed)} file(s) of {folder / 'docs'} failed to ingest; "
            f"first: {first.error}"
        )
    params = {
        m: SearchParams(k=SEARCH_K, mode=m, fusion=fusion or FusionParams(), sections=sections)
        for m in modes
    }
    scores = system_scores(chosen, modes, lambda q, m: run(rt, q, name, params[m]))
    if baselines:
        coll = rt.collection(name)
        scores.extend(
            baseline_scores(
                docs,
                chosen,
                rt.embedder_for(coll),
                cache_dir=rt.settings.data_dir / "cache" / "sections",
                model_key=coll.model.key,
            )
        )
    return SectionRun(
        name, chosen, scores, report.count("added") + report.count("updated"), report.seconds
    )
