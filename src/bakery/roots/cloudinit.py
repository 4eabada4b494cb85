"""cloud-init on a netbooted Pi: the bake's NoCloud seed in its root, and the datasource
pinned to it.

Images with cloud-init (Raspberry Pi OS since trixie, Ubuntu) look for their seed on the SD
card's boot partition, or poll a metadata service at 169.254.169.254; a Pi booted from an
NFS root has neither and waits for minutes (hypriot/image-builder-rpi#250). So a bake of
such an image gets a seed in its root, where cloud-init's NoCloud datasource looks first
(``/var/lib/cloud/seed/nocloud``): ``meta-data`` with the bake id as ``instance-id`` (each
bake is a new instance: per-instance modules run again, as the seasoning gives each bake
its own identity) and the hostname, and ``user-data``, the bake's own or an empty
``#cloud-config``. ``/etc/cloud/cloud.cfg.d/99-bakery.cfg`` pins the datasource to it and
leaves the network to the kernel's DHCP: cloud-init rewriting the interface the root is
mounted over would cut the Pi off its root.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from .. import identifiers
from .confined import is_regular_file, write_in_root

SEED_DIR = "var/lib/cloud/seed/nocloud"
PIN_FILE = "etc/cloud/cloud.cfg.d/99-bakery.cfg"
#: What tells a root has cloud-init (the program every distribution installs).
CLOUD_INIT_PROGRAM = "usr/bin/cloud-init"
#: The user-data formats accepted: cloud-config (YAML, checked here) and a script.
CLOUD_CONFIG_HEADER = "#cloud-config"
SCRIPT_HEADER = "#!"
EMPTY_USER_DATA = CLOUD_CONFIG_HEADER + "\n"
PIN = (
    "# Written by Bakery: this Pi boots a bake over NFS; its seed is in the root.\n"
    "datasource_list: [NoCloud, None]\n"
    "network:\n"
    "  config: disabled\n"
)


def check_user_data(text: str) -> None:
    """ValueError saying what is wrong with ``text`` as user-data: a ``#cloud-config``
    must be a YAML mapping (a syntax error names its line and column), anything else a
    ``#!`` script."""
    first_line = text.split("\n", 1)[0].strip()
    if first_line.startswith(SCRIPT_HEADER):
        return
    if first_line != CLOUD_CONFIG_HEADER:
        raise ValueError(
            f"must start with a {CLOUD_CONFIG_HEADER!r} line (YAML) or {SCRIPT_HEADER!r} (a script)"
        )
    try:
        document = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ValueError(f"is not valid YAML: {where}{exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"is not valid YAML: {exc}") from None
    if document is not None and not isinstance(document, dict):
        raise ValueError(f"a {CLOUD_CONFIG_HEADER} must be a mapping of modules to settings")


def seed_cloud_init(root: Path, *, instance_id: str, hostname: str, user_data: str | None) -> bool:
    """Write the NoCloud seed and the datasource pin into ``root`` if it has cloud-init
    or ``user_data`` is given; whether it did. ``user_data`` must have passed
    ``check_user_data``; it may hold secrets, so its file is root's alone."""
    if user_data is None and not is_regular_file(root, CLOUD_INIT_PROGRAM):
        return False
    hostname = identifiers.hostname(hostname)
    instance_id = identifiers.object_id(instance_id)
    meta_data = f"instance-id: {instance_id}\nlocal-hostname: {hostname}\n"
    write_in_root(root, f"{SEED_DIR}/meta-data", meta_data.encode())
    user_data_bytes = (user_data or EMPTY_USER_DATA).encode()
    write_in_root(root, f"{SEED_DIR}/user-data", user_data_bytes, mode=0o600)
    write_in_root(root, PIN_FILE, PIN.encode())
    return True
