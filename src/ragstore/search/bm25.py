"""BM25 full-text ranking inside PostgreSQL: query parsing and the ranked-list SQL.

Candidates come from the chunks' ``tsvector`` through its GIN index; the ranking is
Okapi BM25 (Lucene's idf, ``ln(1 + (N - df + 0.5) / (df + 0.5))``) over the term
statistics that revision 0004's triggers keep exact as chunks come and go
(``bm25_terms``, ``bm25_collection_stats``, ``chunks.tsv_length``). PostgreSQL's own
``ts_rank_cd`` ignores how rare a term is and scores about 0.57 nDCG@10 on SciFact
against BM25's 0.68, which is why it is not used.

Query syntax is ``websearch_to_tsquery``'s: ``"quoted phrases"``, ``or``, ``-excluded``.
One difference on purpose: plain words are alternatives, not all required, because
BM25 is a ranking of partial matches (a 15-word question matching 12 of its words in a
passage is a hit, not a miss); chunks matching more and rarer words rank higher. Quoted
phrases are required, ``-word`` and ``-"phrase"`` exclude. With ``plain`` syntax (what
``ragstore eval`` uses: benchmark queries are prose, where ``or`` and a leading ``-`` are
words, not operators) every word is an alternative and nothing is required or excluded.

Scores count query-term frequency: a lexeme the query holds twice weighs twice (as in
Lucene's merged clauses, Anserini and bm25s). On CISI's paragraph-long queries that and
the plain syntax lift full-text nDCG@10 from 0.291 to the level of bm25s (see
docs/benchmarks.md). The candidates are the chunks holding any query lexeme
(:func:`ragstore_any_lexeme` in revision 0006), the set BM25 ranks.

Searches go to ``ragstore_bm25_topk`` (revision 0009: MaxScore over revision 0006's
impact-ordered postings; revision 0014: the cut budget on the longest lists, contenders
scored best bound first), the same exact scores without scoring every match. A filter
and a query's exclusions travel with the call as one SQL condition over ``c`` and ``d``
(rendered with client-side literal quoting), checked on the chunks the pruning reads: an
exclusion is a condition on which chunks may rank, not a term to score. A required phrase
instead picks the candidates: the chunks holding it, all scored. Only ``exact`` (eval's
reference lists) scores every match of every word here; until 2026-12-03 phrases and
exclusions did too, 1-5 s a hybrid search at a million chunks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from psycopg import sql

# Lucene's and Elasticsearch's defaults. Anserini's 0.9/0.4 (the defaults until revision 0006)
# score the same on SciFact full-text (0.688 vs 0.691 nDCG@10) but lose on the long CISI
# queries (0.377 vs 0.405) and on Cranfield (0.324 vs 0.334). Revision 0006's
# ragstore_bm25_params holds the same two numbers: postings are written with them.
DEFAULT_K1 = 1.2
DEFAULT_B = 0.75
DEFAULT_TS_CONFIG = "english"

_TOKEN = re.compile(r'(-?)"([^"]*)"?|(\S+)')


@dataclass(frozen=True)
class FullTextQuery:
    """A user query split into the parts the SQL needs (each a websearch_to_tsquery text)."""

    match: str  # any of the positive words or phrases: the candidate set
    required: str | None  # quoted phrases that must appear
    excluded: str | None  # words or phrases that must not appear
    terms: str  # every positive word, for the lexemes whose BM25 weights are summed

    @property
    def empty(self) -> bool:
        return not self.match.strip()


def _quote(text: str, phrase: bool) -> str:
    return f'"{text}"' if phrase else text


def parse_query(text: str, *, plain: bool = False) -> FullTextQuery:
    """Split ``text`` into alternatives, required phrases and exclusions (pure).

    ``plain`` takes every word as an alternative: no phrases, ``or`` or exclusions.
    """
    if plain:
        words = " ".join(text.replace('"', " ").split())
        return FullTextQuery(match=words, required=None, excluded=None, terms=words)
    positive: list[tuple[str, bool]] = []
    excluded: list[str] = []
    required: list[str] = []
    previous_phrase = False
    pending_or = False
    for m in _TOKEN.finditer(text):
        negated, phrase_text, word = m.group(1), m.group(2), m.group(3)
        if phrase_text is not None:
            body = " ".join(phrase_text.replace('"', " ").split())
            if not body:
                continue
            if negated:
                excluded.append(_quote(body, True))
            else:
                positive.append((body, True))
                if required and previous_phrase and pending_or:
                    required.append("or")
                required.append(_quote(body, True))
                previous_phrase = True
            pending_or = False
            continue
        assert word is not None
        word = word.replace('"', "")
        if word.lower() == "or":
            pending_or = True
            continue
        if word.startswith("-") and len(word) > 1:
            excluded.append(word[1:])
        elif word.strip("-"):
            positive.append((word, False))
            previous_phrase = False
        pending_or = False
    match = " or ".join(_quote(t, p) for t, p in positive)
    terms = " ".join(t for t, _ in positive)
    # phrases keep the user's own ``or`` between them, with websearch_to_tsquery's precedence
    return FullTextQuery(
        match=match,
        required=" ".join(required) or None,
        excluded=" or ".join(excluded) or None,
        terms=terms,
    )


def syntax_tests(q: FullTextQuery) -> list[sql.Composable]:
    """The query's required-phrase and exclusion tests over ``c`` (the chunk), with the
    placeholders ``cfg``, ``required`` and ``excluded``: what the exhaustive list checks
    inline, the pruned top k takes in its ``cond`` text, and a hybrid search's vector list
    keeps (search/service.py)."""
    tests: list[sql.Composable] = []
    if q.required:
        # a phrase of stop words alone ("to be or not to be") has no lexeme to require: it
        # constrains nothing, as in websearch_to_tsquery itself and as such an exclusion
        # excludes nothing (``@@`` an empty query is false, which made every such search
        # return nothing). ``numnode`` folds to a constant in each execution's plan.
        tests.append(sql.SQL("(c.tsv @@ {r} OR numnode({r}) = 0)").format(r=_REQUIRED))
    if q.excluded:
        tests.append(
            sql.SQL("NOT (c.tsv @@ websearch_to_tsquery(%(cfg)s::regconfig, %(excluded)s))")
        )
    return tests


_REQUIRED = sql.SQL("websearch_to_tsquery(%(cfg)s::regconfig, %(required)s)")
_ANY_LEXEME = sql.SQL("c.tsv @@ (SELECT ragstore_any_lexeme(array_agg(lexeme)) FROM qt)")

# a quoted word of letters and digits: one lexeme, as PostgreSQL's parser cuts it
_ONE_WORD = re.compile(r'"[^\W_]+"')
# Below this many chunks holding the rarest required word, scoring each of them beats the
# pruned top k (at 100k chunks: 15 against 30 ms for a word in 245 chunks, about even at
# 1,500, 120 against 20 ms at 12,500): a rare word may pass fewer chunks than k, and the
# top k then falls back to scoring every match of every word.
REQUIRED_SCORE_ALL_DF = 2_000


def _required_common() -> sql.Composable:
    """Whether each required word is in at least :data:`REQUIRED_SCORE_ALL_DF` chunks (a
    word no chunk holds, or a stop word, counts as rare: nothing to prune)."""
    return sql.SQL(
        "(SELECT coalesce(min(coalesce(t.df, 0)), 0) FROM unnest(tsvector_to_array("
        "to_tsvector(%(cfg)s::regconfig, %(required)s))) w(lexeme) LEFT JOIN bm25_terms t"
        " ON t.collection_id = %(cid)s AND t.lexeme = w.lexeme) >= {}"
    ).format(sql.Literal(REQUIRED_SCORE_ALL_DF))


def uses_topk(q: FullTextQuery, exact: bool) -> bool:
    """Whether :func:`ranked_list_sql` reads the pruned top k: unless ``exact`` or the
    query requires a phrase of several words.

    Then a filtered search, or one with exclusions or required words, needs the
    ``ftcond`` parameter: the filter and the syntax tests as SQL text. A phrase of several
    words narrows the candidates to the chunks holding it, which the GIN index finds
    directly: those are scored, no pruning (each word may be common and the phrase rare,
    and the top k would read deep before enough chunks pass). A required single word is
    also one of the query's terms, so the best chunks hold it: where each such word is
    common, the pruned top k checks them on the chunks it reads (scoring every chunk
    holding ``"cells"`` took 40x a plain query at 100k chunks), and where one is rare its
    chunks are scored, the statement choosing by the words' document frequencies
    (:data:`REQUIRED_SCORE_ALL_DF`).
    """
    if exact:
        return False
    return not q.required or all(_ONE_WORD.fullmatch(w) for w in q.required.split(" "))


def ranked_list_sql(
    q: FullTextQuery,
    condition: sql.Composable,
    with_documents: bool,
    exact: bool = False,
    *,
    tail: bool = False,
) -> sql.Composable:
    """A ``SELECT chunk_id, raw`` of the best ``%(n)s`` chunks by BM25, best first.

    Placeholders: ``cid`` (collection id), ``cfg`` (text search configuration),
    ``required``/``excluded``/``terms`` (from :class:`FullTextQuery`), ``k1``, ``b`` and
    ``n``. ``condition`` is a compiled filter over ``c`` and ``d``; ``with_documents``
    says it is not plain TRUE.

    Unless ``exact`` or a required phrase this is one call of ``ragstore_bm25_topk``
    (pruned, exact scores; a filter and exclusions go as the text parameter ``ftcond``,
    see :func:`uses_topk`); with ``exact`` and no filter, phrase or exclusion, one of
    ``ragstore_bm25_exhaustive``; otherwise the SQL below scores every candidate (with a
    required phrase, the chunks holding it). With ``tail`` the
    pruned list goes on past its exact top ``%(n)s`` to ``%(tail)s`` rows: the best of the
    other chunks it scored exactly on the way (revision 0017), which may miss some of the
    exact ranks there; without pruning the list is exact and ``%(tail)s`` deep. A tailed
    list is approximate in one more way (revision 0019, ``floors_exact => false``): where
    the trimmed postings of common words alone could reach the k-th score, it plans over
    the stored postings, where an exact list scores the chunks holding enough of the
    query's terms to reach it (revision 0020; a tenth of a second to a second at a million
    chunks, where scoring every match took seconds).
    Otherwise every candidate is scored here, with the same arithmetic: term frequencies
    are read from its tsvector after ``setweight`` marks the query's lexemes and
    ``ts_filter`` drops the rest (both in C), about 3.5x faster than unnesting every
    lexeme of every candidate. (Chunk tsvectors come from ``to_tsvector``, so every
    lexeme starts at weight D.)
    """
    n = sql.SQL("greatest(%(n)s, %(tail)s)" if tail else "%(n)s")
    if uses_topk(q, exact):
        conditioned = with_documents or q.required or q.excluded
        pruned = sql.SQL(
            "SELECT chunk_id, raw FROM ragstore_bm25_topk(%(cid)s, %(cfg)s::regconfig,"
            " %(terms)s, %(n)s, %(k1)s::float8, %(b)s::float8{cond}{tail})"
        ).format(
            cond=sql.SQL(", cond => %(ftcond)s" if conditioned else ""),
            tail=sql.SQL(", tail => %(tail)s, floors_exact => false" if tail else ""),
        )
        if not q.required:
            return pruned
        # required words: the pruned top k when each is common, else every chunk holding
        # them scored (few); the choice is a one-time filter, only one branch runs
        return sql.SQL(
            "SELECT chunk_id, raw FROM ({pruned}) p WHERE {gate}"
            " UNION ALL SELECT chunk_id, raw FROM ({every}) e WHERE NOT {gate}"
        ).format(
            pruned=pruned,
            every=scored_list_sql(q, condition, with_documents, n),
            gate=_required_common(),
        )
    if not (with_documents or q.required or q.excluded):
        return sql.SQL(
            "SELECT chunk_id, raw FROM ragstore_bm25_exhaustive(%(cid)s, %(cfg)s::regconfig,"
            " %(terms)s, {n}, %(k1)s::float8, %(b)s::float8)"
        ).format(n=n)
    return scored_list_sql(q, condition, with_documents, n)


def scored_list_sql(
    q: FullTextQuery,
    condition: sql.Composable,
    with_documents: bool,
    n: sql.Composable = sql.SQL("%(n)s"),
) -> sql.Composable:
    """Every candidate scored (see :func:`ranked_list_sql`), the best ``n`` first: also
    what a selective filter's few chunks are ranked by (search/service.py)."""
    extra = [sql.SQL(" AND {}").format(t) for t in syntax_tests(q)]
    join_docs = sql.SQL(" JOIN documents d ON d.id = c.document_id" if with_documents else "")
    return sql.SQL(
        "WITH s AS (SELECT chunks AS n, greatest(tokens::float8 / greatest(chunks, 1), 1.0)"
        "   AS avgdl FROM bm25_collection_stats WHERE collection_id = %(cid)s),"
        " qt AS (SELECT t.lexeme, (q.qtf * ln(1.0 + (s.n - t.df + 0.5) / (t.df + 0.5)))::float8"
        "   AS w"
        "   FROM (SELECT u.lexeme, greatest(cardinality(u.positions), 1) AS qtf"
        "   FROM unnest(to_tsvector(%(cfg)s::regconfig, %(terms)s)) u) q"
        "   JOIN bm25_terms t ON t.collection_id = %(cid)s AND t.lexeme = q.lexeme"
        "   CROSS JOIN s)"
        " SELECT c.id AS chunk_id, sum(qt.w * u.tf * (%(k1)s::float8 + 1.0) / (u.tf"
        "   + %(k1)s::float8 * (1.0 - %(b)s::float8 + %(b)s::float8 * c.tsv_length"
        '   / s.avgdl)) ORDER BY u.lexeme COLLATE "C") AS raw'
        " FROM chunks c{join_docs} CROSS JOIN s"
        " CROSS JOIN LATERAL (SELECT x.lexeme, greatest(cardinality(x.positions), 1) AS tf"
        "   FROM unnest(ts_filter(setweight(c.tsv, 'A', (SELECT array_agg(lexeme) FROM qt)),"
        "   '{{a}}')) x) u"
        " JOIN qt ON qt.lexeme = u.lexeme"
        " WHERE c.collection_id = %(cid)s AND c.chunk_type <> 'heading'"
        "{any_lexeme}{extra} AND {condition}"
        " GROUP BY c.id ORDER BY raw DESC, c.id LIMIT {n}"
    ).format(
        join_docs=join_docs,
        # a chunk holding a required phrase holds one of the query's lexemes: the phrase
        # alone picks the candidates (one GIN probe of its words, not of every word's);
        # only where it has no lexeme (stop words alone: it requires nothing, see
        # syntax_tests) do the query's lexemes, as without a phrase (``numnode`` folds to
        # a constant in each execution's plan, which keeps one of the two probes)
        any_lexeme=sql.SQL(" AND (numnode({r}) > 0 OR {a})").format(r=_REQUIRED, a=_ANY_LEXEME)
        if q.required
        else sql.SQL(" AND {}").format(_ANY_LEXEME),
        extra=sql.Composed(extra),
        condition=condition,
        n=n,
    )
