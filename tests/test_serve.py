"""``bakery serve`` runs the TFTP server beside the API and keeps it running."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import time
from functools import partial

import pytest
import requests

from bakery import serve
from bakery.sim.server import accepts_connections
from bakery.sim.wait import wait_until
from tests.conftest import install_gated_ppi, upload_raspios
from tests.support.metrics import Page
from tests.support.postgres import free_port
from tests.support.processes import alive, flood_until_gone, gone


def tftp_get(port: int, path: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["curl", "-s", "--max-time", "5", f"tftp://127.0.0.1:{port}/{path}"],
        capture_output=True,
    )


def tftp_children(server) -> list[int]:
    """The ``bakery tftp`` process and the workers it forked (same command line)."""
    out = subprocess.run(
        ["pgrep", "-f", f"bakery.cli tftp --config {server.root}"], capture_output=True, text=True
    ).stdout
    return [int(pid) for pid in out.split()]


def parent_of(pid: int) -> int:
    return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])


def tftp_main(server) -> tuple[int, list[int]]:
    """The ``bakery tftp`` process that serve's netboot child started, and its workers."""
    processes = wait_until(lambda: len(tftp_children(server)) == 2 and tftp_children(server))
    [main] = [pid for pid in processes if parent_of(pid) not in processes]
    return main, [pid for pid in processes if pid != main]


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_serve_runs_the_tftp_server_and_restarts_it(live_server, sd_image_file):
    port = free_port()
    server = live_server(tftp_enabled=True, tftp_bind=f"127.0.0.1:{port}")
    api = server.session()
    upload_raspios(server, sd_image_file)
    api.post(f"{server.url}/api/v1/pis", json={"serial": "0000c0de", "ip": "127.0.0.1"})
    assert api.post(f"{server.url}/api/v1/bakes", json={"bakeform": "raspios"}).status_code == 201

    cmdline = wait_until(
        lambda: tftp_get(port, "0000c0de/cmdline.txt").stdout,
        timeout=30,
        what="the TFTP server to answer",
    )
    assert b"root=/dev/nfs" in cmdline

    first, workers = tftp_main(server)  # tftp_workers: 2 by default
    os.kill(first, signal.SIGKILL)  # its worker must not outlive it, holding the port
    restarted = wait_until(
        lambda: not set(tftp_children(server)) & {first, *workers} and tftp_children(server),
        timeout=30,
        what="the tftp child and its worker to be gone and restarted",
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


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_serve_speaks_https_with_the_configured_certificate(live_server, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    server = live_server(tls_cert_file=str(cert), tls_key_file=str(key))
    assert server.url.startswith("https://")
    assert server.session().get(f"{server.url}/api/v1/pis").status_code == 200
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{server.url}/api/v1/health", timeout=5)  # not trusted without the CA


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_tokens_from_the_settings_work_and_rotate(live_server):
    """A token given by its value alone is the director's: role cpi (so it lists bakes)."""
    director = "d" * 40
    server = live_server(api_tokens={"director": director})
    headers = {"Authorization": f"Bearer {director}"}
    assert requests.get(f"{server.url}/api/v1/bakes", headers=headers, timeout=5).status_code == 200
    assert not (server.root / "admin-token").exists()
    server.stop()
    rotated = "r" * 40
    server = live_server(api_tokens={"director": rotated})
    assert requests.get(f"{server.url}/api/v1/bakes", headers=headers, timeout=5).status_code == 401
    headers = {"Authorization": f"Bearer {rotated}"}
    assert requests.get(f"{server.url}/api/v1/bakes", headers=headers, timeout=5).status_code == 200


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_token_removed_from_the_settings_stops_working(live_server):
    kept, dropped = "k" * 40, "x" * 40
    server = live_server(api_tokens={"director": kept, "old": dropped})
    server.stop()
    server = live_server(api_tokens={"director": kept})
    for token, status in ((kept, 200), (dropped, 401)):
        headers = {"Authorization": f"Bearer {token}"}
        assert (
            requests.get(f"{server.url}/api/v1/bakes", headers=headers, timeout=5).status_code
            == status
        )


def raw_request(url: str, data: bytes, timeout: float = 10.0) -> bytes:
    """Send ``data`` as it is on a fresh connection; everything the server answered."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_clients_sending_half_a_head_neither_stop_health_nor_stay_forever(live_server):
    """The finding: two connections sending a partial header froze the API, /health too."""
    server = live_server(workers=1)
    host, port = server.url.removeprefix("http://").split(":")
    slow = [socket.create_connection((host, int(port)), timeout=30) for _ in range(4)]
    for sock in slow:
        sock.sendall(b"GET /api/v1/pis HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    started = time.monotonic()
    for _ in range(5):
        assert requests.get(f"{server.url}/api/v1/health", timeout=5).status_code == 200
    assert time.monotonic() - started < 5
    for sock in slow:  # cut off once their head is late, whatever they send meanwhile
        sock.sendall(b"a")
        assert sock.recv(1024) == b""
        sock.close()
    assert time.monotonic() - started < serve.HEAD_TIMEOUT + 5


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("request_bytes", "status", "code"),
    [
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "uri_too_long"),
        (b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 200 + b"\r\n", 431, "headers_too_large"),
        (b"NOT A REQUEST\r\n\r\n", 400, "bad_request"),
    ],
)
def test_gunicorns_own_errors_are_json_too(live_server, request_bytes, status, code):
    server = live_server(workers=1)
    answer = raw_request(server.url, request_bytes)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), head
    assert b"Content-Type: application/json" in head
    error = json.loads(body)["error"]
    assert error["code"] == code and error["message"]


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_after_the_master_is_killed_its_workers_go_and_a_restart_gets_the_port(live_server):
    server = live_server(workers=2)  # healthy once one worker answers
    workers = wait_until(lambda: started_workers(server, 2), timeout=30, what="both workers")
    os.kill(server.process.pid, signal.SIGKILL)  # the master alone, not its group
    wait_until(lambda: not any(alive(pid) for pid in workers), timeout=10, what="workers to die")
    server.process.wait(timeout=10)
    restarted = server.start(timeout=30)
    assert requests.get(f"{restarted.url}/api/v1/health", timeout=5).status_code == 200


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_workers_stop_promptly_however_many_sigterms_they_get(live_server):
    """At a stop a worker gets SIGTERM twice (the process group's, then the master's), and
    an operator may press Ctrl-C twice: a signal landing while the last one's handler ran
    once deadlocked the worker, holding the stop for gunicorn's whole graceful timeout.
    Each round floods a worker until it exits; the master starts the next one."""
    server = live_server(workers=1)  # healthy: its one worker has its signal handlers
    flooded: list[int] = []
    for _ in range(5):
        [worker] = wait_until(lambda: fresh_worker(server, flooded), timeout=30, what="a worker")
        flooded.append(worker)
        flood_until_gone(worker, signal.SIGTERM, seconds=3)
        wait_until(partial(gone, worker), timeout=10, what="the worker to exit")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_netboot_and_its_metrics_server_stop_promptly_however_many_sigterms_they_get(
    live_server,
):
    """Serve's stop sends netboot a SIGTERM with its process group and another from the
    master's exit hook; the same flood as the workers' must not deadlock either."""
    metrics_address = ("127.0.0.1", free_port())
    server = live_server(
        tftp_enabled=True,
        tftp_bind=f"127.0.0.1:{free_port()}",
        metrics_bind="{}:{}".format(*metrics_address),
    )
    wait_until(lambda: accepts_connections(metrics_address), 30, what="the metrics server")
    [netboot] = [int(pid) for pid in child_pids(server.process.pid, "bakery.cli netboot")]
    [metrics] = [int(pid) for pid in child_pids(netboot, "bakery.cli metrics")]

    flood_until_gone(metrics, signal.SIGTERM, seconds=3)
    wait_until(partial(gone, metrics), timeout=10, what="the metrics server to exit")
    flood_until_gone(netboot, signal.SIGTERM, seconds=3)
    wait_until(partial(gone, netboot), timeout=20, what="netboot to exit")
    assert not tftp_children(server)


def fresh_worker(server, flooded: list[int]) -> list[int] | None:
    """The one worker, once it is not one already flooded and it has answered."""
    workers = started_workers(server, 1)
    if workers is None or workers[0] in flooded:
        return None
    health = requests.get(f"{server.url}/api/v1/health", timeout=30)
    return workers if health.status_code == 200 else None


def started_workers(server, count: int) -> list[int] | None:
    """The master's workers, once there are ``count`` of them."""
    workers = [int(pid) for pid in worker_pids(server.process.pid)]
    return workers if len(workers) == count else None


def worker_pids(master: int) -> list[str]:
    return child_pids(master, "bakery serve")


def child_pids(parent: int, command: str) -> list[str]:
    return subprocess.run(
        ["pgrep", "-P", str(parent), "-f", command], capture_output=True, text=True
    ).stdout.split()


def test_relays_that_hang_at_start_up_do_not_keep_the_api_from_listening(
    live_server, tmp_path, ppi_dir
):
    server = live_server(power_timeout=120)
    gate = tmp_path / "gate"
    hanging = install_gated_ppi(ppi_dir, gate, "status")
    api = server.session()
    for serial in ("00000001", "00000002", "00000003"):
        pi = {"serial": serial, "power_driver": "ppi", "power_settings": {"program": hanging}}
        assert api.post(f"{server.url}/api/v1/pis", json=pi).status_code == 201
    server.stop()

    server.start(timeout=30)  # the restore asks the first relay its status, which hangs
    wait_until(lambda: (gate / "started").exists(), what="the restore to ask a relay")
    assert server.session().get(f"{server.url}/api/v1/pis").status_code == 200

    (gate / "open").touch()

    def powers() -> list[str]:
        return [p["power_state"] for p in server.session().get(f"{server.url}/api/v1/pis").json()]

    wait_until(lambda: powers() == ["off"] * 3, timeout=60, what="the restore to switch them off")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_start_up_restore_stops_when_the_master_is_killed(live_server, tmp_path, ppi_dir):
    server = live_server(power_timeout=120)
    gate = tmp_path / "gate"
    hanging = install_gated_ppi(ppi_dir, gate, "status")
    pi = {"serial": "00000001", "power_driver": "ppi", "power_settings": {"program": hanging}}
    assert server.session().post(f"{server.url}/api/v1/pis", json=pi).status_code == 201
    server.stop()
    server.start(timeout=30)
    wait_until(lambda: (gate / "started").exists(), what="the restore to ask the relay")
    restore = [int(pid) for pid in child_pids(server.process.pid, "restore-power")]
    assert len(restore) == 1

    os.kill(server.process.pid, signal.SIGKILL)

    wait_until(lambda: not alive(restore[0]), timeout=10, what="the restore to stop")
    server.process.wait(timeout=10)
    (gate / "open").touch()


def metrics_page(url: str, **kwargs) -> Page:
    answer = requests.get(url, timeout=10, **kwargs)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    return Page(answer.text)


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_serve_adds_up_its_workers_counts_and_starts_them_afresh_at_each_start(live_server):
    """The gunicorn workers count the requests; the page on ``metrics_bind`` (no token:
    the netboot child runs ``bakery metrics``) and the API's (a token) add them up; the
    next start of serve begins at zero, the last run's files gone."""
    address = f"127.0.0.1:{free_port()}"
    server = live_server(workers=3, metrics_bind=address)
    api = server.session()
    for _ in range(12):  # keep-alive off: each request may reach any worker
        api.get(f"{server.url}/api/v1/pis", headers={"Connection": "close"})
    wait_until(lambda: accepts_connections(("127.0.0.1", int(address.split(":")[1]))), 30)

    open_page = metrics_page(f"http://{address}/metrics")
    token_page = metrics_page(f"{server.url}/metrics", headers=api.headers)
    refused = requests.get(f"{server.url}/metrics", timeout=10)

    route = {"route": "/api/v1/pis", "method": "GET", "status": "200"}
    assert open_page.total("bakery_api_requests_total", **route) == 12
    assert token_page.total("bakery_api_requests_total", **route) == 12
    assert open_page.total("bakery_pis") == 0
    assert refused.status_code == 401
    directory = server.root / "metrics"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    earlier = {path.name for path in directory.iterdir()}
    assert any(name.startswith("counter_") for name in earlier)

    server.stop()
    again = live_server(workers=3, metrics_bind=address)
    wait_until(lambda: accepts_connections(("127.0.0.1", int(address.split(":")[1]))), 30)

    fresh = metrics_page(f"http://{address}/metrics")
    assert fresh.total("bakery_api_requests_total", **route) == 0
    assert not earlier & {path.name for path in (again.root / "metrics").iterdir()}
