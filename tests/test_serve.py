"""``bakery serve`` runs the TFTP server beside the API and keeps it running."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from tests.support.postgres import free_port
from tests.support.wait import wait_until


def tftp_get(port: int, path: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["curl", "-s", "--max-time", "5", f"tftp://127.0.0.1:{port}/{path}"],
        capture_output=True,
    )


def tftp_children(server) -> list[int]:
    out = subprocess.run(
        ["pgrep", "-f", f"bakery.cli tftp --config {server.root}"], capture_output=True, text=True
    ).stdout
    return [int(pid) for pid in out.split()]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_serve_runs_the_tftp_server_and_restarts_it(live_server, sd_image_file):
    port = free_port()
    server = live_server(tftp_enabled=True, tftp_bind=f"127.0.0.1:{port}")
    api = server.session()
    with open(sd_image_file, "rb") as image:
        assert api.put(f"{server.url}/api/v1/bakeforms/raspios", data=image).status_code == 201
    api.post(f"{server.url}/api/v1/pis", json={"serial": "0000c0de", "ip": "127.0.0.1"})
    assert api.post(f"{server.url}/api/v1/bakes", json={"bakeform": "raspios"}).status_code == 201

    cmdline = wait_until(
        lambda: tftp_get(port, "0000c0de/cmdline.txt").stdout,
        timeout=30,
        what="the TFTP server to answer",
    )
    assert b"root=/dev/nfs" in cmdline

    [first] = wait_until(lambda: tftp_children(server), what="the tftp child")
    os.kill(first, signal.SIGKILL)
    restarted = wait_until(
        lambda: [p for p in tftp_children(server) if p != first],
        timeout=30,
        what="the tftp child to be restarted",
    )
    assert restarted
    assert b"root=/dev/nfs" in wait_until(
        lambda: tftp_get(port, "0000c0de/cmdline.txt").stdout,
        timeout=30,
        what="the restarted TFTP server",
    )
    server.stop()
    wait_until(lambda: not tftp_children(server), what="the tftp child to stop with serve")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_netboot_stops_when_the_master_is_killed(live_server):
    server = live_server(tftp_enabled=True, tftp_bind=f"127.0.0.1:{free_port()}")
    wait_until(lambda: tftp_children(server), what="the tftp child")
    os.kill(server.process.pid, signal.SIGKILL)  # the master alone, not its group
    wait_until(lambda: not tftp_children(server), what="netboot to notice and stop")
