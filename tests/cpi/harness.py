"""Drive the real ``bakery-cpi`` executable the way the BOSH director does.

Every call is a fresh process in the director's stripped environment (only ``PATH``),
fed one raw JSON request on stdin; every answer is checked against the protocol the
director enforces before the test looks at its result (bosh-cpi.md §1.3, §7).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

CPI = Path(sys.executable).with_name("bakery-cpi")
DIRECTOR_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
KNOWN_ERRORS = {
    f"Bosh::Clouds::{name}"
    for name in (
        "CpiError NotSupported NotImplemented CloudError VMNotFound NetworkNotFound "
        "NoDiskSpace DiskNotAttached DiskNotFound VMCreationFailed"
    ).split()
}
AGENT = {"mbus": "nats://nats:nats@10.0.0.6:4222", "ntp": ["0.pool.ntp.org"], "blobstore": {}}
SETTINGS_FILE = "var/vcap/bosh/bakery-agent-env.json"
DISKS_FILE = "var/lib/bakery/disks"


def run_cpi(config_file: Path, request: bytes | str) -> dict:
    """One director-style call: the raw request in, the checked response out."""
    raw = request.encode() if isinstance(request, str) else request
    done = subprocess.run(
        [str(CPI), str(config_file)], input=raw, capture_output=True, env=DIRECTOR_ENV, timeout=120
    )
    assert done.returncode == 0, done.stderr.decode()
    response = json.loads(done.stdout)  # all of stdout is exactly one JSON document
    assert isinstance(response, dict) and {"result", "error", "log"} <= set(response)
    assert isinstance(response["log"], str)
    error = response["error"]
    if error is not None:
        assert error["type"] in KNOWN_ERRORS, error
        assert isinstance(error["message"], str) and error["message"]
        assert isinstance(error["ok_to_retry"], bool)
    return response


def request(method: str, *arguments, api_version: int = 2, context: dict | None = None) -> str:
    return json.dumps(
        {
            "method": method,
            "arguments": list(arguments),
            "context": {"director_uuid": "d-1", "request_id": "cpi-123456", **(context or {})},
            "api_version": api_version,
        }
    )


def write_config(path: Path, url: str, token: str, **bakery) -> Path:
    """A cpi.json as the job template renders it; ``bakery`` adds keys to its section."""
    config = {"bakery": {"url": url, "token": token, **bakery}, "agent": AGENT}
    path.write_text(json.dumps(config))
    return path


def ok(response: dict):
    """The result of a call that must have succeeded."""
    assert response["error"] is None, response
    return response["result"]


def failed(response: dict, error_type: str) -> dict:
    """The error of a call that must have failed with ``Bosh::Clouds::<error_type>``."""
    assert response["error"] is not None, response
    assert response["error"]["type"] == f"Bosh::Clouds::{error_type}", response
    return response["error"]


def register_pis(api, count: int, first: int = 1, **fields) -> list[dict]:
    pis = []
    for n in range(first, first + count):
        body = {"serial": f"{n:08x}", "ip": f"127.0.2.{n}", "mac": f"dc:a6:32:00:00:{n:02x}"}
        response = api.post(f"{api.base}/pis", json={**body, **fields})
        assert response.status_code == 201, response.text
        pis.append(response.json())
    return pis


def live_disks(api) -> list[dict]:
    return api.get(f"{api.base}/disks").json()


def live_bakes(api) -> list[dict]:
    return api.get(f"{api.base}/bakes").json()


def root_file(bakery, vm_cid: str, relative: str) -> Path:
    return bakery.root / "bakes" / vm_cid / "root" / relative
