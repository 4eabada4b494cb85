"""The BOSH agent's settings for a VM that is a bake on a Pi (bosh-cpi.md §3).

Bakery writes them into the bake's root (the stemcell's agent.json names that file as
its ``File`` settings source) and serves them from its metadata endpoint; the CPI only
builds the JSON. Choices, and why:

- Every network is ``preconfigured``: a Pi boots its root over NFS after the kernel's
  own DHCP (``ip=dhcp``), so the agent must not reconfigure the interface the root
  lives on. Non-vip networks carry the Pi's MAC, because a Pi's Wi-Fi is a second
  physical interface and the agent matches networks to interfaces by MAC.
- ``disks.system`` is ``/dev/nfs`` (the root device named in cmdline.txt); the agent
  accepts only a string there and never partitions it while an ephemeral disk exists.
- Disk hints are ``{"id": <cid>, "path": <device>}``, the device Bakery names in its disk
  answers (``/dev/disk/by-id/bakery-<cid>``, the link the disk agent on the Pi makes): the
  virtio resolver finds it by id (cids are 32 hex characters, over the 20 it needs) and
  the identity resolver by path. Bakery itself keeps the persistent disks of the
  settings it stores in step with what is attached, so the CPI never reads settings
  (and their secrets) back.
"""

from __future__ import annotations

from typing import Any

SYSTEM_DISK = "/dev/nfs"


def pi_networks(networks: dict[str, Any], mac: str | None) -> dict[str, Any]:
    """The director's networks, told they are already up on the Pi's own interface."""
    configured = {}
    for name, network in networks.items():
        network = {**network, "preconfigured": True}
        if network.get("type") != "vip" and mac:
            network["mac"] = mac
        configured[name] = network
    return configured


def build(
    *,
    agent_id: str,
    vm_cid: str,
    networks: dict[str, Any],
    env: dict[str, Any],
    ephemeral_disk: dict[str, Any] | None,
    mbus: str,
    ntp: list[str],
    blobstore: dict[str, Any],
) -> dict[str, Any]:
    """The full settings of a new VM (no persistent disk is attached yet)."""
    disks = {"system": SYSTEM_DISK, "persistent": {}}
    if ephemeral_disk:
        disks["ephemeral"] = {"id": ephemeral_disk["id"], "path": ephemeral_disk["device"]}
    return {
        "agent_id": agent_id,
        "vm": {"name": vm_cid, "id": vm_cid},
        "mbus": mbus,
        "ntp": ntp,
        "blobstore": blobstore,
        "networks": networks,
        "disks": disks,
        "env": env,
        "trusted_certs": "",
    }
