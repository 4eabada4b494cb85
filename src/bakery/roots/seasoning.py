"""Seasoning: giving a freshly cloned root its own identity (hostname, machine-id, SSH
host keys) and the files a netbooted Pi needs (fstab without the SD card, resolv.conf)."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import cast

from bakery import identifiers

from .confined import is_regular_file, open_in_root, read_in_root, write_in_root
from .errors import SeasoningError

#: SSH host key types ssh-keygen can regenerate; any other ``ssh_host_*_key`` is only removed.
SSH_KEY_TYPES = ("rsa", "ecdsa", "ed25519", "dsa")
#: Generated when an image ships no host key (Raspberry Pi OS images don't). RSA is left
#: out: it costs ~0.6 s per bake against ~5 ms for these two, and every current client
#: accepts ed25519.
DEFAULT_SSH_KEY_TYPES = ("ed25519", "ecdsa")
SSH_HOST_KEY_RE = re.compile(r"^ssh_host_([a-z0-9]+)_key(\.pub)?$")

#: Largest file seasoning will read back from a root (hosts, fstab): these are small text
#: files, and a hostile image must not make the server read gigabytes.
#: fstab mount points that are partitions of the Pi's SD card when mounted by UUID.
SD_CARD_MOUNT_POINTS = ("/", "/boot", "/boot/firmware")
SD_CARD_DEVICE_RE = re.compile(r"^(PARTUUID=.*|LABEL=(rootfs|bootfs)|/dev/mmcblk.*)$")

DEFAULT_HOSTS = "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n"


def season_root(root: Path, *, hostname: str, resolv_conf: str) -> None:
    """Give a freshly cloned root its own identity (pi-netboot.md §3.3).

    Each clone of a bakeform starts with the image's hostname, machine-id and SSH host
    keys; two Pis sharing them confuse DHCP, journald, and every SSH client. The SD card
    lines of fstab would make systemd wait for a device a netbooted Pi lacks, and
    NetworkManager won't write resolv.conf for an NFS-rooted Pi.

    Symlinked directories in the root raise SeasoningError; a symlink in place of a file
    seasoning writes (``/etc/hostname`` -> ``/etc/shadow``) is replaced by a regular file.
    Seasoning again gives the root a new identity again.
    """
    hostname = identifiers.hostname(hostname)
    write_in_root(root, "etc/hostname", f"{hostname}\n".encode())
    _season_hosts(root, hostname)
    _season_machine_id(root)
    _season_ssh_host_keys(root, hostname)
    _season_fstab(root)
    write_in_root(root, "etc/resolv.conf", resolv_conf.encode())


def _season_hosts(root: Path, hostname: str) -> None:
    text = _read_text(root, "etc/hosts")
    write_in_root(root, "etc/hosts", hosts_with_hostname(text or DEFAULT_HOSTS, hostname).encode())


def hosts_with_hostname(hosts: str, hostname: str) -> str:
    """`hosts` with its 127.0.1.1 line naming `hostname` (Debian's convention for the
    machine's own name), added after the localhost line if the image has none."""
    own_line = f"127.0.1.1\t{hostname}"
    lines = hosts.splitlines()
    if any(_first_field(line) == "127.0.1.1" for line in lines):
        lines = [own_line if _first_field(line) == "127.0.1.1" else line for line in lines]
    else:
        localhost = [i for i, line in enumerate(lines) if _first_field(line) == "127.0.0.1"]
        lines.insert(localhost[0] + 1 if localhost else len(lines), own_line)
    return "\n".join(lines) + "\n"


def _season_machine_id(root: Path) -> None:
    """A new random id; dbus keeps its own copy in older images (else a symlink to it)."""
    machine_id = f"{secrets.token_hex(16)}\n".encode()
    write_in_root(root, "etc/machine-id", machine_id, mode=0o444)
    if is_regular_file(root, "var/lib/dbus/machine-id"):
        write_in_root(root, "var/lib/dbus/machine-id", machine_id, mode=0o444)


def _season_ssh_host_keys(root: Path, hostname: str) -> None:
    """Replace the image's host keys by new ones of the same types. Images without
    ``/etc/ssh`` have no SSH server and get none."""
    try:
        with open_in_root(root, "etc/ssh") as ssh_dir:
            old_keys = [name for name in os.listdir(ssh_dir) if SSH_HOST_KEY_RE.match(name)]
            for name in old_keys:
                os.unlink(name, dir_fd=ssh_dir)
    except FileNotFoundError:
        return
    # old_keys holds only names this pattern matched
    present = {cast("re.Match[str]", SSH_HOST_KEY_RE.fullmatch(name))[1] for name in old_keys}
    key_types = [kind for kind in SSH_KEY_TYPES if kind in present] or DEFAULT_SSH_KEY_TYPES
    for name, data, mode in _generate_ssh_host_keys(key_types, comment=f"root@{hostname}"):
        write_in_root(root, f"etc/ssh/{name}", data, mode=mode)


def _generate_ssh_host_keys(
    key_types: list[str] | tuple[str, ...], *, comment: str
) -> list[tuple[str, bytes, int]]:
    """New host keys as ``(file name, contents, mode)``, private and public.

    ssh-keygen writes by path, so it works in a private directory off the root; the
    types are generated in parallel because RSA alone takes most of a second.
    """
    keygen = shutil.which("ssh-keygen")
    if keygen is None:
        raise SeasoningError("ssh-keygen not found: install openssh-client")
    with tempfile.TemporaryDirectory(prefix="bakery-hostkeys-") as tmp:
        jobs = {
            kind: subprocess.Popen(
                [keygen, "-q", "-N", "", "-t", kind, "-C", comment, "-f", _key_path(tmp, kind)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            for kind in key_types
        }
        errors = {kind: job.communicate()[1] for kind, job in jobs.items()}
        for kind, job in jobs.items():
            if job.returncode != 0:
                raise SeasoningError(f"ssh-keygen -t {kind}: {errors[kind].decode().strip()}")
        return [key for kind in key_types for key in _read_key_pair(tmp, kind)]


def _key_path(directory: str, kind: str) -> str:
    return os.path.join(directory, f"ssh_host_{kind}_key")


def _read_key_pair(directory: str, kind: str) -> list[tuple[str, bytes, int]]:
    private = Path(_key_path(directory, kind))
    public = private.with_name(private.name + ".pub")
    return [(private.name, private.read_bytes(), 0o600), (public.name, public.read_bytes(), 0o644)]


def _season_fstab(root: Path) -> None:
    text = _read_text(root, "etc/fstab")
    if text is not None:
        write_in_root(root, "etc/fstab", fstab_without_sd_card(text).encode())


def fstab_without_sd_card(fstab: str) -> str:
    """`fstab` minus the lines mounting the SD card (a netbooted Pi has none, and systemd
    would wait for it); proc, tmpfs, NFS lines and comments stay."""
    kept = [line for line in fstab.splitlines() if not _mounts_sd_card(line)]
    return "\n".join(kept) + "\n" if kept else ""


def _mounts_sd_card(line: str) -> bool:
    fields = line.split()
    if not fields or fields[0].startswith("#"):
        return False
    if SD_CARD_DEVICE_RE.match(fields[0]):
        return True
    if not fields[0].startswith("UUID=") or len(fields) < 2:
        return False
    return (fields[1].rstrip("/") or "/") in SD_CARD_MOUNT_POINTS


def _first_field(line: str) -> str:
    fields = line.split()
    return fields[0] if fields else ""


def _read_text(root: Path, relpath: str) -> str | None:
    data = read_in_root(root, relpath)
    return None if data is None else data.decode("utf-8", errors="surrogateescape")
