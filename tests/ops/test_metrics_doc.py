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


def _exported() -> dict[str, set[str]]:
    """Every series name ragstore exports (a counter's ``_total``, a histogram's
    ``_bucket``...) with the label names it carries."""
    from prometheus_client.metrics import MetricWrapperBase

    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_sum", "_count"),
        "gauge": ("",),
    }
    out: dict[str, set[str]] = {}
    for obj in vars(metrics).values():
        if isinstance(obj, MetricWrapperBase):
            extra = {"le"} if obj._type == "histogram" else set()
            for suffix in suffixes[obj._type]:
                out[obj._name + suffix] = set(obj._labelnames) | extra
    source = Path(metrics.__file__).read_text()
    for match in re.finditer(r'GaugeMetricFamily\(\s*"(ragstore_[a-z_]+)"', source):
        depth, end = 1, match.end()
        while depth:  # to the call's closing parenthesis (help texts hold some)
            depth += {"(": 1, ")": -1}.get(source[end], 0)
            end += 1
        labels = re.search(r"labels=\[([^\]]*)\]", source[match.end() : end])
        out[match.group(1)] = set(re.findall(r'"(\w+)"', labels.group(1))) if labels else set()
    return out


def test_every_alert_rule_names_a_metric_and_labels_ragstore_exports() -> None:
    """A rule on a renamed or misspelt metric or label matches nothing and never fires,
    and promtool passes it (its unit tests feed the same wrong name): each is checked."""
    exported = _exported()
    assert {"ragstore_http_requests_total", "ragstore_db_up"} <= set(exported)
    assert exported["ragstore_jobs"] == {"status"}
    for path in ("alerts.yml", "alerts_test.yml"):
        text = (ROOT / "deploy" / "prometheus" / path).read_text()
        named = set(re.findall(r"\b(ragstore_[a-z_]+)\b", text))
        assert named, path
        unknown = sorted(named - set(exported))
        assert not unknown, f"{path} names metrics ragstore does not export: {unknown}"
        for name, selector in re.findall(r"\b(ragstore_[a-z_]+)\{([^}]*)\}", text):
            labels = set(re.findall(r"(\w+)\s*[=!]", selector)) - {"instance", "job"}
            assert labels <= exported[name], f"{path}: {name} has no label {labels}"
