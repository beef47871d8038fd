"""Token counts and spans from the word cache equal the Rust tokenizer's, text for text.

The reference is the tokenizer itself (``encode_batch`` with offsets), on real documents
(every paragraph of the nodejs-api reference and of the SciFact corpus) and on generated
text that mixes plain ASCII with what must take the tokenizer's own path: accents, CJK,
control characters, added tokens such as ``[SEP]``, odd whitespace.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ragstore.embedding import wordpieces
from ragstore.embedding.base import _backend, tokenizer_counts, tokenizer_encodings
from ragstore.embedding.registry import DEFAULT_MODEL, load_embedder, resolve_spec
from tests.conftest import SHARED_DATA


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return load_embedder(resolve_spec(DEFAULT_MODEL)).tokenizer  # type: ignore[attr-defined]


def _reference(tokenizer: Any, texts: list[str]) -> list[tuple[int, list[Any], list[int]]]:
    """Count, content-token spans and word numbers straight from the Rust tokenizer."""
    out = []
    for e in _backend(tokenizer).encode_batch(texts, add_special_tokens=True):
        keep = [k for k, special in enumerate(e.special_tokens_mask) if not special]
        offsets, words = e.offsets, e.word_ids  # each access builds a new list
        out.append(
            (
                len(e.ids),
                [tuple(offsets[k]) for k in keep],
                [-1 if words[k] is None else words[k] for k in keep],
            )
        )
    return out


def _assert_same(tokenizer: Any, texts: list[str]) -> None:
    want = _reference(tokenizer, texts)
    encs = tokenizer_encodings(tokenizer, texts)
    assert encs is not None
    got = [(e.count, [tuple(s) for s in e.spans], e.words) for e in encs]
    for text, w, g in zip(texts, want, got, strict=True):
        assert g == w, f"{text[:120]!r}"
    assert tokenizer_counts(tokenizer, texts) == [w[0] for w in want]


def _paragraphs() -> list[str]:
    texts = []
    for path in sorted((SHARED_DATA / "nodejs-api" / "docs").glob("*.md")):
        texts += [p for p in path.read_text(encoding="utf-8").split("\n\n") if p.strip()]
    with (SHARED_DATA / "scifact" / "corpus.jsonl").open(encoding="utf-8") as f:
        for line in f:
            doc = json.loads(line)
            texts += [doc["title"], doc["text"]]
    return texts


def test_real_documents_count_and_span_as_the_tokenizer_does(tokenizer: Any) -> None:
    texts = _paragraphs()
    pieces = wordpieces.word_pieces(_backend(tokenizer))
    plain = sum(pieces.plain(t) for t in texts)
    assert plain > 0.99 * len(texts), "nearly all real text takes the word path"
    assert sum(pieces.plain(t) and not t.isascii() for t in texts) > 1000, (
        "non-ASCII text included (its non-ASCII segments tokenized as units)"
    )
    _assert_same(tokenizer, texts)


_ALPHABET = st.sampled_from(
    [
        *"abcXYZ019 .,;:!?()[]{}<>'\"`~@#$%^&*-_=+/\\|\t\n\r",
        *["\x00", "\x07", "\x7f", "é", "Ü", "中", "\u00a0", "\u2019", "\u200b", "ﬁ"],
        *["\x0b", "\x0c", "\x1c", "\u0301", "İ", "ß", "\u3000", "\u2028", "😀", "µm", "±"],
        *["naïve", "e\u0301", "Straße", "x" * 70 + "é"],
        *["[SEP]", "[cls]", "[MASK]", "[UNK]", "tokenization", "unaffable", "x" * 120],
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(_ALPHABET, max_size=40).map("".join), min_size=1, max_size=8))
def test_generated_text_counts_and_spans_as_the_tokenizer_does(
    tokenizer: Any, texts: list[str]
) -> None:
    _assert_same(tokenizer, texts)


def test_a_full_word_cache_starts_over_and_stays_right(
    tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wordpieces, "CACHE_WORDS", 5)
    pieces = wordpieces.WordPieces(_backend(tokenizer))
    texts = ["alpha beta gamma delta", "epsilon zeta eta theta iota", "alpha kappa"]
    want = [w[0] for w in _reference(tokenizer, texts)]
    assert pieces.counts(texts) == want
    assert len(pieces._ends) <= 5 + 5


def test_a_cache_that_starts_over_keeps_the_known_words_of_the_text_at_hand(
    tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the second text brings known words and enough new ones to fill the cache: it
    # starts over with every word of the text, not only the new ones
    monkeypatch.setattr(wordpieces, "CACHE_WORDS", 4)
    pieces = wordpieces.WordPieces(_backend(tokenizer))
    texts = ["alpha beta gamma", "alpha delta epsilon zeta"]
    want = _reference(tokenizer, texts)
    assert pieces.counts(texts[:1]) == [want[0][0]]
    assert pieces.counts(texts[1:]) == [want[1][0]]
    assert pieces.spans(texts[0]) == (want[0][1], want[0][2])


def _same_index(index: Any, spans: list[tuple[int, int]], words: list[int], text: str) -> None:
    from ragstore.embedding.base import TokenIndex

    ref = TokenIndex(spans, words)
    assert len(index) == len(ref)
    for i in range(len(ref)):
        assert (index.start(i), index.end(i)) == (ref.start(i), ref.end(i))
        if i:
            assert index.joined(i) == ref.joined(i)
    for pos in range(len(text) + 2):
        assert index.before(pos) == ref.before(pos), pos
        for t in {0, len(ref) // 2, max(0, ref.before(pos) - 1), len(ref)}:
            assert index.advance(t, pos) == ref.advance(t, pos), (t, pos)


def test_a_plain_texts_word_index_reads_as_its_token_spans(tokenizer: Any) -> None:
    from ragstore.embedding.base import WordIndex

    texts = [t for t in _paragraphs()[:3000] if t.isascii()][:400]
    texts += ["", "a", "unaffable tokenization", "x" * 130 + " ok", "[SEP]"[1:], "a , b"]
    pieces = wordpieces.word_pieces(_backend(tokenizer))
    for text in texts:
        located = pieces.located(text)
        assert located is not None, text[:80]
        _same_index(WordIndex(*located), *pieces.spans(text), text)
        parts = pieces.parts(text)  # the words and their starts from the split's parts
        assert parts is not None and parts[1::2] == pieces.units(text)
        assert pieces.located(text, parts) == located


def test_a_text_with_segments_is_located_from_its_words(tokenizer: Any) -> None:
    """Curly quotes, accents and symbols: such a text's index is a word index too, and
    reads as its token spans; a word whose pieces leave a gap falls back to the spans."""
    from ragstore.embedding.base import WordIndex

    pieces = wordpieces.word_pieces(_backend(tokenizer))
    texts = [t for t in _paragraphs() if not t.isascii() and pieces.plain(t)][:400]
    assert len(texts) == 400
    located = [pieces.located(t) for t in texts]
    assert sum(x is not None for x in located) > 0.95 * len(texts)
    for text, at in zip(texts, located, strict=True):
        if at is not None:
            _same_index(WordIndex(*at), *pieces.spans(text), text)
    assert pieces.located("x\u0301y and more") is None, "the dropped mark leaves a gap in xy"


@settings(max_examples=300, deadline=None)
@given(st.lists(_ALPHABET, max_size=40).map("".join))
def test_every_encodings_index_reads_as_its_spans(tokenizer: Any, text: str) -> None:
    (enc,) = tokenizer_encodings(tokenizer, [text]) or []
    _same_index(enc.index, enc.spans, enc.words, text)


def test_words_cut_by_the_wordpiece_model_alone_match_the_tokenizer(tokenizer: Any) -> None:
    """New plain words are cut by the WordPiece model without the tokenizer's normalizer
    and pre-tokenizer: upper and mixed case (the normalizer lower-cases), digits, single
    punctuation and words past WordPiece's 100 characters (one [UNK]) must still match."""
    texts = [
        "Zygomorphic QUASICRYSTALS and mIxEdCaSe wordsxyzzy 20261204 !",
        "Q" * 101 + " " + "abc" * 40 + " tail",
        "x" * 100 + " " + "Ab" * 50 + "c",
    ]
    _assert_same(tokenizer, texts)
