"""What a scrape shows: every declared family from the start, in Prometheus text unless
OpenMetrics is asked for; and the metrics server of ``metrics_bind``, which answers
without a token."""

from __future__ import annotations

import pytest
import requests

from bakery import metrics
from bakery.metrics import DECLARED, MetricsServer
from tests.support.metrics import Page, scrape_directory

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


def test_every_family_is_on_the_page_before_anything_is_counted(tmp_path):
    page = scrape_directory(tmp_path / "metrics")

    help_lines = [line for line in page.text.splitlines() if line.startswith("# HELP ")]
    assert len(help_lines) == len(DECLARED)
    for family in DECLARED:
        assert f"# HELP {family.name} {family.documentation}" in help_lines
        if not family.labels and family.kind == "counter":
            assert page.text.count(f"\n{family.name} 0.0\n") == 1, family.name
    assert page.total("bakery_boot_duration_seconds_count") == 0


def test_a_count_is_on_the_page_by_its_labels():
    before = Page(metrics.exposition(None)[0].decode())
    metrics.tftp_sent("1234abcd/overlays/vc4-kms-v3d.dtbo", 2048)
    after = Page(metrics.exposition(None)[0].decode())

    def grew(name: str) -> float:
        return after.total(name, kind="overlay") - before.total(name, kind="overlay")

    assert (grew("bakery_tftp_transfers_total"), grew("bakery_tftp_bytes_total")) == (1, 2048)
    assert "1234abcd" not in after.text


def test_the_page_is_prometheus_text_unless_openmetrics_is_asked_for():
    _, plain = metrics.exposition(None)
    _, also_plain = metrics.exposition("text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
    body, open_metrics = metrics.exposition("application/openmetrics-text;version=1.0.0")

    assert plain == also_plain == PROMETHEUS_TEXT
    assert open_metrics.startswith("application/openmetrics-text; version=1.0.0")
    assert body.endswith(b"# EOF\n")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_metrics_server_answers_without_a_token(fleet):
    fleet.register_pi("0000c0de", ip="127.0.0.9")
    server = MetricsServer(("127.0.0.1", 0), [fleet.gauges()]).start()
    try:
        answer = requests.get(f"http://127.0.0.1:{server.port}/metrics", timeout=10)
    finally:
        server.stop()

    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == PROMETHEUS_TEXT
    page = Page(answer.text)
    assert page.total("bakery_pis", state="available") == 1
    assert page.total("bakery_pis") == 1
