"""The embedder base class: batching happens here once; providers implement ``embed_batch``."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from functools import partial
from itertools import accumulate
from typing import Any

import numpy as np
import numpy.typing as npt

from ragstore.embedding.wordpieces import WordPieces, reads_words_alone, word_pieces
from ragstore.models import ModelSpec

Vectors = npt.NDArray[np.float32]


# the pin's options that decide a query's vector: its prefix, the length it is cut to,
# and a remote model's name, endpoint and asked-for length (not its path, probe, tokenizer,
# batch size or retries: the same vectors come out)
_QUERY_OPTIONS = ("query_prefix", "truncate_dim", "dimensions", "model", "base_url")


def query_key(spec: ModelSpec) -> str:
    """The query-vector cache's key for a pin: everything that decides a query's vector.

    ``name@revision`` alone was shared by two pins of that name in two databases (two
    Stores or servers of one process): each got the other's cached vectors, made with
    another query prefix, length or endpoint, and searched with them."""
    fields = [spec.provider, spec.name, spec.revision, spec.checksum, spec.dimension]
    fields += [spec.normalize, *(spec.options.get(o) for o in _QUERY_OPTIONS)]
    return json.dumps(fields, default=str)


class Embedder(ABC):
    """Turns texts into vectors for one pinned :class:`ModelSpec`.

    Subclasses implement :meth:`embed_batch` (one call to the model) and the tokenizer
    hooks the chunker needs so that no chunk exceeds what the model reads.
    """

    spec: ModelSpec
    batch_size: int = 64

    @abstractmethod
    def embed_batch(self, texts: Sequence[str]) -> Vectors:
        """Embed one batch; rows are L2-normalised when the spec says so."""

    def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed documents' texts (passages), with the spec's ``passage_prefix`` if any.

        Models such as e5 are trained with ``passage: `` / ``query: `` prefixes; the pin
        records them (``options``) so every process embeds the same way.
        """
        prefix = self.passage_prefix
        return self.embed_texts([prefix + t for t in texts] if prefix else texts)

    @property
    def passage_prefix(self) -> str:
        """What :meth:`embed` puts before every passage (the pin's ``passage_prefix``)."""
        return str(self.spec.options.get("passage_prefix", ""))

    def embed_texts(self, texts: Sequence[str]) -> Vectors:
        """Embed texts exactly as given, in batches of ``batch_size``."""
        if not texts:
            return np.zeros((0, self.spec.dimension), dtype=np.float32)
        parts = [
            self.embed_batch(texts[i : i + self.batch_size])
            for i in range(0, len(texts), self.batch_size)
        ]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def embed_query(self, text: str) -> npt.NDArray[np.float32]:
        """One query's vector through the process-wide LRU cache keyed by (model, text)
        (the model: :func:`query_key`).

        Searches call this instead of :meth:`embed` so a repeated query costs a dict lookup;
        the returned array is read-only because it is shared.
        """
        from ragstore.embedding.cache import query_cache

        cache = query_cache()
        key = query_key(self.spec)
        hit = cache.get(key, text)
        if hit is not None:
            return hit
        prefix = str(self.spec.options.get("query_prefix", ""))
        return cache.put(key, text, self.embed_texts([prefix + text])[0])

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens each text takes in the model as :meth:`embed` sends it: special tokens
        and the pinned passage prefix included.

        The chunker's budget, ingest's check for a space being built and a migration's
        backfill check all read this, against the model's ``max_tokens``. Counting the
        text alone let a chunk at the limit of a prefixed model (``passage: `` for e5)
        reach the model a few tokens too long, and the model cut its tail off silently.
        """
        prefix = self.passage_prefix
        if not prefix:
            return self.count_text_tokens(texts)
        return self.count_text_tokens([prefix + t for t in texts])

    @abstractmethod
    def count_text_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens each text takes in the model exactly as given (special tokens included,
        no prefix)."""

    @abstractmethod
    def token_spans(self, text: str) -> list[tuple[int, int]]:
        """Character span of each content token of ``text`` (no special tokens)."""

    @property
    def special_tokens(self) -> int:
        """Tokens the model reads around a passage's own: those it adds around every text
        (:attr:`text_special_tokens`) and the passage prefix's (:attr:`prefix_tokens`).
        The chunker takes a text's content tokens as its :meth:`count_tokens` less these,
        and its budget as ``max_tokens`` less these."""
        return self.text_special_tokens + self.prefix_tokens

    @property
    def text_special_tokens(self) -> int:
        """Tokens the model adds around every text (e.g. [CLS] and [SEP])."""
        return 2

    @property
    def prefix_tokens(self) -> int:
        """Tokens the passage prefix adds to a passage (0 without one); counted once."""
        prefix = self.passage_prefix
        if not prefix:
            return 0
        cached: tuple[str, int] | None = self.__dict__.get("_prefix_tokens")
        if cached is None or cached[0] != prefix:
            n = self.count_text_tokens([prefix])[0] - self.text_special_tokens
            cached = (prefix, max(0, n))
            self.__dict__["_prefix_tokens"] = cached
        return cached[1]

    @property
    def encodes_on_cpu(self) -> bool:
        """Whether encoding runs on this machine's CPU cores (a local model without a GPU):
        then it competes with parsing for them. A remote endpoint or a GPU leaves the cores
        to parsing and writing (``ingest.prepare.pool_size``)."""
        return True

    @property
    def overlaps_rounds(self) -> bool:
        """Whether an ingest gains from encoding two rounds at once: true of a remote
        endpoint taking several requests (its round trip is waiting, not work); a model
        computing here would only split its own cores or GPU between them."""
        return False

    def token_encodings(
        self, texts: Sequence[str], indexed: Sequence[bool] | None = None
    ) -> list[TokenEncoding] | None:
        """Count, spans and words of each text in one tokenizer pass (see
        :class:`TokenEncoding`), or None when the model cannot say (then the chunker
        calls :meth:`count_tokens` and :meth:`token_spans`). ``indexed`` says which
        texts the caller may read the :attr:`TokenEncoding.index` of (None: any): it
        only decides what is prepared for that, never what any encoding says.

        Counts are :meth:`count_tokens`'s (the passage prefix's tokens added); spans and
        words are the text's own."""
        encs = self.text_token_encodings(texts, indexed)
        extra = self.prefix_tokens
        if encs is not None and extra:
            for enc in encs:
                enc.count += extra
        return encs

    def text_token_encodings(
        self, texts: Sequence[str], indexed: Sequence[bool] | None = None
    ) -> list[TokenEncoding] | None:
        """:meth:`token_encodings` of the texts exactly as given (no prefix)."""
        return None

    @property
    def joins_add_up(self) -> bool:
        """Whether texts joined by whitespace take exactly the sum of their tokens
        (:func:`tokenizer_joins_add_up`); False unless a model knows it."""
        return False


class TokenIndex:
    """Where a text's content tokens lie, asked token by token or by position: what the
    chunker reads to split a block. This one holds the spans and word numbers as lists;
    :class:`ragstore.embedding.wordpieces.WordIndex` answers from a plain text's words
    without making the lists."""

    __slots__ = ("_spans", "_starts", "_words")

    def __init__(self, spans: list[tuple[int, int]], words: list[int] | None = None) -> None:
        self._spans = spans
        self._words = words
        self._starts: list[int] | None = None

    def __len__(self) -> int:
        return len(self._spans)

    def start(self, i: int) -> int:
        return self._spans[i][0]

    def end(self, i: int) -> int:
        return self._spans[i][1]

    def before(self, pos: int) -> int:
        """Tokens that start before ``pos``, found by bisection (starts in order)."""
        if self._starts is None:
            self._starts = [a for a, _ in self._spans]
        return bisect_left(self._starts, pos)

    def advance(self, t: int, pos: int) -> int:
        """The first token from ``t`` on that starts at or after ``pos``."""
        spans = self._spans
        while t < len(spans) and spans[t][0] < pos:
            t += 1
        return t

    def joined(self, i: int) -> bool:
        """Whether token ``i`` continues the word of token ``i - 1``."""
        assert self._words is not None, "a TokenIndex made without word numbers"
        return self._words[i - 1] == self._words[i]


class WordIndex(TokenIndex):
    """The :class:`TokenIndex` of a text, from its words' starts and pieces (see
    :meth:`WordPieces.located`): a token is found by bisection over the words' token
    counts, so a block is split without a tuple made per token. Words follow one another
    and their pieces cover them in order (``located`` makes sure of it where a segment's
    words come from the tokenizer), so token starts strictly increase."""

    __slots__ = ("_cum", "_pieces", "_word_starts")

    def __init__(self, word_starts: list[int], pieces: list[tuple[int, ...]]) -> None:
        self._word_starts = word_starts
        self._pieces = pieces
        self._cum = list(accumulate(map(len, pieces), initial=0))  # tokens before word k

    def __len__(self) -> int:
        return self._cum[-1]

    def _locate(self, i: int) -> tuple[int, int]:
        """(word, piece in the word) of token ``i``."""
        k = bisect_right(self._cum, i) - 1
        return k, i - self._cum[k]

    def start(self, i: int) -> int:
        k, j = self._locate(i)
        return self._word_starts[k] + (self._pieces[k][j - 1] if j else 0)

    def end(self, i: int) -> int:
        k, j = self._locate(i)
        return self._word_starts[k] + self._pieces[k][j]

    def before(self, pos: int) -> int:
        k = bisect_left(self._word_starts, pos)  # words that start before pos
        if k == 0:
            return 0
        ends = self._pieces[k - 1]  # its first piece starts before pos, the others at ends
        return (
            self._cum[k - 1]
            + 1
            + bisect_left(ends, pos - self._word_starts[k - 1], 0, len(ends) - 1)
        )

    def advance(self, t: int, pos: int) -> int:
        return max(t, self.before(pos))

    def joined(self, i: int) -> bool:
        return self._locate(i)[1] > 0


class TokenEncoding:
    """One text as the model's tokenizer reads it: ``count`` tokens with the special ones
    (what :meth:`Embedder.count_tokens` says), and the character span and word number of
    each content token (what :meth:`Embedder.token_spans` says, and which pre-tokenized
    word it belongs to), so that the chunker tokenizes a block once and knows both.

    ``detail`` computes spans and words on first use instead, and ``index`` the
    :class:`TokenIndex` the chunker reads (it reads them only for blocks it splits; see
    :mod:`ragstore.embedding.wordpieces`)."""

    __slots__ = ("_detail", "_index", "_make_index", "_spans", "_words", "count")

    def __init__(
        self,
        count: int,
        spans: list[tuple[int, int]] | None = None,
        words: list[int] | None = None,
        *,
        detail: Callable[[], tuple[list[tuple[int, int]], list[int]]] | None = None,
        index: Callable[[], TokenIndex] | None = None,
    ) -> None:
        if (spans is None or words is None) and detail is None:
            raise ValueError("a TokenEncoding needs its spans and words, or a detail to make them")
        self.count = count
        self._spans = spans
        self._words = words
        self._detail = detail
        self._make_index = index
        self._index: TokenIndex | None = None

    def _load(self) -> tuple[list[tuple[int, int]], list[int]]:
        if self._spans is None or self._words is None:
            assert self._detail is not None
            self._spans, self._words = self._detail()
        return self._spans, self._words

    @property
    def spans(self) -> list[tuple[int, int]]:
        return self._load()[0]

    @property
    def words(self) -> list[int]:
        return self._load()[1]

    @property
    def index(self) -> TokenIndex:
        if self._index is None:
            if self._make_index is not None:
                self._index = self._make_index()
            else:
                self._index = TokenIndex(*self._load())
        return self._index


def _backend(tokenizer: Any) -> Any:
    """The Rust tokenizer behind a Hugging Face fast tokenizer, with truncation and
    padding off (its ``tokenizer.json`` may set both; they would cut or pad counts)."""
    backend: Any = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not hasattr(backend, "encode_batch_fast"):
        return None
    if backend.truncation is not None:
        backend.no_truncation()
    if backend.padding is not None:
        backend.no_padding()
    return backend


def tokenizer_counts(tokenizer: Any, texts: Sequence[str]) -> list[int]:
    """Tokens of each text under a Hugging Face tokenizer, special tokens included.

    The Rust tokenizer straight, without offsets: the same ids as the wrapper's call at
    about half its cost, which is most of the chunker's time.
    """
    if not texts:
        return []
    backend = _backend(tokenizer)
    if backend is not None:
        out = [0] * len(texts)
        pieces, plain, units, other = _split_plain(backend, texts)
        if pieces is not None:
            for i, n in zip(plain, pieces.counts_of(units), strict=True):
                out[i] = n
        if other:
            cut = backend.encode_batch_fast([texts[i] for i in other], add_special_tokens=True)
            for i, e in zip(other, cut, strict=True):
                out[i] = len(e.ids)
        return out
    enc = tokenizer(
        list(texts),
        add_special_tokens=True,
        truncation=False,
        return_attention_mask=False,
        return_token_type_ids=False,
        verbose=False,
    )
    return [len(ids) for ids in enc["input_ids"]]


def tokenizer_encodings(
    tokenizer: Any, texts: Sequence[str], indexed: Sequence[bool] | None = None
) -> list[TokenEncoding] | None:
    """Each text's :class:`TokenEncoding` from one batch call to the Rust tokenizer, or
    None for a tokenizer without one (the chunker then counts and spans apart).
    ``indexed``: see :meth:`Embedder.token_encodings`."""
    backend = _backend(tokenizer)
    if backend is None:
        return None
    out: list[TokenEncoding | None] = [None] * len(texts)
    located: list[list[str] | None] = []
    pieces, plain, units, other = _split_plain(backend, texts, located, indexed)
    if pieces is not None:
        for i, n, parts in zip(plain, pieces.counts_of(units), located, strict=True):
            out[i] = TokenEncoding(
                n,
                detail=partial(pieces.spans, texts[i]),
                index=partial(_plain_index, pieces, texts[i], parts),
            )
    if other:
        cut = backend.encode_batch([texts[i] for i in other], add_special_tokens=True)
        for i, e in zip(other, cut, strict=True):
            keep = [k for k, special in enumerate(e.special_tokens_mask) if not special]
            offsets, words = e.offsets, e.word_ids
            out[i] = TokenEncoding(
                len(e.ids),
                [offsets[k] for k in keep],
                [-1 if words[k] is None else words[k] for k in keep],
            )
    return [e for e in out if e is not None]


def _plain_index(pieces: WordPieces, text: str, parts: list[str] | None = None) -> TokenIndex:
    """A :class:`WordIndex` of ``text`` where its tokens follow one another word by word
    (:meth:`WordPieces.located`), else the lists; ``parts``: its :meth:`WordPieces.parts`
    if known."""
    located = pieces.located(text, parts)
    if located is None:
        return TokenIndex(*pieces.spans(text))
    return WordIndex(*located)


def _split_plain(
    backend: Any,
    texts: Sequence[str],
    located: list[list[str] | None] | None = None,
    indexed: Sequence[bool] | None = None,
) -> tuple[WordPieces | None, list[int], list[list[str]], list[int]]:
    """The word cache of a BERT-style tokenizer (:mod:`ragstore.embedding.wordpieces`),
    the positions of the texts it counts and their units, and the positions of those left
    to the tokenizer itself. A list given as ``located`` gets each counted text's
    :meth:`WordPieces.parts` (None where its units are not all words), for the chunker's
    index of a block it splits: the split costs a fifth more than the units alone, the
    index made without it three times that. So only the texts ``indexed`` says (None:
    all) are split: the chunker indexes only prose blocks too long to fit, and on the
    Node.js API pages (code, lists, short paragraphs) splitting every text cost 4%."""
    pieces = word_pieces(backend)
    if pieces is None:
        return None, [], [], list(range(len(texts)))
    if located is None:  # counts alone: every text's words at once, if all are plain
        every = pieces.units_of(texts)
        if every is not None:
            return pieces, list(range(len(texts))), every, []
    plain: list[int] = []
    units: list[list[str]] = []
    other: list[int] = []
    for i, t in enumerate(texts):
        wanted = located is not None and (indexed is None or indexed[i])
        parts = pieces.parts(t) if wanted else None
        us = parts[1::2] if parts is not None else pieces.units(t)
        if us is None:
            other.append(i)
            continue
        plain.append(i)
        units.append(us)
        if located is not None:
            located.append(parts)
    return pieces, plain, units, other


def tokenizer_joins_add_up(tokenizer: Any) -> bool:
    """Whether texts joined by whitespace take exactly the sum of their tokens.

    True for BERT's tokenizer (its normalizer works per character, its pre-tokenizer
    splits at every whitespace and punctuation mark and WordPiece reads one word at a
    time), so the chunker sums the counts it has instead of tokenizing each merged chunk
    again. A tokenizer that marks word starts (SentencePiece, byte-level BPE) or
    normalizes across characters may not, and is counted.
    """
    backend: Any = getattr(tokenizer, "backend_tokenizer", None)
    return backend is not None and reads_words_alone(backend)


def tokenizer_spans(tokenizer: Any, text: str) -> list[tuple[int, int]]:
    """Character spans of ``text``'s tokens under a Hugging Face tokenizer (no special
    tokens, no truncation): what chunk splitting cuts at, for local and HTTP models alike."""
    enc = tokenizer(
        text,
        add_special_tokens=False,
        truncation=False,
        return_offsets_mapping=True,
        return_attention_mask=False,
        return_token_type_ids=False,
        verbose=False,
    )
    return [(int(a), int(b)) for a, b in enc["offset_mapping"]]
