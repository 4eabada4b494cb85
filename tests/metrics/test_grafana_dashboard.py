"""docs/grafana-dashboard.json: a Grafana dashboard over a Prometheus datasource chosen by
a variable, with a panel for every family Bakery exports, whose queries name only what
Bakery's metrics page exposes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bakery.metrics import DECLARED
from tests.support.metrics import scrape_directory

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json"
METRIC_NAME_RE = re.compile(r"\bbakery_[a-z0-9_]+")
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels(dashboard: dict) -> list[dict]:
    return [panel for panel in dashboard["panels"] if panel["type"] != "row"]


def queries(dashboard: dict) -> list[str]:
    return [target["expr"] for panel in panels(dashboard) for target in panel["targets"]]


def test_the_dashboard_takes_its_prometheus_from_a_variable(dashboard):
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}

    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in panels(dashboard):
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert all(target["datasource"] == DATASOURCE for target in panel["targets"])
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_every_name_the_dashboard_queries_is_on_the_metrics_page(dashboard, tmp_path):
    exposed = scrape_directory(tmp_path / "metrics").exposed_names()

    queried = {name for query in queries(dashboard) for name in METRIC_NAME_RE.findall(query)}

    assert queried, "no Bakery metric in the dashboard's queries"
    assert queried <= exposed, sorted(queried - exposed)


def test_every_family_bakery_exports_has_a_panel(dashboard):
    queried = " ".join(queries(dashboard))

    missing = [
        f.name for f in DECLARED if not re.search(rf"\b{f.name}(_bucket|_count)?\b", queried)
    ]

    assert not missing
