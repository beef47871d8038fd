"""Chunking: parsed blocks in, typed chunks that fit the embedding model out."""

from ragstore.chunking.chunker import (
    CHUNKING_VERSION,
    TokenCounter,
    chunk_document,
    content_hash,
    document_hash,
)

__all__ = ["CHUNKING_VERSION", "TokenCounter", "chunk_document", "content_hash", "document_hash"]
