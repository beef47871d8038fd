"""Side-by-side benchmark: ragstore vs LangChain PGVector, LlamaIndex PGVectorStore, Chroma.

One runner (:mod:`bench.peers.runner`) starts the embedded PostgreSQL, prepares one corpus,
and spawns one worker process per system and round, so each system's peak memory is its
own and the rounds can be interleaved on a shared machine. Peers are installed only in a
separate bench environment (``.venv-bench``); ragstore runs from the project environment.
"""
