"""The HTTP client stays thin: importing it, and the checks its calls run before sending,
load none of the server's heavy dependencies.

The client's calls check their input with ragstore.validation (ids, limits, metadata),
which imported NumPy at module level: the first call that named an id or a limit loaded
NumPy (~90 ms) into a program that never handles an array.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from ragstore.errors import InputError
from ragstore.validation import FLOAT32_MAX, check_value, float32_array

# third-party packages a thin client has no use for, and the ragstore layers that load them
HEAVY = (
    "numpy",
    "torch",
    "sentence_transformers",
    "transformers",
    "psycopg",
    "psycopg_pool",
    "sqlalchemy",
    "pgvector",
    "fastapi",
    "starlette",
    "uvicorn",
    "pydantic",
    "pydantic_settings",
    "procrastinate",
    "pypdf",
    "docx",
    "pptx",
    "bs4",
    "lxml",
    "markdown_it",
    "yaml",
    "ragstore.config",
    "ragstore.db",
    "ragstore.embedding",
    "ragstore.parsing",
    "ragstore.store",
)

_PROGRAM = """
import json, sys
HEAVY = json.loads(sys.argv[1])
import ragstore.client
after_import = sorted(m for m in HEAVY if m in sys.modules)
from ragstore.client import Client
from ragstore.errors import InputError
# each call is refused by the client's own checks, before anything is sent (nothing
# listens on port 9): ids (id_list), a page's limit (page_limit), metadata (check_value),
# a search's context (check_context)
calls = (
    lambda c: c.get_texts("c", "abc"),
    lambda c: c.list_documents("c", limit=0),
    lambda c: c.add_texts("c", ["a text"], [{"score": float("nan")}]),
    lambda c: c.list_documents("c", metadata={"k": {1, 2}}),
    lambda c: c.search("c", "q", context="lots"),
)
refused = []
with Client("http://127.0.0.1:9", retries=0) as client:
    for call in calls:
        try:
            call(client)
        except InputError as exc:
            refused.append(str(exc))
print(json.dumps({
    "after_import": after_import,
    "after_calls": sorted(m for m in HEAVY if m in sys.modules),
    "validation": "ragstore.validation" in sys.modules,
    "refused": refused,
}))
"""


def test_the_client_and_its_checks_load_nothing_heavy() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _PROGRAM, json.dumps(HEAVY)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    found = json.loads(out)
    assert found["after_import"] == []
    # the checks ran (five refusals, each naming what is wrong) and loaded nothing heavy
    assert found["validation"] is True
    assert len(found["refused"]) == 5, found["refused"]
    assert "ids is one string" in found["refused"][0]
    assert found["refused"][4].startswith("context 'lots' is invalid"), found["refused"]
    assert found["after_calls"] == []


def test_the_checks_still_know_numpy_where_it_is_loaded() -> None:
    # validation no longer imports NumPy: its float32 bound is written out, and a NumPy
    # scalar is recognised through sys.modules (it can exist only once NumPy is loaded)
    assert float(np.finfo(np.float32).max) == FLOAT32_MAX
    with pytest.raises(InputError, match=r"an int64 .* give a Python number or bool"):
        check_value({"a": np.int64(3)}, "metadata", json_only=True)
    with pytest.raises(InputError, match="out-of-range"):
        float32_array([FLOAT32_MAX * 10], "vector")
    assert float32_array([1, 2.5], "vector").dtype == np.float32
