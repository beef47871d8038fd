"""The server's redirects over real HTTP on loopback: a ``Location`` is a path, never the
scheme and host a request's ``Host`` header claimed."""

from __future__ import annotations

import httpx
import pytest

from ragstore.config import Settings
from tests.api.conftest import running_server, with_

# a name the loopback guard lets through (RFC 6761: *.localhost is this machine), not the
# address the client used
OTHER_HOST = {"Host": "elsewhere.localhost:9"}


@pytest.mark.parametrize(
    ("asked", "location"),
    [
        ("/v1/collections/", "/v1/collections"),
        ("/v1/collections/?limit=5", "/v1/collections?limit=5"),
        ("/ui/collections/", "/ui/collections"),
        ("/ui/", "/ui/collections"),  # the console's own redirect
    ],
)
def test_a_redirect_names_a_path_whatever_the_host_header(
    open_url: str, asked: str, location: str
) -> None:
    # Starlette's trailing-slash redirect answered "Location: http://elsewhere.localhost:9
    # /v1/collections": wherever the Host header said, not where the client had asked
    r = httpx.get(open_url + asked, headers=OTHER_HOST)
    assert r.status_code in (303, 307)
    assert r.headers["location"] == location
    # followed, the client stays on the server it asked (the redirect is resolved
    # against its own URL)
    assert httpx.get(open_url + asked, follow_redirects=True).status_code == 200


def test_a_path_no_route_takes_either_way_is_still_a_404(open_url: str) -> None:
    r = httpx.get(f"{open_url}/v1/nothing-here/", headers=OTHER_HOST)
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
    assert "location" not in r.headers


def test_behind_a_root_path_the_redirect_keeps_the_prefix(settings: Settings) -> None:
    # a proxy serving the API under /rag forwards /rag/v1/collections/ without the prefix;
    # the client must be sent back under it
    with running_server(with_(settings, auth="off"), root_path="/rag") as url:
        r = httpx.get(f"{url}/v1/collections/", headers=OTHER_HOST)
    assert r.status_code == 307 and r.headers["location"] == "/rag/v1/collections"
