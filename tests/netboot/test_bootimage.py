"""netboot.bootimage: a bake's boot.img (a FAT image of its boot files, made with mtools)
and boot.sig (RSA-2048 over SHA-256, as rpi-eeprom-digest writes it), checked with
openssl and with the simulated bootloader's own verifier."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import stat
import subprocess
from pathlib import Path

import pytest

from bakery.netboot import bootimage
from bakery.netboot.bootfiles import BootTarget
from bakery.sim import http_boot
from bakery.sim.http_boot import EepromKey, SignatureRefused

pytestmark = pytest.mark.tools("mkfs.fat", "mcopy", "mtype", "openssl")

CMDLINE = "console=serial0,115200 root=/dev/nfs nfsroot=10.0.0.1:/data/bakes/x/root,vers=3,tcp\n"
KERNEL = os.urandom(3 << 20)


@pytest.fixture(scope="module")
def key_file(tmp_path_factory) -> Path:
    key = tmp_path_factory.mktemp("key") / "http-boot-key.pem"
    bootimage.ensure_key(key)
    return key


@pytest.fixture
def target(tmp_path) -> BootTarget:
    boot = tmp_path / "bake/boot"
    (boot / "overlays").mkdir(parents=True)
    (boot / "kernel8.img").write_bytes(KERNEL)
    (boot / "bcm2711-rpi-4-b.dtb").write_bytes(b"dtb" * 1000)
    (boot / "overlays/vc4-kms-v3d.dtbo").write_bytes(b"overlay")
    (boot / "config.txt").write_text("arm_64bit=1\nauto_initramfs=1\ndtoverlay=vc4-kms-v3d\n")
    (boot / "cmdline.txt").write_text("console=serial0,115200 root=PARTUUID=1234-02 rootwait\n")
    return BootTarget("1234abcd", "b" * 32, boot, CMDLINE, http_dir=tmp_path / "bake/http")


def made(target: BootTarget, key_file: Path) -> bootimage.BootImage:
    return bootimage.boot_image(target, key_file, ["auto_initramfs"])


def files_of(image: Path, *names: str) -> dict[str, bytes | None]:
    return http_boot.read_files(image.read_bytes(), list(names))


def test_the_image_holds_the_boot_files_with_the_bakes_own_cmdline_and_config(target, key_file):
    image = made(target, key_file).image

    found = files_of(image, "kernel8.img", "overlays/vc4-kms-v3d.dtbo", "cmdline.txt", "config.txt")

    assert found["kernel8.img"] == KERNEL
    assert found["overlays/vc4-kms-v3d.dtbo"] == b"overlay"
    assert found["cmdline.txt"] == CMDLINE.encode(), "the NFS cmdline, not the SD card's"
    assert found["config.txt"] == b"arm_64bit=1\ndtoverlay=vc4-kms-v3d\n"
    assert image.stat().st_size <= bootimage.MAX_IMAGE_BYTES
    assert stat.S_IMODE(image.parent.stat().st_mode) == 0o700


def test_the_signature_is_what_rpi_eeprom_digest_writes_and_openssl_verifies_it(
    target, key_file, tmp_path
):
    result = made(target, key_file)
    sha, ts, rsa = result.signature.read_text().splitlines()
    public = tmp_path / "public.pem"
    public.write_text(bootimage.public_key_pem(key_file))
    (tmp_path / "sig.bin").write_bytes(bytes.fromhex(rsa.removeprefix("rsa2048: ")))

    signature_file = tmp_path / "sig.bin"
    check = subprocess.run(
        ["openssl", "dgst", "-sha256", "-verify", str(public), "-signature", str(signature_file)]
        + [str(result.image)],
        capture_output=True,
        text=True,
    )

    assert check.stdout.strip() == "Verified OK", check.stderr
    assert len(sha) == 64 and ts.startswith("ts: ") and int(ts[4:]) > 0
    http_boot.verify(result.image.read_bytes(), result.signature.read_text(), eeprom(key_file))


def eeprom(key_file: Path) -> EepromKey:
    return EepromKey.from_pem(bootimage.public_key_pem(key_file))


def test_the_bootloader_check_refuses_a_changed_image_and_another_keys_signature(
    target, key_file, tmp_path
):
    result = made(target, key_file)
    image, signature = result.image.read_bytes(), result.signature.read_text()
    other_key = tmp_path / "other.pem"
    bootimage.ensure_key(other_key)
    tampered = bytearray(image)
    tampered[len(image) // 2] ^= 0xFF
    sha = signature.splitlines()[0]
    forged = signature.replace(sha, hashlib.sha256(bytes(tampered)).hexdigest())

    with pytest.raises(SignatureRefused, match="sha256 mismatch"):
        http_boot.verify(bytes(tampered), signature, eeprom(key_file))
    with pytest.raises(SignatureRefused, match="does not verify"):
        http_boot.verify(bytes(tampered), forged, eeprom(key_file))
    with pytest.raises(SignatureRefused, match="does not verify|not one of this key's"):
        http_boot.verify(image, signature, eeprom(other_key))
    with pytest.raises(SignatureRefused, match="no rsa2048"):
        http_boot.verify(image, sha + "\n", eeprom(key_file))


def test_unchanged_boot_files_are_not_rebuilt_and_a_changed_cmdline_is(target, key_file):
    first = made(target, key_file)
    before = first.image.stat().st_ino, first.image.stat().st_mtime_ns

    again = made(target, key_file)
    assert (again.image.stat().st_ino, again.image.stat().st_mtime_ns) == before

    moved = dataclasses.replace(target, cmdline=CMDLINE.replace("10.0.0.1", "10.0.0.2"))
    rebuilt = made(moved, key_file)
    assert files_of(rebuilt.image, "cmdline.txt")["cmdline.txt"] == moved.cmdline.encode()
    http_boot.verify(rebuilt.image.read_bytes(), rebuilt.signature.read_text(), eeprom(key_file))


def test_a_replaced_boot_file_is_rebuilt_into_the_image(target, key_file):
    made(target, key_file)
    replacement = target.boot_dir / ".new-kernel"
    replacement.write_bytes(b"new kernel")
    os.replace(replacement, target.boot_dir / "kernel8.img")

    rebuilt = made(target, key_file)

    assert files_of(rebuilt.image, "kernel8.img")["kernel8.img"] == b"new kernel"


def test_boot_files_beyond_the_bootloaders_limit_are_refused_and_leave_nothing(target, key_file):
    with open(target.boot_dir / "initramfs8", "wb") as huge:
        huge.truncate(bootimage.MAX_IMAGE_BYTES)

    with pytest.raises(bootimage.BootImageError, match="96 MiB"):
        made(target, key_file)

    assert target.http_dir is not None
    assert not target.http_dir.exists() or os.listdir(target.http_dir) == []


def test_a_bake_gone_meanwhile_gets_no_image_made(target, key_file):
    assert target.http_dir is not None
    gone = dataclasses.replace(target, http_dir=target.http_dir.parent.parent / "unbaked/http")

    with pytest.raises(FileNotFoundError):
        made(gone, key_file)

    assert not (target.http_dir.parent.parent / "unbaked").exists()


def test_the_signing_key_is_made_private_and_rsa_2048(tmp_path):
    key = tmp_path / "keys/http-boot-key.pem"

    bootimage.ensure_key(key)
    bootimage.ensure_key(key)  # a second start keeps it

    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert bootimage.key_bits(key) == 2048
    assert bootimage.public_key_pem(key).startswith("-----BEGIN PUBLIC KEY-----")
    assert "PRIVATE" not in bootimage.public_key_pem(key)


def test_a_key_the_bootloader_cannot_use_is_refused(tmp_path):
    small = tmp_path / "small.pem"
    subprocess.run(
        ["openssl", "genrsa", "-out", str(small), "1024"], check=True, capture_output=True
    )
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key\n")

    with pytest.raises(bootimage.BootImageError, match="1024-bit"):
        bootimage.ensure_key(small)
    with pytest.raises(bootimage.BootImageError, match="not an RSA private key"):
        bootimage.ensure_key(garbage)
