"""Every Bakery process counts in the data dir's metrics directory: the counts of several
processes, and of the workers they fork, add up in any one scrape; ``bakery serve``'s start
clears what the last run counted; a service run alone is counted too. Each process here
is a real one: this test process counts in memory, and must stay so."""

from __future__ import annotations

import stat
import subprocess
import sys

import pytest

from bakery.config import dump_settings
from bakery.sim.server import free_udp_port
from bakery.sim.wait import wait_until
from tests.support.metrics import Page, scrape_directory

COUNTING = """
import os, sys
from pathlib import Path
from bakery import metrics
metrics.use_directory(Path(sys.argv[1]))
metrics.tftp_sent("1234abcd/kernel8.img", 100)
metrics.userspace_up(2.5)
pid = os.fork()  # as ``bakery tftp`` forks its workers once it runs
if pid == 0:
    metrics.tftp_sent("1234abcd/kernel8.img", 100)
    os._exit(0)
os.waitpid(pid, 0)
"""


def count_in(directory, script: str = COUNTING) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", script, str(directory)], capture_output=True, text=True
    )


def test_the_counts_of_several_processes_and_their_forks_add_up_in_one_scrape(tmp_path):
    directory = tmp_path / "metrics"
    for _ in range(2):
        assert count_in(directory).returncode == 0

    page = scrape_directory(directory)

    assert page.total("bakery_tftp_transfers_total", kind="kernel") == 4
    assert page.total("bakery_tftp_bytes_total", kind="kernel") == 400
    assert page.total("bakery_boot_duration_seconds_count") == 2
    assert page.total("bakery_boot_duration_seconds_bucket", le="3.0") == 2
    assert page.total("bakery_boot_duration_seconds_bucket", le="2.0") == 0


def test_the_directory_is_bakerys_alone(tmp_path):
    directory = tmp_path / "metrics"
    count_in(directory)

    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert {path.name.split("_")[0] for path in directory.iterdir()} == {"counter", "histogram"}


def test_a_host_start_clears_what_the_last_run_counted(tmp_path):
    directory = tmp_path / "metrics"
    count_in(directory)
    start = "import sys; from pathlib import Path; from bakery import metrics\n"
    start += "metrics.start_afresh(Path(sys.argv[1]))\nmetrics.dhcp_offered()\n"

    assert count_in(directory, start).returncode == 0
    page = scrape_directory(directory)

    assert page.total("bakery_tftp_transfers_total") == 0
    assert page.total("bakery_boot_duration_seconds_count") == 0
    assert page.total("bakery_dhcp_offers_total") == 1


def test_joining_after_counting_in_memory_is_refused(tmp_path):
    late = "import sys; from pathlib import Path; from bakery import metrics\n"
    late += "metrics.dhcp_offered()\nmetrics.use_directory(Path(sys.argv[1]))\n"

    joined = count_in(tmp_path / "metrics", late)

    assert joined.returncode == 1
    assert "RuntimeError: metrics were counted in memory before joining" in joined.stderr


def test_a_missing_data_dir_is_a_one_line_error(tmp_path):
    missing = "import sys; from pathlib import Path; from bakery import metrics\n"
    missing += "metrics.use_directory(Path(sys.argv[1]))\n"

    joined = count_in(tmp_path / "no-root" / "metrics", missing)

    assert "ConfigError: metrics directory " in joined.stderr
    assert "No such file or directory" in joined.stderr


@pytest.mark.tools("curl")
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_tftp_server_run_alone_is_counted_in_the_data_dirs_directory(settings, bake_pi, tmp_path):
    bake_pi("0000c0de", ip="127.0.0.1")
    port = free_udp_port()
    config = dump_settings(settings, tmp_path / "settings.json")
    command = [sys.executable, "-m", "bakery.cli", "tftp", "--config", str(config)]
    server = subprocess.Popen([*command, "--bind", f"127.0.0.1:{port}", "--workers", "2"])

    def fetched() -> bytes:
        url = f"tftp://127.0.0.1:{port}/0000c0de/cmdline.txt"
        return subprocess.run(["curl", "-s", "--max-time", "2", url], capture_output=True).stdout

    def counted() -> Page | None:
        page = scrape_directory(settings.path("metrics"))
        return page if page.total("bakery_tftp_transfers_total", kind="cmdline") else None

    try:
        cmdline = wait_until(fetched, 30, what="the TFTP server to answer")
        page = wait_until(counted, 10, what="the transfer to be counted")
    finally:
        server.terminate()
        server.wait(30)

    assert page.total("bakery_tftp_transfers_total", kind="cmdline") == 1
    assert page.total("bakery_tftp_bytes_total", kind="cmdline") == len(cmdline)
