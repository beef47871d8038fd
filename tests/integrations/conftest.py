"""The integration suites: one Store per module on its fresh database. (The unmarked
async tests of langchain-tests run under pytest-asyncio's auto mode, set in pyproject.)"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ragstore import Store
from ragstore.config import Settings


@pytest.fixture(scope="module")
def store(settings: Settings) -> Iterator[Store]:
    with Store(settings=settings) as s:
        yield s
