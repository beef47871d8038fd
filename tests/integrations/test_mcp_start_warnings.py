"""What ``ragstore mcp`` says at start about who can reach it and who can read its key."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from ragstore.cli.mcp_cmd import keyless_warning

COMMAND = [sys.executable, "-c", "from ragstore.cli import main; main()", "mcp"]
KEY = "rsk_0123456789ab_" + "x" * 43  # no such key: the server stops at its check


def _env(cli_env: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGSTORE_")}
    env.update(cli_env, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return env


def test_a_key_on_the_command_line_is_warned_about_and_the_environment_named(
    cli_env: dict[str, str],
) -> None:
    """``ragstore mcp --api-key KEY`` put the key in /proc/PID/cmdline, readable by every
    local user, without a word (the docs showed it so). The command warns once on stderr
    and names RAGSTORE_API_KEY; the key from the environment is not warned about."""
    env = _env(cli_env)
    given = subprocess.run(
        [*COMMAND, "--api-key", KEY],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    warned = [line for line in given.stderr.splitlines() if "--api-key on the command" in line]
    assert len(warned) == 1, given.stderr
    assert "every user of this machine" in warned[0]
    assert "set RAGSTORE_API_KEY in its environment instead" in warned[0]
    assert KEY not in given.stderr
    assert given.returncode != 0  # the unknown key is refused either way

    from_env = subprocess.run(
        COMMAND,
        env={**env, "RAGSTORE_API_KEY": KEY},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert from_env.returncode == given.returncode, from_env.stderr
    assert "--api-key on the command" not in from_env.stderr, from_env.stderr


def test_keyless_mcp_on_loopback_tcp_warns_that_every_local_user_reaches_it(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    """``ragstore serve`` with keys off warns that every user of the machine has admin
    rights over loopback TCP; keyless ``ragstore mcp --transport http`` on 127.0.0.1 (the
    same exposure: a port has no owner) started without a word."""
    log = tmp_path / "mcp.log"
    args = ["--transport", "http", "--host", "127.0.0.1", "--port", "0"]
    with log.open("wb") as out:
        served = subprocess.Popen([*COMMAND, *args], env=_env(cli_env), stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 120
        while "without an API key" not in log.read_text():
            assert served.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
    finally:
        served.send_signal(signal.SIGTERM)
        served.wait(timeout=60)
    (line,) = [x for x in log.read_text().splitlines() if "without an API key" in x]
    assert line.startswith("WARNING "), line
    assert "MCP is served without an API key: every request to 127.0.0.1:" in line
    assert "from any user of this machine" in line
    assert "--host unix:PATH" in line and "RAGSTORE_API_KEY" in line


def test_keyless_mcp_on_its_own_unix_socket_is_not_warned_about(tmp_path: Path) -> None:
    """Its owner-only socket admits this user alone: nothing to warn of."""
    from ragstore.http.listen import bind_unix

    sock = bind_unix(str(tmp_path / "mcp.sock"))
    try:
        assert keyless_warning([sock]) is None
    finally:
        sock.close()
    with socket.create_server(("127.0.0.1", 0)) as tcp:
        warning = keyless_warning([tcp])
        assert warning is not None
        assert f"127.0.0.1:{tcp.getsockname()[1]}" in warning
