"""docs/monitoring/metrics.md describes every metric ragstore exports."""

from __future__ import annotations

import re
from pathlib import Path

from ragstore.observability import metrics

ROOT = Path(__file__).resolve().parents[2]


def test_every_defined_metric_is_documented() -> None:
    doc = (ROOT / "docs" / "monitoring" / "metrics.md").read_text()
    names = {m.name for m in metrics.REGISTRY.collect()}
    source = Path(metrics.__file__).read_text()
    names |= set(re.findall(r'GaugeMetricFamily\(\s*"(ragstore_[a-z_]+)"', source))
    assert len(names) >= 25
    for name in names:
        # counters are collected under their base name; the doc shows the _total series
        shown = name + "_total" if f"`{name}_total`" in doc else name
        assert f"`{shown}`" in doc, f"{name} is not in docs/monitoring/metrics.md"
