"""The one corpus every system gets: SciFact documents, ragstore's chunks, the test queries.

Each document becomes one ``<doc id>.txt`` file holding ``title`` and ``text`` on two lines
of one paragraph (ragstore ingests the folder). The same files are parsed and chunked once,
up front, with ragstore's own parser and chunker, and the peers are handed exactly those
chunk texts (the text the model reads), so every system embeds the same strings. A chunk
is named ``<doc id>:<ordinal>`` in every system.

The quick subset keeps every document judged relevant for a test query, then fills up to
the requested size with a seeded sample of the others, so all 300 test queries stay usable.
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass
from pathlib import Path

SCIFACT = Path(__file__).resolve().parents[3] / "shared" / "data" / "scifact"


@dataclass
class Corpus:
    docs: dict[str, str]  # doc id -> file text
    queries: dict[str, str]  # query id -> text
    qrels: dict[str, dict[str, int]]  # query id -> doc id -> gain


def load_scifact(
    data_dir: Path = SCIFACT,
    *,
    max_docs: int | None = None,
    max_queries: int | None = None,
    seed: int = 13,
) -> Corpus:
    """SciFact (test judgments), optionally cut to ``max_docs`` keeping every judged doc.

    ``max_queries`` keeps the first test queries (file order of the judgments) and so only
    their judged documents are guaranteed a place in the subset.
    """
    qrels: dict[str, dict[str, int]] = {}
    with (data_dir / "qrels" / "test.tsv").open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            if int(row["score"]) > 0:
                qrels.setdefault(row["query-id"], {})[row["corpus-id"]] = int(row["score"])
    if max_queries is not None:
        qrels = dict(list(qrels.items())[:max_queries])
    docs: dict[str, str] = {}
    with (data_dir / "corpus.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            d = json.loads(line)
            title = " ".join(d.get("title", "").split())
            text = " ".join(d.get("text", "").split())
            docs[str(d["_id"])] = f"{title}\n{text}" if title else text
    if max_docs is not None and max_docs < len(docs):
        judged = sorted({doc for rel in qrels.values() for doc in rel} & docs.keys())
        others = sorted(docs.keys() - set(judged))
        random.Random(seed).shuffle(others)
        keep = set(judged) | set(others[: max(0, max_docs - len(judged))])
        docs = {k: v for k, v in docs.items() if k in keep}
    queries: dict[str, str] = {}
    with (data_dir / "queries.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            q = json.loads(line)
            qid = str(q["_id"])
            if qid in qrels and qrels[qid].keys() & docs.keys():
                queries[qid] = q["text"]
    qrels = {
        q: {d: g for d, g in rel.items() if d in docs} for q, rel in qrels.items() if q in queries
    }
    return Corpus(docs, queries, qrels)


def write_files(corpus: Corpus, folder: Path) -> None:
    """One ``<doc id>.txt`` per document, the folder ragstore ingests."""
    folder.mkdir(parents=True, exist_ok=True)
    for doc_id, text in corpus.docs.items():
        (folder / f"{doc_id}.txt").write_text(text, encoding="utf-8")


def chunk_files(folder: Path) -> list[dict[str, str]]:
    """ragstore's chunks of every file: ``{"key": "<doc>:<ordinal>", "doc": ..., "text": ...}``.

    ``text`` is :attr:`Chunk.embed_text`, the string ragstore's model reads, so the peers
    embed exactly what ragstore embeds. Runs in the project environment (needs ragstore).
    """
    from ragstore.chunking import chunk_document
    from ragstore.embedding.registry import load_embedder, resolve_spec
    from ragstore.parsing import detect_format, parse_bytes

    spec = resolve_spec("all-MiniLM-L6-v2")
    embedder = load_embedder(spec, device="cpu")
    out: list[dict[str, str]] = []
    for path in sorted(folder.glob("*.txt")):
        data = path.read_bytes()
        parsed = parse_bytes(data, str(path), detect_format(str(path), data))
        for chunk in chunk_document(parsed, embedder, spec.max_tokens):
            if chunk.embeddable:
                out.append(
                    {
                        "key": f"{path.stem}:{chunk.ordinal}",
                        "doc": path.stem,
                        "text": chunk.embed_text,
                    }
                )
    return out
