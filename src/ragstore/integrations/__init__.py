"""Integrations with other frameworks, each behind its own extra so the core stays lean:

- ``ragstore.integrations.langchain``: a LangChain ``VectorStore`` (``pip install
  ragstore[langchain]``);
- ``ragstore.integrations.llamaindex``: a LlamaIndex vector store (``ragstore[llamaindex]``);
- ``ragstore mcp``: tools for LLM agents over the Model Context Protocol (``ragstore[mcp]``).

Each works on a :class:`ragstore.Store` (in-process) or a :class:`ragstore.Client` (a
server): both have the same verbs, described by :class:`Backend`.
"""
