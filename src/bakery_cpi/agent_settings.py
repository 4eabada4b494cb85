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
- Disk hints are ``{"id": <cid>, "path": /dev/disk/by-id/bakery-<cid>}``: the disk agent
  on the Pi makes that link, the virtio resolver finds it by id (cids are 32 hex
  characters, over the 20 it needs) and the identity resolver by path.
"""

from __future__ import annotations

from typing import Any

HINT_PREFIX = "/dev/disk/by-id/bakery-"
SYSTEM_DISK = "/dev/nfs"


def disk_hint(disk_id: str) -> str:
    """Where the disk agent on the Pi links the disk: what ``attach_disk`` returns."""
    return HINT_PREFIX + disk_id


def disk_settings(disk_id: str) -> dict[str, Any]:
    return {"id": disk_id, "path": disk_hint(disk_id)}


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
    ephemeral_disk_id: str | None,
    mbus: str,
    ntp: list[str],
    blobstore: dict[str, Any],
) -> dict[str, Any]:
    """The full settings of a new VM (no persistent disk is attached yet)."""
    disks = {"system": SYSTEM_DISK, "persistent": {}}
    if ephemeral_disk_id:
        disks["ephemeral"] = disk_settings(ephemeral_disk_id)
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


def with_persistent_disks(settings: dict[str, Any], disk_ids: list[str]) -> dict[str, Any]:
    """``settings`` naming exactly ``disk_ids`` as the attached persistent disks."""
    disks = {**settings.get("disks", {}), "persistent": {d: disk_settings(d) for d in disk_ids}}
    return {**settings, "disks": disks}
