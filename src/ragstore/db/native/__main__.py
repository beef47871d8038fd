"""``python -m ragstore.db.native --prebuild DIR``: compile the native BM25 kernel ahead of
time (the Docker image's build stage), for ``RAGSTORE_NATIVE_BM25_PREBUILT=DIR``."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from ragstore.db.native import NativeUnavailable, prebuild


def main(argv: list[str] | None = None) -> int:
    """Build into ``--prebuild DIR`` and print the library's path; 1 when it cannot."""
    parser = argparse.ArgumentParser(
        prog="python -m ragstore.db.native",
        description="Compile the native BM25 kernel for the embedded server ahead of time.",
    )
    parser.add_argument("--prebuild", type=Path, required=True, metavar="DIR")
    parser.add_argument("--cc", default="cc", help="the C compiler (default: cc)")
    args = parser.parse_args(argv)
    try:
        lib = prebuild(args.prebuild, cc=args.cc)
    except (NativeUnavailable, OSError, subprocess.SubprocessError) as exc:
        print(f"error: native BM25 kernel not built: {exc}", file=sys.stderr)
        return 1
    print(lib)
    return 0


if __name__ == "__main__":
    sys.exit(main())
