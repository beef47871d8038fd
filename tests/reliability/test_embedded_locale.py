"""A new embedded server is made in the C locale, whatever the environment names.

The package's initdb takes its locale from ``LANG``/``LC_ALL``: one naming a locale the
machine lacks (``en_US.UTF-8`` in a slim container) failed initdb, so the embedded server
never started; one that exists gave the database its collation, and string ranges in
filters then compared by language rules instead of byte order."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ragstore.db.embedded import initdb_environment

PROBE = """
import sys
from pathlib import Path
import psycopg
from ragstore.db import embedded
uri = embedded.start(Path(sys.argv[1]))
with psycopg.connect(uri) as conn:
    row = conn.execute(
        "SELECT datcollate, datctype, 'docs/api/z' < 'docs/api0' FROM pg_database"
        " WHERE datname = current_database()"
    ).fetchone()
print(*row)
"""


def test_a_locale_the_machine_lacks_does_not_stop_the_embedded_server(tmp_path: Path) -> None:
    env = {**os.environ, "LANG": "xx_YY.UTF-8", "LC_ALL": "xx_YY.UTF-8"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(tmp_path / "data")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    collate, ctype, folder_below = done.stdout.split()
    # byte order: a folder's files sort below the name one past its slash
    assert (collate, folder_below) == ("C", "True")
    assert ctype in ("C.UTF-8", "C")  # the machine's locale named was not there


def test_initdb_keeps_the_locales_the_machine_has_and_collates_in_byte_order() -> None:
    chosen = initdb_environment({"LANG": "C.UTF-8", "LC_MESSAGES": "xx_YY.UTF-8"})
    assert chosen["LC_COLLATE"] == "C"
    assert chosen["LC_MESSAGES"] == "C"  # missing here: C
    assert chosen["LC_NUMERIC"] == "C.UTF-8"  # from LANG, which the machine has
    assert initdb_environment({"LC_ALL": "xx_YY.UTF-8"})["LC_CTYPE"] in ("C.UTF-8", "C")
