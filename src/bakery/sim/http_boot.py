"""What a Pi 4 or Pi 5 bootloader in HTTP boot mode does with its EEPROM settings: fetch
``boot.img`` and ``boot.sig`` from ``http://<HTTP_HOST>:<HTTP_PORT>/<HTTP_PATH>/``, refuse
an image whose signature the EEPROM's public key does not verify, and boot from the FAT
image as from a boot partition (pi-http-boot).

The check is written out here (RSA-2048, PKCS#1 v1.5, SHA-256, the only kind the
bootloader supports) rather than asked of openssl, so that it is not the same code that
signed: an image Bakery signed wrongly fails here as it would on a Pi.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..images.fat import MTOOLS_ENV

#: DER of the DigestInfo header for SHA-256 (RFC 8017 §9.2, note 1).
SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")
KEY_BYTES = 256


class SignatureRefused(Exception):
    """boot.sig does not vouch for boot.img under the EEPROM's key."""


@dataclass(frozen=True)
class EepromKey:
    """The public key ``rpi-eeprom-config --pubkey`` writes into the EEPROM."""

    modulus: int
    exponent: int

    @classmethod
    def from_pem(cls, pem: str) -> EepromKey:
        text = subprocess.run(
            ["openssl", "rsa", "-pubin", "-noout", "-text"],
            input=pem,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        hex_digits = re.search(r"Modulus:\s*\n((?:\s+[0-9a-f:]+\n)+)", text)
        exponent = re.search(r"Exponent: (\d+)", text)
        if hex_digits is None or exponent is None:
            raise ValueError("not an RSA public key")
        modulus = int(re.sub(r"[\s:]", "", hex_digits[1]), 16)
        if modulus.bit_length() != KEY_BYTES * 8:
            raise ValueError("the bootloader takes RSA-2048 keys only")
        return cls(modulus, int(exponent[1]))


@dataclass(frozen=True)
class HttpBootSettings:
    """The EEPROM lines of HTTP boot: BOOT_ORDER with a 7, HTTP_HOST, HTTP_PORT,
    HTTP_PATH, and the public key."""

    host: str
    port: int
    path: str
    key: EepromKey


def verify(image: bytes, signature: str, key: EepromKey) -> None:
    """Check boot.sig as the bootloader does; SignatureRefused says what is wrong."""
    lines = dict(_sig_fields(signature))
    digest = hashlib.sha256(image).digest()
    if lines.get("sha256") != digest.hex():
        raise SignatureRefused("boot.sig names another image (sha256 mismatch)")
    try:
        value = int(lines["rsa2048"], 16)
    except (KeyError, ValueError):
        raise SignatureRefused("boot.sig has no rsa2048 signature") from None
    if value >= key.modulus:
        raise SignatureRefused("the signature is not one of this key's")
    decoded = pow(value, key.exponent, key.modulus).to_bytes(KEY_BYTES, "big")
    payload = SHA256_DIGEST_INFO + digest
    expected = b"\x00\x01" + b"\xff" * (KEY_BYTES - 3 - len(payload)) + b"\x00" + payload
    if not hmac.compare_digest(decoded, expected):
        raise SignatureRefused("the signature does not verify with the EEPROM's public key")


def _sig_fields(signature: str) -> list[tuple[str, str]]:
    """boot.sig's lines: the bare sha256 first, then ``key: value`` lines."""
    lines = signature.strip().splitlines()
    fields = [("sha256", lines[0].strip())] if lines else []
    for line in lines[1:]:
        key, _, value = line.partition(":")
        fields.append((key.strip(), value.strip()))
    return fields


def fetch(settings: HttpBootSettings, name: str, source: str, timeout: float) -> bytes:
    """GET ``name`` under the EEPROM's path, sent from ``source``; a status other than
    200 is an OSError, as the bootloader gives up on it (it follows no redirects)."""
    connection = http.client.HTTPConnection(
        settings.host, settings.port, timeout=timeout, source_address=(source, 0)
    )
    try:
        connection.request("GET", f"/{settings.path}/{name}")
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    if response.status != 200:
        raise OSError(f"HTTP {response.status} for {name}")
    return body


def read_files(image: bytes, names: list[str]) -> dict[str, bytes | None]:
    """Files of the FAT image (each None where it holds no such file), read with mtools
    as the bootloader reads its ramdisk."""
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "boot.img"
        path.write_bytes(image)
        found: dict[str, bytes | None] = {}
        for name in names:
            result = subprocess.run(
                ["mtype", "-i", str(path), f"::/{name}"], capture_output=True, env=MTOOLS_ENV
            )
            found[name] = result.stdout if result.returncode == 0 else None
        return found
