"""Dashboards: the checked-in JSON is what the generator writes, and follows the house rules (a datasource
variable and no hard-coded uids, rate() over counters, histogram_quantile over buckets). Their queries run
on a real Prometheus in tests/test_stack.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from llmlab.platform import dashboards

DIR = Path(__file__).resolve().parents[1] / "dashboards"


@pytest.mark.parametrize("name", sorted(dashboards.DASHBOARDS))
def test_checked_in_json_matches_generator(name):
    path = DIR / f"{name}.json"
    assert path.exists(), f"{path} is missing: run `llmlab dashboards`"
    assert json.loads(path.read_text()) == json.loads(dashboards.render(name)), (
        f"{path.name} differs from the generator: run `llmlab dashboards`")


@pytest.mark.parametrize("name", sorted(dashboards.DASHBOARDS))
def test_house_rules(name):
    doc = json.loads(dashboards.render(name))
    assert [v["name"] for v in doc["templating"]["list"]] == ["datasource"]
    assert doc["templating"]["list"][0]["query"] == "prometheus"
    assert "uid" not in doc  # Grafana assigns dashboard uids; nothing is pinned
    panels = [p for p in doc["panels"] if p["type"] != "row"]
    assert panels
    for p in panels:
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}"
            expr = t["expr"]
            for counter in re.findall(r"[a-z_:]+_total\b", expr):
                assert re.search(rf"(rate|increase)\({re.escape(counter)}", expr), expr
            if "_bucket" in expr:
                assert "histogram_quantile(" in expr, expr
    text = json.dumps(doc)
    assert re.findall(r'"uid": "([^"]+)"', text) == ["${datasource}"] * text.count('"uid"')
