"""Pins are enforced at load: swapped weights, another dimension or another probe are refused."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from ragstore.db import repository
from ragstore.embedding.paths import minilm_dir
from ragstore.embedding.registry import (
    DEFAULT_MODEL,
    TRUNCATED_MODEL,
    load_embedder,
    resolve_spec,
)
from ragstore.embedding.validation import PROBE_TEXT
from ragstore.errors import ModelMismatchError, ModelNotFoundError
from ragstore.ingest import ingest_paths
from ragstore.runtime import Runtime
from ragstore.search import search
from tests.conftest import run_cli

WRONG = "sha256:" + "0" * 64


def test_the_two_builtin_models_are_different_pinned_spaces() -> None:
    full, short = resolve_spec(DEFAULT_MODEL), resolve_spec(TRUNCATED_MODEL)
    assert (full.dimension, short.dimension) == (384, 256)
    assert full.checksum == short.checksum, "same weights file"
    assert full.key != short.key
    a = load_embedder(full).embed([PROBE_TEXT])[0]
    b = load_embedder(short).embed([PROBE_TEXT])[0]
    assert b.shape == (256,) and abs(float(np.linalg.norm(b)) - 1.0) < 1e-5
    assert not np.allclose(a[:256], b), "re-normalised after truncation: other vectors"


def test_a_collection_pinned_to_other_weights_refuses_search_and_ingest(
    rt: Runtime, tmp_path: Path, cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    spec = replace(resolve_spec(DEFAULT_MODEL), name="minilm-tampered", checksum=WRONG)
    with rt.db.connection() as conn:
        repository.create_collection(conn, "tampered", spec)
    expected = (
        f"model minilm-tampered@{spec.revision}: weights checksum differs from the pin: "
        f"pinned {WRONG}, found {resolve_spec(DEFAULT_MODEL).checksum} in {minilm_dir()}. "
        "The stored vectors were made by the pinned weights; restore those weights, or pin "
        f"the new ones as a new revision (`ragstore models add {minilm_dir()} --name "
        "minilm-tampered --revision NEW`) and re-embed with `ragstore models migrate -c "
        "COLLECTION --to minilm-tampered@NEW`"
    )
    with pytest.raises(ModelMismatchError) as err:
        search(rt, "roses", collection="tampered")
    assert str(err.value) == expected
    (tmp_path / "a.md").write_text("Roses in winter.\n")
    with pytest.raises(ModelMismatchError):
        ingest_paths(rt, [tmp_path], "tampered")
    # a setup to fix (EX_CONFIG, as model_not_found), not a bug of ragstore: it exited 70
    assert run_cli("search", "roses", "-c", "tampered") == 78
    assert capsys.readouterr().err.startswith("error[model_mismatch]: model minilm-tampered@")


def test_a_pin_of_another_dimension_is_refused() -> None:
    spec = replace(resolve_spec(DEFAULT_MODEL), name="minilm-768", dimension=768)
    with pytest.raises(ModelMismatchError) as err:
        load_embedder(spec)
    assert str(err.value).startswith(
        f"model minilm-768@{spec.revision}: expected 768 dimensions, got 384 from the loaded "
        "model; if the change is intended, pin the model as a new revision"
    )


def test_a_pinned_probe_vector_that_differs_is_refused() -> None:
    base = resolve_spec(DEFAULT_MODEL)
    good = load_embedder(base).embed([PROBE_TEXT])[0]
    ok = replace(base, name="minilm-probed", options={**base.options, "probe": good.tolist()})
    load_embedder(ok)  # the same model answers the same probe
    bad = replace(ok, name="minilm-other", options={**base.options, "probe": (-good).tolist()})
    with pytest.raises(
        ModelMismatchError,
        match=r"the probe vector differs from the pin "
        r"\(cosine similarity -1.0000, at least 0.999 expected\)",
    ):
        load_embedder(bad)


def test_models_add_pins_a_local_directory_with_checksum_and_probe(
    rt: Runtime, cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(minilm_dir())
    assert (
        run_cli(
            "models",
            "add",
            path,
            "--name",
            "minilm-local",
            "--revision",
            "r1",
            "--truncate-dim",
            "128",
            "--json",
        )
        == 0
    )
    pinned = json.loads(capsys.readouterr().out)
    assert (pinned["key"], pinned["dimension"], pinned["max_tokens"]) == (
        "minilm-local@r1",
        128,
        256,
    )
    assert pinned["checksum"] == resolve_spec(DEFAULT_MODEL).checksum and pinned["probe_pinned"]
    # a pin never changes: the same name and revision with another dimension is refused
    assert run_cli("models", "add", path, "--name", "minilm-local", "--revision", "r1") == 65
    assert "error[conflict]: model minilm-local@r1 is already pinned" in capsys.readouterr().err
    assert run_cli("models", "show", "minilm-local", "--json") == 0
    assert json.loads(capsys.readouterr().out)["options"]["truncate_dim"] == 128
    assert run_cli("models", "add", "/nonexistent/model", "--name", "x") == 78
    assert "is not a directory" in capsys.readouterr().err


def test_unknown_models_are_named_with_what_exists(rt: Runtime) -> None:
    with pytest.raises(
        ModelNotFoundError, match="built-in: all-MiniLM-L6-v2, all-MiniLM-L6-v2-256d"
    ):
        resolve_spec("bge-small")


def test_models_add_of_damaged_weights_is_one_clear_error(
    rt: Runtime, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A model folder whose weights are cut short (a copy or download that stopped) or not
    weights at all crashed `ragstore models add` with a traceback (safetensors'
    SafetensorError, pickle's UnpicklingError: neither OSError nor ValueError); it is the
    one model error naming the folder, and nothing is pinned."""
    import shutil

    source = minilm_dir()
    cut = tmp_path / "cut"
    shutil.copytree(source, cut)
    (cut / "model.safetensors").write_bytes((source / "model.safetensors").read_bytes()[:100_000])
    junk = tmp_path / "junk"
    shutil.copytree(source, junk)
    (junk / "model.safetensors").unlink()
    (junk / "pytorch_model.bin").write_bytes(b"not a pickle of weights" * 200)
    for folder in (cut, junk):
        assert run_cli("models", "add", str(folder), "--name", f"m-{folder.name}") == 70
        err = capsys.readouterr().err
        assert f"error[model_error]: could not load model m-{folder.name}" in err, err
        assert str(folder) in err and "Traceback" not in err
        assert run_cli("models", "show", f"m-{folder.name}") != 0
    capsys.readouterr()


def test_pinning_a_pinned_key_again_with_other_settings_is_refused(rt: Runtime) -> None:
    """A second `models add` of the same weights under the same name (the revision comes
    from the checksum) with another token budget, distance or passage prefix answered
    "pinned" and returned the first pin unchanged: a collection migrated to it was cut and
    embedded without what the user had just asked for. It is refused now, naming what
    differs; the same settings again are still answered with the pin as it is."""
    from ragstore.errors import ConflictError
    from ragstore.modelops import add_local_model

    path = str(minilm_dir())
    first = add_local_model(rt, path, name="minilm-again")
    assert add_local_model(rt, path, name="minilm-again").spec == first.spec
    for change, named in (
        ({"max_tokens": 96}, "max_tokens"),
        ({"distance": "l2"}, "distance"),
        ({"passage_prefix": "passage: "}, "passage_prefix"),
        ({"normalize": False}, "normalize"),
    ):
        with pytest.raises(ConflictError, match=f"already pinned.*{named}"):
            add_local_model(rt, path, name="minilm-again", **change)  # type: ignore[arg-type]
    shown = add_local_model(rt, path, name="minilm-again").spec
    assert (shown.max_tokens, shown.distance, shown.normalize) == (256, "cosine", True)
    assert "passage_prefix" not in shown.options


def test_weights_moved_elsewhere_are_found_again_by_pinning_them_from_there(
    rt: Runtime, tmp_path: Path
) -> None:
    """A local model whose folder moved is refused with "pin the model again from where it
    now lives with `ragstore models add`"; doing so answered "pinned" with the pin
    unchanged, still naming the old folder, so every load went on failing. The same
    weights (same checksum, same settings) pinned from the new folder point the pin there."""
    import shutil

    from ragstore.modelops import add_local_model, find_model

    first = tmp_path / "first"
    shutil.copytree(minilm_dir(), first)
    pinned = add_local_model(rt, str(first), name="minilm-moved")
    moved = tmp_path / "moved"
    first.rename(moved)
    with pytest.raises(ModelNotFoundError, match="pin the model again from where it now lives"):
        load_embedder(find_model(rt, "minilm-moved").spec)
    again = add_local_model(rt, str(moved), name="minilm-moved")
    assert again.spec == pinned.spec and again.spec.options["path"] == str(moved.resolve())
    spec = find_model(rt, "minilm-moved").spec
    assert spec.options["path"] == str(moved.resolve())
    assert spec.options["probe"] == pinned.spec.options["probe"]
    assert load_embedder(spec).embed([PROBE_TEXT]).shape == (1, 384)


def test_a_truncate_dim_longer_than_the_model_makes_is_refused(
    rt: Runtime, cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """``--truncate-dim 1000`` of a 384-dimension model kept all 384 and pinned them under
    a key of their own recording a truncation that never happened; it is one input error
    naming the model's dimension now, and nothing is pinned."""
    path = str(minilm_dir())
    assert run_cli("models", "add", path, "--name", "minilm-wide", "--truncate-dim", "1000") == 65
    err = capsys.readouterr().err
    assert "--truncate-dim 1000 is more than the 384 dimensions model 'minilm-wide'" in err, err
    assert "nothing was pinned" in err and "Traceback" not in err
    assert run_cli("models", "show", "minilm-wide") != 0
    capsys.readouterr()
    from ragstore.errors import InputError
    from ragstore.modelops import add_local_model

    with pytest.raises(InputError, match="must be a positive number"):
        add_local_model(rt, path, name="minilm-negative", truncate_dim=-4)
    # the model's own length is still accepted
    assert add_local_model(rt, path, name="minilm-384", truncate_dim=384).spec.dimension == 384


def test_an_http_pin_is_compared_on_every_option_but_tuning_it_never_recorded() -> None:
    """Re-adding an HTTP model compares every option (a new base_url is refused), but a
    pin made before an option existed (``concurrency``) is not refused for its default."""
    from ragstore.modelops.specs import _settings_differ
    from ragstore.models import ModelSpec

    opts = {"base_url": "http://127.0.0.1:1/v1", "model": "m", "api_key_env": "K", "probe": [1]}
    old = ModelSpec("openai", "m", "r", 384, "cosine", True, 512, "probe-sha256:x", opts)
    again = replace(old, options={**opts, "concurrency": 4, "probe": [2]})
    assert _settings_differ(old, again) == ""
    moved = replace(again, options={**again.options, "base_url": "http://h:2/v1"})
    assert _settings_differ(old, moved) == ("base_url 'http://127.0.0.1:1/v1' -> 'http://h:2/v1'")
    tokenized = replace(again, options={**again.options, "tokenizer": "/t"})
    assert _settings_differ(old, tokenized) == "tokenizer None -> '/t'"
    tuned = replace(old, options={**opts, "concurrency": 4})
    assert _settings_differ(tuned, replace(tuned, options={**opts, "concurrency": 8}))
