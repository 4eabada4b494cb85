"""The wire protocol and configuration, director-style (bosh-cpi.md §1): whatever the
request or the configuration, one well-formed JSON answer and exit 0."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.support.postgres import free_port

from .harness import failed, ok, request, run_cpi, write_config

ANY_ID = "0123456789abcdef0123456789abcdef"
VALID = {"bakery": {"url": "http://x", "token": "t"}, "agent": {"mbus": "nats://x"}}


@pytest.fixture
def config_file(tmp_path):
    """A valid cpi.json naming a Bakery nobody listens on."""
    return write_config(tmp_path / "cpi.json", f"http://127.0.0.1:{free_port()}", "token")


def test_info_reports_api_version_2_and_the_stemcell_formats(config_file):
    for raw in (request("info"), json.dumps({"method": "info", "arguments": []})):
        info = ok(run_cpi(config_file, raw))
        assert info == {"api_version": 2, "stemcell_formats": ["bakery-raw", "pi-raw"]}


@pytest.mark.parametrize(
    "raw, words",
    [
        ("{not json", "not valid JSON"),
        ("", "not valid JSON"),
        ('["info"]', "JSON object"),
        ('{"arguments": []}', "no 'method'"),
        ('{"method": "info", "arguments": {}}', "'arguments' must be a list"),
        ('{"method": "has_vm", "arguments": []}', "has_vm takes 1 arguments, got 0"),
        ('{"method": "create_disk", "arguments": ["big", {}]}', "argument 1 must be int"),
        ('{"method": "info", "arguments": [], "api_version": "2"}', "api_version"),
    ],
)
def test_a_malformed_request_is_a_cpi_error(config_file, raw, words):
    assert words in failed(run_cpi(config_file, raw), "CpiError")["message"]


def test_an_unknown_method_is_not_implemented(config_file):
    for method in ("frobnicate_vm", "update_disk", "current_vm_id"):
        failed(run_cpi(config_file, request(method, ANY_ID)), "NotImplemented")


@pytest.mark.parametrize(
    "content, words",
    [
        (None, "cannot read"),
        ("{", "not valid JSON"),
        ({"agent": {"mbus": "nats://x"}}, "bakery is missing"),
        ({"bakery": {"url": "ftp://x", "token": "t"}, "agent": {"mbus": "m"}}, "bakery.url"),
        ({"bakery": {"url": "http://x", "tokn": "t"}, "agent": {"mbus": "m"}}, "bakery.tokn"),
        ({"bakery": {"url": "http://x", "token": "t"}, "agent": {}}, "agent.mbus"),
        (
            {
                "bakery": {"url": "http://x", "token": "t"},
                "agent": {"mbus": "m"},
                "ephemeral_disk_mib": -1,
            },
            "ephemeral_disk_mib",
        ),
    ],
)
def test_a_bad_cpi_json_is_a_cpi_error_naming_the_problem(tmp_path, content, words):
    config_file = tmp_path / "cpi.json"
    if content is not None:
        config_file.write_text(content if isinstance(content, str) else json.dumps(content))

    error = failed(run_cpi(config_file, request("info")), "CpiError")

    assert words in error["message"]
    assert str(config_file) in error["message"]


def test_a_cpi_json_without_the_agent_block_answers_info_and_refuses_only_create_vm(tmp_path):
    config_file = tmp_path / "cpi.json"
    config_file.write_text(json.dumps({"bakery": {"url": "http://127.0.0.1:9", "token": "t"}}))

    info = run_cpi(config_file, request("info"))
    refused = failed(
        run_cpi(config_file, request("create_vm", "agent-1", "sc", {}, {"n": {}}, [], {})),
        "VMCreationFailed",
    )

    assert info["error"] is None and info["result"]["stemcell_formats"]
    assert "agent.mbus is missing: creating a VM needs the agent block" in refused["message"]
    assert str(config_file) in refused["message"]


def test_an_unreachable_bakery_is_a_cloud_error_saying_so(config_file):
    error = failed(run_cpi(config_file, request("has_vm", ANY_ID)), "CloudError")

    assert "cannot reach Bakery at http://127.0.0.1:" in error["message"]
    assert "Connection refused" in error["message"]


def test_context_properties_override_cpi_json_like_a_cpi_config(config_file):
    other = f"http://127.0.0.1:{free_port()}"
    context = {"bakery": {"url": other}, "vm": {"stemcell": {"api_version": 2}}}

    error = failed(run_cpi(config_file, request("has_vm", ANY_ID, context=context)), "CloudError")

    assert f"cannot reach Bakery at {other} " in error["message"]


class EmptyOlderBakery(BaseHTTPRequestHandler):
    """A Bakery that knows nothing, and answers every 404 with the plain ``not_found``
    of the releases before resource-specific codes."""

    def answer(self):
        body = json.dumps({"error": {"code": "not_found", "message": "no such thing"}}).encode()
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = answer  # noqa: N815  (http.server's naming)

    def log_message(self, *args):
        pass


@contextmanager
def serving(wrap: Callable[[socket.socket], socket.socket] = lambda sock: sock) -> Iterator[int]:
    """An ``EmptyOlderBakery`` on a free loopback port (its socket passed through ``wrap``)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), EmptyOlderBakery)
    server.socket = wrap(server.socket)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_an_older_bakerys_plain_not_found_is_still_the_directors_not_found(tmp_path):
    with serving() as port:
        config = write_config(tmp_path / "cpi.json", f"http://127.0.0.1:{port}", "t")
        failed(run_cpi(config, request("delete_vm", ANY_ID)), "VMNotFound")
        failed(run_cpi(config, request("delete_disk", ANY_ID)), "DiskNotFound")
        failed(run_cpi(config, request("reboot_vm", ANY_ID)), "VMNotFound")


@pytest.fixture
def https_bakery(tmp_path):
    """An https server with a throw-away self-signed certificate; yields (url, its PEM)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"]
        + ["-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    with serving(lambda sock: context.wrap_socket(sock, server_side=True)) as port:
        yield f"https://127.0.0.1:{port}", cert.read_text()


def test_https_with_the_configured_ca_and_not_without(https_bakery, tmp_path):
    url, pem = https_bakery
    trusting = write_config(tmp_path / "trusting.json", url, "t")
    trusting.write_text(
        json.dumps(
            {
                **json.loads(trusting.read_text()),
                "bakery": {"url": url, "token": "t", "ca_cert": pem},
            }
        )
    )
    untrusting = write_config(tmp_path / "untrusting.json", url, "t")

    assert ok(run_cpi(trusting, request("has_vm", ANY_ID))) is False
    error = failed(run_cpi(untrusting, request("has_vm", ANY_ID)), "CloudError")
    assert "CERTIFICATE_VERIFY_FAILED" in error["message"]


def test_vm_resources_become_the_ephemeral_disk_size(config_file):
    resources = {"cpu": 4, "ram": 4096, "ephemeral_disk_size": 20480}

    properties = ok(run_cpi(config_file, request("calculate_vm_cloud_properties", resources)))

    assert properties == {"ephemeral_disk_mib": 20480}  # a Pi's CPU and RAM are fixed
