"""An HTTP model's endpoint URL that no request can be sent to.

``ragstore models add http://[::1/v1 --provider openai`` (or a port ``80a``) ended in
httpx's ``InvalidURL`` traceback, exit 1; ``http:///v1`` (no host) failed each request as a
transport error, was retried six times (17 s) and then blamed on rate limits. The URL is
read once, before anything is asked of it: one input error, exit 65, nothing pinned."""

from __future__ import annotations

import pytest

from ragstore.embedding.http import HttpEmbedder
from ragstore.errors import EmbeddingProviderError, ModelError
from ragstore.modelops import list_models
from ragstore.models import ModelSpec
from ragstore.runtime import Runtime
from tests.conftest import run_cli

BAD_URLS = {
    "http://[::1/v1": "Invalid port: ':1'",
    "http://localhost:80a/v1": "Invalid port: '80a'",
    "http:///v1": "no host in it",
}


def _spec(base_url: str) -> ModelSpec:
    options = {"base_url": base_url, "model": "m", "api_key_env": "NO_SUCH_KEY_VARIABLE"}
    return ModelSpec("openai", "m", "r", 4, "cosine", True, 512, "probe-sha256:x", options)


@pytest.mark.parametrize("url", list(BAD_URLS))
def test_models_add_refuses_an_endpoint_url_no_request_can_go_to(
    rt: Runtime, cli_env: dict[str, str], capsys: pytest.CaptureFixture[str], url: str
) -> None:
    capsys.readouterr()
    assert run_cli("models", "add", url, "--provider", "openai", "--name", "badurl") == 65
    err = capsys.readouterr().err
    assert err.strip() == (
        f"error[invalid_input]: {url!r} is not a usable endpoint URL ({BAD_URLS[url]}); "
        "give it as http://HOST:PORT/v1; nothing was pinned"
    ), err
    assert [m for m in list_models(rt) if m.spec.name == "badurl"] == []


@pytest.mark.parametrize("url", list(BAD_URLS))
def test_a_pin_holding_such_a_url_is_refused_when_loaded(url: str) -> None:
    """A pin stored with one (before ``models add`` read the URL) fails at load, saying
    why, not at its first request."""
    with pytest.raises(ModelError, match=r"options\.base_url must be an http\(s\) URL") as err:
        HttpEmbedder(_spec(url))
    assert BAD_URLS[url] in str(err.value)


@pytest.mark.parametrize("url", ["http:///embeddings", "http://localhost:80a/embeddings"])
def test_a_request_to_a_url_httpx_cannot_send_to_is_not_retried(url: str) -> None:
    """Reached past the load's check (a URL read otherwise there), it is one error at once,
    not six attempts and advice about rate limits."""
    slept: list[float] = []
    embedder = HttpEmbedder(_spec("http://127.0.0.1:9/v1"), sleep=slept.append)
    embedder.url = embedder.shown_url = url
    try:
        with pytest.raises(EmbeddingProviderError, match="not retried") as err:
            embedder.embed_texts(["tomatoes need sun"])
    finally:
        embedder.close()
    assert (embedder.requests, embedder.retries, slept) == (1, 0, [])
    assert "rate limit" not in str(err.value)
