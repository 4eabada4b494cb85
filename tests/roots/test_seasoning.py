"""roots.seasoning (through roots.confined): each clone its own identity, an fstab and
resolv.conf for a netbooted Pi, and no write ever following a symlink out of the root."""

from __future__ import annotations

import os
import re
import shutil
import stat
from pathlib import Path

import pytest

from bakery.roots import (
    SeasoningError,
    fstab_without_sd_card,
    hosts_with_hostname,
    season_root,
)
from tests.roots.support import (
    ACL_WITH_NAMED_USER,
    RESOLV,
    file_digests,
    key_fingerprint,
    seasoned_clone,
)


@pytest.mark.root
def test_seasoning_sets_hostname_and_hosts_line(pi_base):
    clone = seasoned_clone(pi_base, "pi-01")

    assert (clone / "etc/hostname").read_text() == "pi-01\n"
    hosts = (clone / "etc/hosts").read_text()
    assert "127.0.1.1\tpi-01\n" in hosts
    assert "raspberrypi" not in hosts
    assert hosts.startswith("127.0.0.1\tlocalhost\n")


@pytest.mark.root
def test_each_clone_gets_its_own_machine_id(pi_base):
    first, second = seasoned_clone(pi_base, "pi-01"), seasoned_clone(pi_base, "pi-02")

    ids = {(root / "etc/machine-id").read_text() for root in (pi_base, first, second)}
    assert len(ids) == 3
    for root in (first, second):
        machine_id = (root / "etc/machine-id").read_text()
        assert re.fullmatch(r"[0-9a-f]{32}\n", machine_id)
        assert (root / "var/lib/dbus/machine-id").read_text() == machine_id


@pytest.mark.root
def test_each_clone_gets_fresh_valid_ssh_host_keys(pi_base):
    first, second = seasoned_clone(pi_base, "pi-01"), seasoned_clone(pi_base, "pi-02")

    for kind in ("ed25519", "ecdsa"):
        key = f"etc/ssh/ssh_host_{kind}_key"
        fingerprints = {key_fingerprint(root / key) for root in (pi_base, first, second)}
        assert len(fingerprints) == 3
        for root in (first, second):
            private, public = os.stat(root / key), os.stat(root / f"{key}.pub")
            assert (stat.S_IMODE(private.st_mode), private.st_uid, private.st_gid) == (0o600, 0, 0)
            assert stat.S_IMODE(public.st_mode) == 0o644
            assert key_fingerprint(root / f"{key}.pub") == key_fingerprint(root / key)
            assert (root / f"{key}.pub").read_text().rstrip().endswith(f"root@{root.name}")
    assert sorted(p.name for p in (first / "etc/ssh").iterdir()) == sorted(
        p.name for p in (pi_base / "etc/ssh").iterdir()
    )


@pytest.mark.root
def test_image_without_host_keys_gets_ed25519_and_ecdsa(pi_base):
    for key in (pi_base / "etc/ssh").iterdir():
        key.unlink()

    clone = seasoned_clone(pi_base, "pi-01")

    assert sorted(p.name for p in (clone / "etc/ssh").iterdir()) == [
        "ssh_host_ecdsa_key",
        "ssh_host_ecdsa_key.pub",
        "ssh_host_ed25519_key",
        "ssh_host_ed25519_key.pub",
    ]


@pytest.mark.root
def test_seasoning_drops_sd_card_lines_from_fstab(pi_base):
    clone = seasoned_clone(pi_base, "pi-01")

    fstab = (clone / "etc/fstab").read_text()
    assert "PARTUUID" not in fstab
    assert fstab.startswith("proc ")
    assert "tmpfs /tmp tmpfs" in fstab
    assert "# a swapfile" in fstab


@pytest.mark.root
def test_seasoning_replaces_the_resolv_conf_symlink_with_the_configured_file(pi_base):
    clone = seasoned_clone(pi_base, "pi-01")

    resolv = clone / "etc/resolv.conf"
    assert not resolv.is_symlink()
    assert resolv.read_text() == RESOLV


@pytest.mark.root
def test_seasoning_twice_gives_a_new_identity_and_keeps_the_tree_sound(pi_base):
    clone = seasoned_clone(pi_base, "pi-01")
    machine_id = (clone / "etc/machine-id").read_text()

    season_root(clone, hostname="pi-02", resolv_conf=RESOLV)

    assert (clone / "etc/hostname").read_text() == "pi-02\n"
    assert (clone / "etc/hosts").read_text().count("127.0.1.1") == 1
    assert (clone / "etc/machine-id").read_text() != machine_id
    assert len(list((clone / "etc/ssh").iterdir())) == 4
    assert not [p for p in clone.rglob("*.bakery-*")]


def test_hosts_line_is_added_after_localhost_when_the_image_has_none():
    hosts = "127.0.0.1\tlocalhost\n::1\tlocalhost\n"

    assert hosts_with_hostname(hosts, "pi-07") == (
        "127.0.0.1\tlocalhost\n127.0.1.1\tpi-07\n::1\tlocalhost\n"
    )


def test_fstab_keeps_other_disks_but_drops_the_sd_card_by_any_name():
    fstab = (
        "proc /proc proc defaults 0 0\n"
        "UUID=1234-ABCD /boot/firmware vfat defaults 0 2\n"
        "UUID=0b8ef36e-1a6c-4b3e-9b8b-5a7b5b7d3f00 / ext4 defaults 0 1\n"
        "LABEL=rootfs / ext4 defaults 0 1\n"
        "/dev/mmcblk0p1 /boot vfat defaults 0 2\n"
        "UUID=aaaa-bbbb /srv/usb ext4 defaults,nofail 0 2\n"
        "server:/exports/data /data nfs defaults 0 0\n"
    )

    assert fstab_without_sd_card(fstab) == (
        "proc /proc proc defaults 0 0\n"
        "UUID=aaaa-bbbb /srv/usb ext4 defaults,nofail 0 2\n"
        "server:/exports/data /data nfs defaults 0 0\n"
    )


@pytest.mark.root
@pytest.mark.parametrize("target", ["absolute", "relative"])
def test_symlinked_etc_is_refused_and_nothing_outside_is_written(pi_base, host, target):
    shutil.rmtree(pi_base / "etc")
    link = str(host) if target == "absolute" else "../../../../../../../../" + str(host)
    (pi_base / "etc").symlink_to(link)
    before = file_digests(host)

    with pytest.raises(SeasoningError, match="symlink"):
        season_root(pi_base, hostname="pi-01", resolv_conf=RESOLV)

    assert file_digests(host) == before
    assert not list(host.glob(".*"))


@pytest.mark.root
def test_etc_linked_to_the_real_host_etc_is_refused_and_the_host_is_untouched(pi_base):
    host_files = [Path("/etc", name) for name in ("hostname", "hosts", "machine-id", "fstab")]
    before = {path: path.read_bytes() for path in host_files if path.is_file()}
    shutil.rmtree(pi_base / "etc")
    (pi_base / "etc").symlink_to("/etc")

    with pytest.raises(SeasoningError, match="symlink"):
        season_root(pi_base, hostname="pi-01", resolv_conf=RESOLV)

    assert {path: path.read_bytes() for path in before} == before
    assert not list(Path("/etc").glob(".*.bakery-*"))


@pytest.mark.root
def test_symlinked_ssh_directory_is_refused(pi_base, host):
    shutil.rmtree(pi_base / "etc/ssh")
    (pi_base / "etc/ssh").symlink_to(host / "ssh")
    before = file_digests(host)

    with pytest.raises(SeasoningError):
        season_root(pi_base, hostname="pi-01", resolv_conf=RESOLV)

    assert file_digests(host) == before
    assert sorted(p.name for p in (host / "ssh").iterdir()) == ["ssh_host_ed25519_key"]


@pytest.mark.root
def test_symlinked_files_are_replaced_inside_the_root_not_followed(pi_base, host):
    etc = pi_base / "etc"
    links = {
        "hostname": host / "shadow",
        "hosts": Path("../../../../../../../..", *host.parts[1:], "passwd"),
        "machine-id": host / "machine-id",
        "fstab": host / "fstab",
    }
    for name, target in links.items():
        (etc / name).unlink()
        (etc / name).symlink_to(target)
    before = file_digests(host)

    season_root(pi_base, hostname="pi-01", resolv_conf=RESOLV)

    assert file_digests(host) == before
    assert (etc / "hostname").read_text() == "pi-01\n"
    assert "secret" not in (etc / "hosts").read_text()
    assert not (etc / "hosts").is_symlink() and not (etc / "machine-id").is_symlink()


@pytest.mark.root
def test_files_seasoning_rewrites_keep_their_xattrs_and_a_replaced_symlink_passes_none(pi_base):
    etc = pi_base / "etc"
    os.setxattr(etc / "hosts", "system.posix_acl_access", ACL_WITH_NAMED_USER)
    os.setxattr(etc / "machine-id", "security.selinux", b"system_u:object_r:etc_t:s0\0")
    os.setxattr(etc / "resolv.conf", "trusted.link", b"the symlink's own", follow_symlinks=False)

    clone = seasoned_clone(pi_base, "pi-01")

    assert "127.0.1.1\tpi-01\n" in (clone / "etc/hosts").read_text()
    assert os.getxattr(clone / "etc/hosts", "system.posix_acl_access") == ACL_WITH_NAMED_USER
    label = os.getxattr(clone / "etc/machine-id", "security.selinux")
    assert label == b"system_u:object_r:etc_t:s0\0"
    assert (clone / "etc/resolv.conf").read_text() == RESOLV
    assert os.listxattr(clone / "etc/resolv.conf") == []
