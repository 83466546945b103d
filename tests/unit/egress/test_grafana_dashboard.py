"""The Grafana dashboard (``ansible/files/grafana/havre-egress.json``, issue #19): every PromQL
expression names only series the egress service exports, and every exported family is on it.

The expression reader is checked first on expressions with a typo and with PromQL's other
words (functions, ``by``, label matchers, ranges, strings): a negative control, so that a
dashboard naming a series that does not exist fails. A real Prometheus evaluates the same
expressions in tests/integration/test_metrics_prometheus.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from egress.monitoring.metrics import PREFIX, SERIES, series_names

DASHBOARD = (
    Path(__file__).resolve().parents[3] / "ansible" / "files" / "grafana" / "havre-egress.json"
)
#: PromQL words that are not series: aggregations' modifiers, keywords, Grafana's variables
PROMQL_WORDS = frozenset(
    {
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "and",
        "or",
        "unless",
        "offset",
        "le",
        "inf",
        "nan",
    }
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_VARIABLE = re.compile(r"\$\{?\w+\}?")
_WORD = re.compile(r"(?<![\w.])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?")


def expressions(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """``(panel title, expression)`` of every panel target and query variable."""
    for panel in dashboard.get("panels", []):
        for target in panel.get("targets", []):
            if target.get("expr"):
                yield panel.get("title", "?"), target["expr"]
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        text = query.get("query") if isinstance(query, dict) else None
        if variable.get("type") == "query" and text:
            yield f"variable {variable.get('name')}", text


def series_in(expression: str) -> set[str]:
    """The series names an expression reads (not functions, keywords, labels or strings)."""
    text = _STRING.sub('""', expression)
    text = _RANGE.sub("", _MATCHERS.sub("", text))
    text = _VARIABLE.sub("", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", "", text)
    # label_values(metric, label): the second argument is a label
    text = re.sub(r"label_values\(\s*([A-Za-z_:][\w:]*)\s*,\s*\w+\s*\)", r"\1", text)
    names = set()
    for word, call in _WORD.findall(text):
        if call or word.lower() in PROMQL_WORDS:
            continue
        names.add(word)
    return names


def test_the_reader_finds_series_and_nothing_else():
    assert series_in('sum by (le) (rate(foo_bucket{a="x(y)",b=~"$v"}[5m])) / on (job) bar') == {
        "foo_bucket",
        "bar",
    }
    assert series_in("histogram_quantile(0.9, rate(x_bucket[$__rate_interval]))") == {"x_bucket"}
    assert series_in("time() - up offset 5m") == {"up"}
    assert series_in("label_values(havre_egress_requests, project)") == {"havre_egress_requests"}


def test_a_typo_in_a_series_name_is_caught():
    exported = set(series_names())
    wrong = series_in('sum(havre_egress_request{state="draft"})') - exported
    assert wrong == {"havre_egress_request"}


def test_every_dashboard_expression_names_exported_series_only():
    dashboard = json.loads(DASHBOARD.read_text())
    exported = set(series_names())
    found = list(expressions(dashboard))
    assert len(found) >= 10
    for title, expression in found:
        named = series_in(expression)
        assert named, f"{title}: {expression} names no series"
        unknown = named - exported
        assert not unknown, f"{title}: {expression} names {unknown}, not exported"


def test_every_exported_family_is_on_the_dashboard():
    dashboard = json.loads(DASHBOARD.read_text())
    used = set().union(*(series_in(e) for _, e in expressions(dashboard)))
    for short, kind in SERIES.items():
        name = PREFIX + short
        variants = (
            {f"{name}_bucket", f"{name}_sum", f"{name}_count"} if kind == "histogram" else {name}
        )
        assert used & variants, f"{name} is on no panel"


@pytest.mark.parametrize("key", ["title", "uid", "panels", "templating"])
def test_the_dashboard_imports_as_grafana_expects(key):
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard[key]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert re.fullmatch(r"[a-z0-9-]{1,40}", dashboard["uid"])
