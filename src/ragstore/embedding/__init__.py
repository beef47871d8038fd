"""Embedding providers behind one small base class, and the registry of pinned specs."""

from ragstore.embedding.base import Embedder
from ragstore.embedding.registry import load_embedder

__all__ = ["Embedder", "load_embedder"]
