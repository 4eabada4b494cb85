"""``bakery sim run`` and ``bakery sim status``: the demo a newcomer starts with
``make run``, and a look at what the simulated Pis see."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, cast

import requests

from ..signals import stop_event
from .network import missing_tools
from .runner import UNPRIVILEGED_TFTP_PORT, SimulatedSite, SiteOptions, default_mode

INSTRUCTIONS = """
Bakery is running at {url} with {count} simulated Pis ({mode} mode{nfs_note}).
Open {url}/ in a browser and sign in with the token in {token_file}; or, in
another shell, from this checkout:

  . .venv/bin/activate{root_hint}
  bakery fridge                  # the simulated Pis, ready to bake
  bakery bake demo               # bake bakeform 'demo' onto a free Pi; note its serial and id
  bakery pi show <serial>        # its timeline: bake steps, power on (webhook), TFTP files...
  bakery sim status              # what the simulated Pis see: dhcp, tftp, nfs, booted
  bakery unbake <bake-id>        # power off, unexport, free the Pi

Server log: {log}. Ctrl-C stops everything.
"""
DEFAULT_API_PORT = 8080
DEFAULT_SIM_URL = "http://127.0.0.1:8181"
LOOPBACK_NOTE = ": no DHCP, NFS step skipped; run as root for netns mode"


def run_demo(
    count: int,
    mode: str,
    root: Path,
    port: int,
    power_port: int,
    tftp_bind: str = "",
    http_boot: bool = False,
    netconsole: bool = False,
) -> None:
    """Start the site, print how to use it, and run until SIGINT or SIGTERM."""
    mode = default_mode() if mode == "auto" else mode
    missing = missing_tools(mode)
    if missing:
        raise RuntimeError(f"{mode} mode needs {', '.join(missing)}")
    root = root.absolute()
    options = SiteOptions(
        root=root,
        workdir=root / "sim",
        pis=count,
        mode=mode,
        api_port=port,
        power_port=power_port,
        tftp_port=_tftp_port(tftp_bind),
        http_boot=http_boot,
        netconsole=netconsole,
    )
    stop = stop_event()
    print(f"bakery sim: starting Bakery and {count} simulated Pis ({mode} mode)...", flush=True)
    with SimulatedSite(options) as site:
        print(_instructions(site, root), flush=True)
        stop.wait()
        print("bakery sim: stopping", flush=True)


def _tftp_port(tftp_bind: str) -> int:
    if tftp_bind:
        return int(tftp_bind.rpartition(":")[2])
    return 69 if os.geteuid() == 0 else UNPRIVILEGED_TFTP_PORT


def _instructions(site: SimulatedSite, root: Path) -> str:
    """How to use the site; the exports are needed only off the defaults."""
    assert site.server is not None and site.power is not None  # the site has started
    hints = []
    if root != Path("data").absolute():
        hints.append(f"export BAKERY_ROOT={root}")
    if site.server.port != DEFAULT_API_PORT:
        hints.append(f"export BAKERY_URL={site.server.url}")
    if site.power.url != DEFAULT_SIM_URL:
        hints.append(f"export BAKERY_SIM_URL={site.power.url}")
    hint = "".join(f"\n  {line}" for line in hints)
    return INSTRUCTIONS.format(
        url=site.server.url,
        count=len(site.pis),
        mode=site.options.mode,
        nfs_note=LOOPBACK_NOTE if site.options.mode == "loopback" else "",
        root_hint=hint,
        log=site.server.log_file,
        token_file=root / "admin-token",
    )


def fetch_status(sim_url: str) -> list[dict[str, Any]]:
    """Every simulated Pi's status from the simulator's power API."""
    try:
        response = requests.get(f"{sim_url.rstrip('/')}/pis", timeout=10)
    except requests.ConnectionError:
        message = f"cannot reach the simulator at {sim_url} (is `bakery sim run` running?)"
        raise OSError(message) from None
    response.raise_for_status()
    return cast("list[dict[str, Any]]", response.json()["pis"])
