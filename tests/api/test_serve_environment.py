"""``ragstore serve`` run in a process that lives on: the environment it leaves behind."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping

import httpx
import pytest

from ragstore.cli import main

# what serve passes on to its workers through the environment
PASSED = (
    "RAGSTORE_API_HOST",
    "RAGSTORE_API_PORT",
    "RAGSTORE_API_WORKERS",
    "RAGSTORE_SERVE_PARENT",
)


def _ours(env: Mapping[str, str]) -> dict[str, str]:
    """ragstore's variables (a library's own, such as torch's, set on import, aside)."""
    return {k: v for k, v in env.items() if k.startswith(("RAGSTORE_", "PROMETHEUS_"))}


def _run_cli(argv: list[str]) -> int:
    try:
        main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_in_process(argv: list[str], up: Callable[[], bool], while_up: Callable[[], None]) -> int:
    """Run ``ragstore serve`` (``argv``) in this process's main thread; once ``up()`` says
    it answers, run ``while_up()`` on another thread, then stop it with SIGTERM (its own
    handler, installed while it serves, stops it gracefully). A serve that ends before it
    is up is not signalled. Returns its exit status; what ``while_up`` raised is raised."""
    failures: list[BaseException] = []
    done = threading.Event()

    def stop_once_up() -> None:
        deadline = time.monotonic() + 120
        while not up():
            if done.wait(0.1) or time.monotonic() > deadline:
                return
        try:
            while_up()
        except BaseException as exc:
            failures.append(exc)
        os.kill(os.getpid(), signal.SIGTERM)  # serve stops gracefully, exit 0

    stopper = threading.Thread(target=stop_once_up, daemon=True)
    stopper.start()
    try:
        code = _run_cli(argv)
    finally:
        done.set()
    stopper.join(timeout=30)
    if failures:
        raise failures[0]
    return code


@pytest.fixture()
def clean_env(cli_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The CLI's environment with none of serve's variables but one set by the user
    (``RAGSTORE_API_WORKERS``), which must keep its value."""
    for name in PASSED:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RAGSTORE_API_WORKERS", "1")
    return _ours(os.environ)


def test_serve_that_stopped_leaves_the_environment_as_it_found_it(
    clean_env: dict[str, str],
) -> None:
    """serve set its bound address, host, port, workers and its own pid in the environment
    for its workers and never took them back: a long-lived process (a test run, a program
    embedding the CLI) that built ``create_app()`` later judged keys and the loopback guard
    from an address nothing listened on any more."""
    port = _free_port()
    seen: dict[str, str | None] = {}

    def up() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
        except httpx.TransportError:
            return False

    def while_up() -> None:
        seen.update({name: os.environ.get(name) for name in (*PASSED, "RAGSTORE_API_BOUND")})

    code = serve_in_process(["serve", "--host", "127.0.0.1", "--port", str(port)], up, while_up)
    assert code == 0
    # while it served, its workers' variables were there
    assert seen["RAGSTORE_API_HOST"] == "127.0.0.1"
    # not the addresses it bound: no setting (the app's factory takes them)
    assert seen["RAGSTORE_API_BOUND"] is None
    assert seen["RAGSTORE_SERVE_PARENT"] == str(os.getpid())
    assert _ours(os.environ) == clean_env


def test_serve_that_refused_to_start_leaves_the_environment_as_it_found_it(
    clean_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A serve refused once its sockets were bound (keys off on every interface) left
    its variables set too."""
    monkeypatch.setenv("RAGSTORE_AUTH", "off")
    expected = _ours(os.environ)
    assert _run_cli(["serve", "--host", "0.0.0.0", "--port", "0"]) == 78
    assert _ours(os.environ) == expected
