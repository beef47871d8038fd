"""``python -m bench.peers [--quick]``: ragstore side by side with its peers, one run.

Run from the project environment (``.venv``); the peers run in ``.venv-bench``:

    python3 -m venv .venv-bench && . .venv-bench/bin/activate
    pip install torch==2.13.0 && pip install -r bench/peers/requirements.txt
    deactivate && . .venv/bin/activate && python -m bench.peers --quick

``--encoder instant`` (one instant embedding server for every system: the write path
where the model is not the limit) and ``--encoder cached`` (the real MiniLM vectors of the
chunk texts computed once and looked up; queries encoded by the real model) are described
in :mod:`bench.peers.encoders`. The peers' Python is ``--peer-python``, else
``$PEERS_PYTHON``, else ``.venv-bench/bin/python`` in the repository.

Writes the raw figures to ``bench/results/peers-<quick|full|subset>[-<encoder>].json`` and
prints the Markdown table that goes into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from bench.peers.encoders import ENCODERS
from bench.peers.report import markdown
from bench.peers.runner import INDEXED_PEERS, QUICK_DOCS, REPO, SYSTEMS, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.peers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a {QUICK_DOCS}-document SciFact subset (every judged doc kept), "
        "under 10 minutes on 2 cores",
    )
    parser.add_argument("--docs", type=int, default=None, help="documents to keep (subset)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (default 2)")
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="torch intra-op threads per worker, the same for all "
        "(default: the CPU count; workers run one at a time)",
    )
    parser.add_argument(
        "--latency-queries",
        type=int,
        default=100,
        help="queries timed for latency and concurrency (default 100)",
    )
    parser.add_argument(
        "--max-queries",
        type=int,
        default=None,
        help="cap the test queries (nDCG uses all that are kept)",
    )
    parser.add_argument(
        "--peer-python",
        default=os.environ.get("PEERS_PYTHON") or str(REPO / ".venv-bench" / "bin" / "python"),
        help="python of the environment holding the peers (default: $PEERS_PYTHON, "
        "else .venv-bench/bin/python)",
    )
    parser.add_argument(
        "--encoder",
        choices=ENCODERS,
        default="model",
        help="model: every system runs MiniLM (default); instant: the instant embedding "
        "server for all; cached: MiniLM vectors of the chunks precomputed, queries by the model",
    )
    parser.add_argument(
        "--delay-ms",
        type=float,
        default=0.0,
        help="with --encoder instant: hold each answer this long, as a remote embedding "
        "API's round trip would (each system sends its requests as its embedding interface "
        "does; ragstore's HTTP model keeps 4 in flight)",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="encode batch (default 64)")
    parser.add_argument(
        "--systems",
        default=",".join(SYSTEMS),
        help="comma-separated; ragstore is always included; also "
        f"{', '.join(INDEXED_PEERS)} (two peers with the HNSW index their documentation "
        "shows, asked for by name)",
    )
    args = parser.parse_args(argv)
    if not Path(args.peer_python).exists():
        print(
            f"error: no peer environment at {args.peer_python}; create it as the module "
            "docstring shows, or pass --peer-python",
            file=sys.stderr,
        )
        return 2
    if args.delay_ms and args.encoder != "instant":
        parser.error("--delay-ms holds the instant server's answers: give --encoder instant")
    if args.delay_ms < 0:
        parser.error(f"--delay-ms {args.delay_ms:g}: give 0 or more milliseconds")
    systems = tuple(dict.fromkeys(["ragstore", *args.systems.split(",")]))
    unknown = [s for s in systems if s not in (*SYSTEMS, *INDEXED_PEERS)]
    if unknown:
        parser.error(
            f"--systems: unknown {', '.join(unknown)}; choose from "
            f"{', '.join((*SYSTEMS, *INDEXED_PEERS))}"
        )
    report = run(
        quick=args.quick,
        docs=args.docs,
        rounds=args.rounds,
        peer_python=args.peer_python,
        systems=systems,
        threads=args.threads,
        latency_queries=args.latency_queries,
        max_queries=args.max_queries,
        encoder=args.encoder,
        batch_size=args.batch_size,
        delay_ms=args.delay_ms,
    )
    kind = "quick" if args.quick else ("subset" if args.docs or args.max_queries else "full")
    if args.encoder != "model":
        kind += f"-{args.encoder}"
    if args.delay_ms:
        kind += f"-{args.delay_ms:g}ms"
    out = REPO / "bench" / "results" / f"peers-{kind}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1), encoding="utf-8")
    command = " ".join(["python -m bench.peers", *(sys.argv[1:] if argv is None else argv)])
    print(markdown(report, command))
    print(f"\nraw figures: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
