"""The Markdown table for docs/benchmarks.md, from one run's report."""

from __future__ import annotations

import math
from typing import Any

ROWS: tuple[tuple[str, str, str], ...] = (
    # (key, label, format)
    ("chunks_per_s", "ingest, chunks/s", "{:.1f}"),
    ("non_encode_share", "ingest time not spent encoding", "{:.0%}"),
    ("reingest_s", "re-ingest unchanged, s", "{:.2f}"),
    ("p50_ms", "search p50, ms (1 client)", "{:.1f}"),
    ("p99_ms", "search p99, ms (1 client)", "{:.1f}"),
    ("qps_1", "queries/s, 1 client", "{:.1f}"),
    ("qps_8", "queries/s, 8 clients", "{:.1f}"),
    ("recall_at_10", "recall@10 vs exact", "{:.3f}"),
    ("ndcg_at_10", "nDCG@10, own default search", "{:.3f}"),
    ("disk_bytes_per_chunk", "disk bytes/chunk", "{:,.0f}"),
    ("peak_rss_mib", "peak RSS of the process, MiB", "{:,.0f}"),
)


def _cell(value: float | None, fmt: str, ratio: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    text = fmt.format(value)
    if ratio is not None and not math.isnan(ratio):
        text += f" ({ratio:.2f}×)"
    return text


def markdown(report: dict[str, Any], command: str) -> str:
    s = report["summary"]
    systems = [k for k in s if k != "encode"]
    m = report["machine"]
    lines = [
        f"### Run of {report['date']}: {report['docs']:,} documents",
        "",
        f"Command: `{command}` ({report['wall_s'] / 60:.1f} min wall). Machine: "
        f"{m['nproc']} CPUs ({m['cpu']}), {m['ram_gib']} GiB RAM, Python {m['python']}; CPU "
        "shared with other work, hence the paired ratios. Corpus: SciFact, "
        f"{report['docs']:,} documents → {report['chunks']:,} chunks, {report['queries']} test "
        f"queries; {report['rounds']} interleaved rounds, encode batch {report['batch_size']}, "
        f"{report['clients']} concurrent clients, {report['threads']} torch thread(s) per "
        f"process, latency over {report['latency_queries']} queries. Cells: median over "
        "rounds (ratio to ragstore, median of per-round ratios).",
        "",
        "| figure | " + " | ".join(systems) + " |",
        "|---|" + "---|" * len(systems),
    ]
    for key, label, fmt in ROWS:
        cells = []
        for name in systems:
            med = s[name]["median"].get(key)
            ratio = None if name == "ragstore" else s[name]["ratio_to_ragstore"].get(key)
            cells.append(_cell(med, fmt, ratio))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    rs = s["ragstore"]["median"]
    if "hybrid_ndcg_at_10" in rs:
        lines.append(f"| nDCG@10, ragstore hybrid | {rs['hybrid_ndcg_at_10']:.3f} |"
                     + " – |" * (len(systems) - 1))
        lines.append(f"| search p50, ms, ragstore hybrid | {rs['hybrid_p50_ms']:.1f} |"
                     + " – |" * (len(systems) - 1))
    enc = s["encode"]["median"]
    lines += [
        "",
        f"Pure model encode of the same {report['chunks']:,} chunk texts (same model, batch "
        f"{report['batch_size']}): {enc['encode_s']:.1f} s = {enc['chunks_per_s']:.1f} chunks/s.",
        "",
        "Versions: " + "; ".join(
            f"{env}: " + ", ".join(f"{k} {v}" for k, v in sorted(vs.items()))
            for env, vs in report["versions"].items()),
    ]
    return "\n".join(lines)
