"""Token counts and spans of plain-ASCII text under a BERT tokenizer, from its words.

The chunker tokenizes every block of every document to size its chunks, and under a fast
embedder (a GPU, a remote endpoint) that was the largest cost of a load left outside the
model: 0.40 of 1.5 CPU-ms a chunk (docs/benchmarks.md, "Where the time goes"). A BERT
tokenizer reads a text one word at a time: its normalizer works per character, its
pre-tokenizer splits at every whitespace and every punctuation mark, and WordPiece cuts
each word alone (:func:`ragstore.embedding.base.tokenizer_joins_add_up`). So a text's
tokens are its words' tokens in order, and a word is tokenized once per process: the
pieces of each word seen are kept, and a text costs a regular-expression pass and a
dictionary lookup per word, about eight times less than the Rust tokenizer for counts.

Printable ASCII, tabs and line breaks are read this way. There the pre-tokenizer's words
are exactly runs of letters and digits and single punctuation marks (every printable
ASCII character that is not a letter, digit or space is punctuation to BERT), and the
normalizer does nothing a word alone would not get too (lower-casing; accents and CJK
padding need other characters; control characters, which it deletes, are excluded). In
a text with other characters, each space-delimited segment holding one is a unit of its
own, tokenized whole and kept like a word (its tokens with their word numbers): a space,
tab or line break ends every word and the normalizer works per character, so the text's
tokens are its units' tokens all the same. A text holding an added token's text
(``[SEP]``, ``[MASK]``: the tokenizer matches those before splitting) or such a segment
over ``SEGMENT_CHARS`` (CJK prose has no spaces) goes to the tokenizer itself. Spans and
word numbers are built only when the chunker asks for them (a block it must split).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Sequence
from itertools import accumulate, chain, compress
from typing import Any
from weakref import WeakKeyDictionary, WeakSet

# BertPreTokenizer's words in printable ASCII: letters and digits, or one punctuation mark
_WORD = re.compile(r"[A-Za-z0-9]+|[!-/:-@\[-`{-~]")
_NOT_PLAIN = re.compile(r"[^\t\n\r -~]")
# a plain text cut at its words: [gap, word, gap, ..., word, gap], each gap its whitespace
_WORD_PARTS = re.compile(f"({_WORD.pattern})")
# in a text that is not all plain: a whitespace-delimited segment holding a character
# that is not plain ASCII is one unit (tokenized as a whole), the rest are words as above
_UNIT = re.compile(r"(?<![^ \t\n\r])[^ \t\n\r]*[^\t\n\r -~][^ \t\n\r]*|" + _WORD.pattern)
SEGMENT_CHARS = 64  # a text with a longer such segment goes to the tokenizer itself
CACHE_WORDS = 100_000  # words kept per tokenizer (about 25 MB); it starts over past this

Ends = tuple[int, ...]  # where each piece of a word ends (its pieces cover it in order)
Pieces = tuple[tuple[int, int, int], ...]  # a segment's tokens: (start, end, word number)
_GROUP = re.Match.group
_SPAN = re.Match.span
_START = re.Match.start
_OVER_ONE = (1).__lt__


class WordPieces:
    """The pieces of each word a BERT tokenizer has cut, and texts counted from them."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.special = len(backend.encode("", add_special_tokens=True).ids)
        added = [str(t.content) for t in backend.get_added_tokens_decoder().values()]
        self._added = (
            re.compile("|".join(re.escape(a) for a in added if a), re.IGNORECASE)
            if any(added)
            else None
        )
        # plain words are cut by the WordPiece model itself: a tenth of the cost of the
        # whole tokenizer's batch call for the few new words of a document
        self._wordpiece = backend.model.tokenize
        normalizer = backend.normalizer
        self._lower = bool(normalizer is not None and normalizer.lowercase)
        self._ends: dict[str, Ends | Pieces] = {}
        self._counts: dict[str, int] = {}  # tokens of each unit in _ends: what counts read
        self._lock = threading.Lock()
        _instances.add(self)

    def units(self, text: str) -> list[str] | None:
        """The words (and segments) whose tokens are ``text``'s tokens in order, or None
        for a text the tokenizer must read itself (see the module docstring)."""
        if self._added is not None and self._added.search(text) is not None:
            return None
        if _NOT_PLAIN.search(text) is None:
            return _WORD.findall(text)
        units = _UNIT.findall(text)
        return units if max(map(len, units), default=0) <= SEGMENT_CHARS else None

    def units_of(self, texts: Sequence[str]) -> list[list[str]] | None:
        """:meth:`units` of every text when all of them are plain ASCII without an added
        token's text (then each is its words), else None. Two searches over the texts
        joined instead of two a text: the chunker counts a code, list or table block it
        splits line by line, and 4 MB of ``{`` lines were two million texts."""
        joined = "\n".join(texts)  # a match across two texts only costs the shortcut
        if _NOT_PLAIN.search(joined) is not None:
            return None
        if self._added is not None and self._added.search(joined) is not None:
            return None
        findall = _WORD.findall
        return [findall(t) for t in texts]

    def parts(self, text: str) -> list[str] | None:
        """A text whose units are all words (see the module docstring) cut at them:
        ``[gap, word, gap, ..., word, gap]``, each gap the whitespace between (maybe
        empty); None for any other text. Its words are ``parts[1::2]``, the same as
        :meth:`units`, and the positions of the words follow from the lengths of the
        parts, so a block the chunker splits (:meth:`located`) needs no second pass of
        the regular expression: a pass with match objects cost three times the split."""
        if self._added is not None and self._added.search(text) is not None:
            return None
        if _NOT_PLAIN.search(text) is not None:
            return None
        return _WORD_PARTS.split(text)

    def plain(self, text: str) -> bool:
        """Whether ``text``'s tokens are its units' tokens (see the module docstring)."""
        return self.units(text) is not None

    def _learn(self, units: list[str]) -> tuple[dict[str, Ends | Pieces], dict[str, int]]:
        """The caches (pieces, token counts), holding every unit of ``units``."""
        ends, counts = self._ends, self._counts
        seen = set(units)
        new = list(seen.difference(ends))
        if new:
            learnt: dict[str, Ends | Pieces] = {}
            segments = []
            for w in new:
                if _NOT_PLAIN.search(w) is None:
                    # a plain word: WordPiece alone, as the tokenizer would run it after its
                    # normalizer (lower-casing at most, for printable ASCII), covers it with
                    # consecutive pieces (or one [UNK]): the ends say it all, in a third of
                    # the memory of the spans
                    learnt[w] = tuple(
                        t.offsets[1] for t in self._wordpiece(w.lower() if self._lower else w)
                    )
                else:
                    segments.append(w)
            if segments:  # the whole tokenizer for the rest (see the module docstring)
                cut = self.backend.encode_batch(segments, add_special_tokens=False)
                for w, e in zip(segments, cut, strict=True):
                    learnt[w] = tuple(
                        (a, b, -1 if k is None else k)
                        for (a, b), k in zip(e.offsets, e.word_ids, strict=True)
                    )
            with self._lock:
                if len(ends) + len(new) > CACHE_WORDS:
                    # start over, keeping the known words of the units at hand
                    known = seen.difference(new)
                    ends = self._ends = {w: ends[w] for w in known}
                    counts = self._counts = {w: len(ends[w]) for w in known}
                ends.update(learnt)
                counts.update((w, len(e)) for w, e in learnt.items())
        return ends, counts

    def counts_of(self, units: list[list[str]]) -> list[int]:
        """Tokens of each text given as its :meth:`units`, special tokens included."""
        special = self.special
        try:  # every word known: the usual case once a load is under way
            get = self._counts.__getitem__
            return [special + sum(map(get, us)) for us in units]
        except KeyError:
            get = self._learn(list(chain.from_iterable(units)))[1].__getitem__
            return [special + sum(map(get, us)) for us in units]

    def counts(self, texts: list[str]) -> list[int]:
        """Tokens of each text whose :meth:`units` are known, special tokens included."""
        units = [self.units(t) for t in texts]
        if any(us is None for us in units):
            raise ValueError("counts() takes only texts that plain() accepts")
        return self.counts_of(units)  # type: ignore[arg-type]

    def located(
        self, text: str, parts: list[str] | None = None
    ) -> tuple[list[int], list[Ends]] | None:
        """Where each word of ``text`` starts, and its pieces' ends (see
        :class:`ragstore.embedding.base.WordIndex`); None where they cannot say it (see
        :meth:`_segments_located`). ``parts``: the text's :meth:`parts`, when the caller
        has them."""
        if parts is None:
            if _NOT_PLAIN.search(text) is not None:
                return self._segments_located(text)
            found = list(_WORD.finditer(text))
            keys = list(map(_GROUP, found))
            starts = list(map(_START, found))
        else:
            keys = parts[1::2]
            starts = list(accumulate(map(len, parts[:-1]), initial=0))[1::2]
        try:
            pieces = list(map(self._ends.__getitem__, keys))
        except KeyError:
            pieces = list(map(self._learn(keys)[0].__getitem__, keys))
        return starts, pieces  # type: ignore[return-value]

    def _segments_located(self, text: str) -> tuple[list[int], list[Ends]] | None:
        """:meth:`located` for a text with segments (see the module docstring): each
        segment's tokens, grouped by the word the tokenizer says they belong to, become
        words of their own, so that a block holding a curly quote or an accent is split
        from its words as a plain one is, instead of from a tuple made per token (a
        tenth of the CPU of preparing SciFact's abstracts went there). None for a text
        whose tokens do not follow one another so (a word whose pieces leave a gap, as
        where the normalizer drops a character inside it, or overlap): the caller then
        reads its spans (:meth:`spans`)."""
        found = list(_UNIT.finditer(text))
        keys = list(map(_GROUP, found))
        try:
            units = list(map(self._ends.__getitem__, keys))
        except KeyError:
            units = list(map(self._learn(keys)[0].__getitem__, keys))
        starts: list[int] = []
        pieces: list[Ends] = []
        end = 0  # where the last word ends: every word starts at or after it
        for unit_start, unit in zip(map(_START, found), units, strict=True):
            if not unit or type(unit[0]) is int:  # a plain word (or nothing at all)
                if unit:
                    starts.append(unit_start)
                    pieces.append(unit)  # type: ignore[arg-type]
                    end = unit_start + unit[-1]  # type: ignore[operator]
                continue
            word = -1
            for a, b, w in unit:  # type: ignore[misc]
                a += unit_start
                b += unit_start
                if w != word:  # a new word of the segment
                    if a < end or b <= a:
                        return None
                    word, first = w, a
                    starts.append(a)
                    pieces.append((b - a,))
                elif a != end or b <= a:  # a piece that does not follow the last one
                    return None
                else:
                    pieces[-1] += (b - first,)
                end = b
        return starts, pieces

    def spans(self, text: str) -> tuple[list[tuple[int, int]], list[int]]:
        """Each content token's character span in ``text`` and its word's number."""
        plain = _NOT_PLAIN.search(text) is None
        found = list((_WORD if plain else _UNIT).finditer(text))
        keys = list(map(_GROUP, found))
        try:
            pieces = list(map(self._ends.__getitem__, keys))
        except KeyError:
            pieces = list(map(self._learn(keys)[0].__getitem__, keys))
        found_spans = list(map(_SPAN, found))
        if plain:  # words only: those of more than one piece are cut
            cut = list(compress(range(len(keys)), map(_OVER_ONE, map(len, pieces))))
        else:  # and every segment
            cut = [k for k, p in enumerate(pieces) if len(p) != 1 or type(p[0]) is not int]
        return _token_spans(found_spans, pieces, cut)


def _token_spans(
    found: list[tuple[int, int]], pieces: list[Ends | Pieces], cut: list[int]
) -> tuple[list[tuple[int, int]], list[int]]:
    """Token spans and word numbers of a text from its units' spans and pieces: a word
    of one piece is one token over the word, so only the units at ``cut`` are taken
    apart (words of several pieces, segments of any number of words)."""
    n = len(found)
    if not cut:
        return found, list(range(n))
    spans: list[tuple[int, int]] = []
    words: list[int] = []
    prev = shift = 0  # shift: words of the segments so far, less one word a segment
    for k in cut:
        spans += found[prev:k]
        words += range(prev + shift, k + shift)
        start = found[k][0]
        unit = pieces[k]
        if unit and type(unit[0]) is int:  # a word
            a = start
            for b in unit:
                spans.append((a, start + b))
                a = start + b
            words += [k + shift] * len(unit)
        else:  # a segment (none at all where the normalizer drops it whole)
            for x, y, j in unit:  # type: ignore[misc]
                spans.append((start + x, start + y))
                words.append(k + shift + j)
            shift += (unit[-1][2] + 1 if unit else 0) - 1  # type: ignore[index]
        prev = k + 1
    spans += found[prev:]
    words += range(prev + shift, n + shift)
    return spans, words


def reads_words_alone(backend: Any) -> bool:
    """Whether a Rust tokenizer is BERT's kind: a per-character normalizer (or none),
    BertPreTokenizer and WordPiece, so that a text's tokens are its words' tokens."""
    from tokenizers import models, normalizers, pre_tokenizers

    return (
        isinstance(backend.pre_tokenizer, pre_tokenizers.BertPreTokenizer)
        and isinstance(backend.normalizer, normalizers.BertNormalizer | None)
        and isinstance(backend.model, models.WordPiece)
    )


_pieces: WeakKeyDictionary[Any, WordPieces | None] = WeakKeyDictionary()
_pieces_lock = threading.Lock()
_instances: WeakSet[WordPieces] = WeakSet()
_held: list[threading.Lock] = []  # taken by the forking thread from before to after a fork


def _before_fork() -> None:
    """Take every lock of the word caches, so that a fork copies them free and their
    dictionaries whole. Parse workers are forked from processes that run other threads
    (``ragstore serve`` ingesting an upload while other requests count tokens): a child
    that inherited a lock held by another thread would wait on it forever at its first
    new word, and the ingest with it (tests/test_ingest_workers.py)."""
    locks = [_pieces_lock, *(wp._lock for wp in list(_instances))]
    for lock in locks:
        lock.acquire()
    _held[:] = locks


def _after_fork() -> None:
    """Release what :func:`_before_fork` took, in the parent and in the child."""
    locks = _held[:]
    _held.clear()
    for lock in reversed(locks):
        lock.release()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork, after_in_parent=_after_fork, after_in_child=_after_fork
    )


def word_pieces(backend: Any) -> WordPieces | None:
    """The one :class:`WordPieces` of a Rust tokenizer (``backend``) in this process, or
    None for a tokenizer that does not read words alone (decided once per tokenizer)."""
    with _pieces_lock:
        if backend not in _pieces:
            _pieces[backend] = WordPieces(backend) if reads_words_alone(backend) else None
        return _pieces[backend]
