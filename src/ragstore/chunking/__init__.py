"""Chunking: parsed blocks in, typed chunks that fit the embedding model out."""

from ragstore.chunking.chunker import TokenCounter, chunk_document, content_hash

__all__ = ["TokenCounter", "chunk_document", "content_hash"]
