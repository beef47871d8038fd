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

Only texts of printable ASCII, tabs and line breaks take this path. There the
pre-tokenizer's words are exactly runs of letters and digits and single punctuation marks
(every printable ASCII character that is not a letter, digit or space is punctuation to
BERT), and the normalizer does nothing a word alone would not get too (lower-casing;
accents and CJK padding need other characters; control characters, which it deletes, are
excluded). A text holding an added token's text (``[SEP]``, ``[MASK]``: the tokenizer
matches those before splitting) or anything else goes to the tokenizer itself. Spans and
word numbers are built only when the chunker asks for them (a block it must split).
"""

from __future__ import annotations

import re
import threading
from typing import Any
from weakref import WeakKeyDictionary

# BertPreTokenizer's words in printable ASCII: letters and digits, or one punctuation mark
_WORD = re.compile(r"[A-Za-z0-9]+|[!-/:-@\[-`{-~]")
_NOT_PLAIN = re.compile(r"[^\t\n\r -~]")
CACHE_WORDS = 100_000  # words kept per tokenizer (about 20 MB); it starts over past this

Ends = tuple[int, ...]  # where each piece of a word ends (its pieces cover it in order)


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
        self._ends: dict[str, Ends] = {}
        self._lock = threading.Lock()

    def plain(self, text: str) -> bool:
        """Whether ``text``'s tokens are its words' tokens (see the module docstring)."""
        return _NOT_PLAIN.search(text) is None and (
            self._added is None or self._added.search(text) is None
        )

    def _learn(self, words: list[str]) -> dict[str, Ends]:
        ends = self._ends
        new = [w for w in set(words) if w not in ends]
        if new:
            cut = self.backend.encode_batch(new, add_special_tokens=False)
            with self._lock:
                if len(ends) + len(new) > CACHE_WORDS:
                    ends = self._ends = {}
                for w, e in zip(new, cut, strict=True):
                    # WordPiece covers a word with consecutive pieces (or one [UNK]):
                    # the ends say it all, in a third of the memory of the spans
                    ends[w] = tuple(b for _, b in e.offsets)
        return ends

    def counts(self, texts: list[str]) -> list[int]:
        """Tokens of each plain text, special tokens included."""
        words = [_WORD.findall(t) for t in texts]
        ends = self._learn([w for ws in words for w in ws])
        return [self.special + sum(len(ends[w]) for w in ws) for ws in words]

    def spans(self, text: str) -> tuple[list[tuple[int, int]], list[int]]:
        """Each content token's character span in ``text`` and its word's number."""
        found = list(_WORD.finditer(text))
        ends = self._learn([m.group() for m in found])
        spans: list[tuple[int, int]] = []
        words: list[int] = []
        for k, m in enumerate(found):
            start = a = m.start()
            for b in ends[m.group()]:
                spans.append((a, start + b))
                words.append(k)
                a = start + b
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


def word_pieces(backend: Any) -> WordPieces | None:
    """The one :class:`WordPieces` of a Rust tokenizer (``backend``) in this process, or
    None for a tokenizer that does not read words alone (decided once per tokenizer)."""
    with _pieces_lock:
        if backend not in _pieces:
            _pieces[backend] = WordPieces(backend) if reads_words_alone(backend) else None
        return _pieces[backend]
