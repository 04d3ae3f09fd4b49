"""deploy/grafana/ray_shards_dashboard.json: every expression names metrics (and labels) ray_shards exports."""

from __future__ import annotations

import json
import pathlib
import re
import typing

import pytest

from ray_shards.metric_names import EXPORTED

pytestmark = pytest.mark.timeout(60)

DASHBOARD = pathlib.Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "ray_shards_dashboard.json"
_PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "quantile", "rate", "increase", "histogram_quantile", "by", "on",
    "without", "ignoring", "and", "or", "unless", "label_values", "topk", "bottomk",
}


def _sample_names() -> dict[str, tuple[str, ...]]:
    """Every sample name Prometheus shows for the exported metrics -> its labels."""
    names: dict[str, tuple[str, ...]] = {}
    for name, spec in EXPORTED.items():
        if spec.kind == "histogram":
            names[f"{name}_bucket"] = (*spec.tags, "le")
            names[f"{name}_sum"] = spec.tags
            names[f"{name}_count"] = spec.tags
        else:
            names[name] = spec.tags
    return names


def _dashboard() -> dict[str, typing.Any]:
    return typing.cast(dict[str, typing.Any], json.loads(DASHBOARD.read_text(encoding="utf-8")))


def _expressions(dashboard: dict[str, typing.Any]) -> list[tuple[str, str]]:
    found = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            found.append((panel["title"], target["expr"]))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            found.append((f"variable {variable['name']}", variable["definition"]))
    return found


def _check(expr: str) -> set[str]:
    """The exported metrics ``expr`` uses; fails for an unknown metric or label, or unbalanced brackets."""
    known = _sample_names()
    variable = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", expr)
    if variable is not None:  # Grafana's variable query: a metric and one of its labels
        metric, label = variable.groups()
        assert metric in known and label in known[metric], expr
        return {metric}
    for open_, close in ("()", "{}", "[]"):
        assert expr.count(open_) == expr.count(close), f"unbalanced {open_}{close} in {expr}"
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    without_selectors = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", without_strings)
    grouping = {m for group in re.findall(r"\b(?:by|on|without|ignoring)\s*\(([^)]*)\)", without_selectors)
                for m in re.split(r"\s*,\s*", group.strip()) if m}
    words = set(re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b", re.sub(r"\b(?:by|on|without|ignoring)\s*\([^)]*\)",
                                                                    "", without_selectors)))
    metrics = {w for w in words if w not in _PROMQL_WORDS}
    unknown = metrics - set(known)
    assert not unknown, f"{expr}: {sorted(unknown)} not exported by ray_shards"
    labels = {label for metric in metrics for label in known[metric]}
    assert grouping <= labels, f"{expr}: labels {sorted(grouping - labels)} are on none of {sorted(metrics)}"
    for selector in re.findall(r"\{([^}]*)\}", without_strings):
        for label in re.findall(r"([a-zA-Z_]\w*)\s*[=!]~?", selector):
            assert label in labels, f"{expr}: selector label {label!r} not on {sorted(metrics)}"
    return metrics


def test_every_expression_names_exported_metrics() -> None:
    used: set[str] = set()
    expressions = _expressions(_dashboard())
    assert len(expressions) >= 15
    for title, expr in expressions:
        metrics = _check(expr)
        assert metrics, f"{title}: {expr} uses no ray_shards metric"
        used |= metrics
        if not title.startswith("variable"):
            assert '$bot' in expr, f"{title}: {expr} ignores the bot variable"
    # The dashboard covers every exported metric (histograms through one of their series).
    covered = {name for name in EXPORTED if any(u == name or u.startswith(f"{name}_") for u in used)}
    assert covered == set(EXPORTED), sorted(set(EXPORTED) - covered)


def test_the_check_catches_mistakes() -> None:
    with pytest.raises(AssertionError, match="not exported"):
        _check('sum(ray_ray_shards_shard_state{bot=~"$bot"})')  # Ray's prefix twice
    with pytest.raises(AssertionError, match="not exported"):
        _check('rate(ray_shards_events{bot=~"$bot"}[1m])')
    with pytest.raises(AssertionError, match="labels"):
        _check('sum by (node) (ray_shards_shards{bot=~"$bot"})')
    with pytest.raises(AssertionError, match="selector label"):
        _check('ray_shards_identify_budget_remaining{shard="1"}')
    with pytest.raises(AssertionError, match="unbalanced"):
        _check('sum(ray_shards_shards{bot=~"$bot"}')


def test_dashboard_shape() -> None:
    """Like Ray's own dashboards: a data source variable, a bot variable, the panels the issue asks for."""
    dashboard = _dashboard()
    assert dashboard["uid"] == "ray-shards" and dashboard["title"] == "ray_shards"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["bot"]["includeAll"] is True
    titles = " | ".join(p["title"] for p in dashboard["panels"]).lower()
    for wanted in ("shards by state", "latency p50 by host", "latency p99 by host", "events/s",
                   "identifies and resumes", "budget", "hosts by state", "sync lateness", "checkpoint"):
        assert wanted in titles, wanted
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}"
