"""A rollback to a model that no longer loads is refused, with nothing changed.

It switched without loading it: "rolled 'gone' back ...", exit 0, and every search and
ingest of the collection then failed with ``model_not_found``. The CLI and the HTTP route
run the same rollback; both are checked here, on one collection, in file order."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

from ragstore.config import Settings
from ragstore.embedding.paths import minilm_dir
from ragstore.embedding.registry import TRUNCATED_MODEL, resolve_spec
from ragstore.ingest import ingest_paths
from ragstore.modelops import add_local_model, migrate, model_status
from ragstore.runtime import Runtime
from ragstore.search import search
from tests.api.conftest import running_server, with_
from tests.conftest import run_cli
from tests.models.corpus import write_corpus

COLL = "gone"


@pytest.fixture(scope="module")
def weights(rt: Runtime, settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``COLL`` ingested with a copy of MiniLM pinned from its own folder, migrated to the
    256-dimension model, and then the copy's folder moved away: the collection's previous
    model no longer loads. Returns where the folder went."""
    root = tmp_path_factory.mktemp("gone")
    mini = root / "mini"
    shutil.copytree(minilm_dir(), mini)
    add_local_model(rt, str(mini), name="minicopy")
    with Runtime(with_(settings, model="minicopy")) as first:
        report = ingest_paths(first, [write_corpus(root / "docs", docs=3, paragraphs=2)], COLL)
    assert report.count("added") == 3 and not report.failed
    assert migrate(rt, COLL, TRUNCATED_MODEL).switched
    moved = root / "mini.gone"
    mini.rename(moved)
    return moved


def _statuses(rt: Runtime) -> list[tuple[str, str]]:
    return sorted((r["model"], r["status"]) for r in model_status(rt, COLL))


def test_the_cli_refuses_a_rollback_to_a_model_whose_weights_are_gone(
    rt: Runtime,
    weights: Path,
    cli_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    active = resolve_spec(TRUNCATED_MODEL).key
    before = _statuses(rt)
    capsys.readouterr()
    assert run_cli("models", "rollback", "-c", COLL) == 78
    err = capsys.readouterr().err
    assert "error[model_not_found]" in err and "Traceback" not in err, err
    assert "does not exist" in err and "minicopy@" in err, err
    assert f"nothing was changed and the collection still uses {active}" in " ".join(err.split())
    assert f"ragstore models migrate -c {COLL} --to MODEL" in " ".join(err.split()), err
    assert rt.collection(COLL).model.key == active
    assert _statuses(rt) == before
    assert search(rt, "tomatoes", collection=COLL, k=1), "the active space still answers"


def test_the_api_refuses_it_with_a_problem_and_the_rollback_works_once_restored(
    rt: Runtime, weights: Path, settings: Settings
) -> None:
    active = resolve_spec(TRUNCATED_MODEL).key
    before = _statuses(rt)
    with running_server(with_(settings, auth="off")) as url:
        r = httpx.post(f"{url}/v1/collections/{COLL}/model/rollback", timeout=60)
        assert r.status_code == 404, r.text
        assert r.headers["content-type"] == "application/problem+json"
        problem = r.json()
        assert problem["code"] == "model_not_found"
        assert "nothing was changed" in problem["detail"], problem
        assert rt.collection(COLL).model.key == active
        assert _statuses(rt) == before
        weights.rename(weights.with_name("mini"))  # restored: the rollback goes through
        r = httpx.post(f"{url}/v1/collections/{COLL}/model/rollback", timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["previous"] == active
    assert rt.collection(COLL).model.name == "minicopy"
