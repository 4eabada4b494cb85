"""End to end: a stemcell's image, uploaded as the CPI's create_stemcell does, boots a
simulated Pi over real DHCP, TFTP and NFS (netns mode: dnsmasq, nfs-ganesha, namespaces)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bakery.sim.image import REQUIRED_TOOLS
from bakery.sim.network import NETNS_TOOLS
from bakery.sim.runner import SimulatedSite
from bakery.sim.wait import wait_until
from bakery.stemcell import build_stemcell
from tests.stemcell.conftest import debian_image, needs_agent_and_monit
from tests.support.sites import image_of_stemcell, no_progress, one_pi_site

TOOLS = (*REQUIRED_TOOLS, "debugfs", "pigz")
AGENT_SETTINGS = {"agent_id": "agent-1", "mbus": "nats://10.0.0.6:4222", "disks": {}}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.root,
    pytest.mark.tools(*NETNS_TOOLS, *TOOLS),
    needs_agent_and_monit,
]


@pytest.fixture
def stemcell_image(tmp_path: Path, agent: Path, monit_source: Path) -> Path:
    """The ``image`` of a freshly built stemcell, as the director hands it to the CPI."""
    pi_os = debian_image(tmp_path / "raspios.img")
    out = tmp_path / "stemcell.tgz"
    build_stemcell(pi_os, agent, out, monit_source=monit_source, name="bosh-bakery", version="1")
    return image_of_stemcell(out, tmp_path / "unpacked")


@pytest.fixture
def site(tmp_path: Path):
    with one_pi_site(tmp_path) as running:
        yield running


def test_the_stemcell_image_boots_a_pi_with_the_agents_in_its_root(
    site: SimulatedSite, stemcell_image: Path
):
    site.api.upload("/bakeforms/bosh-bakery-1", stemcell_image, replace=False, progress=no_progress)

    bake = site.api.post(
        "/bakes",
        {"bakeform": "bosh-bakery-1", "hostname": "stemcell-pi", "agent_settings": AGENT_SETTINGS},
    )

    pi = site.pis[0]
    wait_until(lambda: pi.state in ("booted", "failed"), timeout=120, what="the Pi's boot")
    assert (pi.state, pi.reason) == ("booted", "")
    assert pi.hostname == "stemcell-pi"
    root = site.options.root / "bakes" / bake["id"] / "root"
    config = json.loads((root / "var/vcap/bosh/agent.json").read_text())
    settings_path = config["Infrastructure"]["Settings"]["Sources"][0]["SettingsPath"]
    # Bakery keeps the persistent disks it attached in the settings the agent reads.
    expected = {**AGENT_SETTINGS, "disks": {"persistent": {}}}
    assert json.loads((root / settings_path.lstrip("/")).read_text()) == expected
    assert (root / "etc/systemd/system/timers.target.wants/bakery-disk-agent.timer").is_symlink()
    assert os.access(root / "usr/local/sbin/bakery-disk-agent", os.X_OK)
