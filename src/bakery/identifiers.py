"""What a serial, a name or an ID may look like.

Every value a user gives that later becomes part of a path, an exports line, a
ganesha block or a command argument is checked here first, so a hostile value is
refused at the door and never has to be escaped further down.
"""

from __future__ import annotations

import ipaddress
import re
import uuid

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
HOSTNAME_RE = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$")
ID_RE = re.compile(r"^[0-9a-f]{32}$")
MOUNT_POINT_RE = re.compile(r"^(/[A-Za-z0-9._-]+)+$")
#: Where a disk may not be mounted on its Pi: the root's own system trees, which a disk
#: would hide (and /run, where the disk agent keeps its own mounts).
SYSTEM_TREES = (
    *("/bin", "/boot", "/dev", "/etc", "/lib", "/proc", "/run", "/sbin", "/sys", "/usr"),
    *("/var/run", "/var/lock"),  # links to /run on Debian and Raspberry Pi OS
)


class InvalidIdentifier(ValueError):
    """A value does not have the shape its kind requires."""


def serial(value: str) -> str:
    """A Pi serial: 8 hex digits, as the Pi prints them (lower case).

    Upper case is accepted and folded; shorter serials are zero-padded as the
    bootloader does (it compares serials as integers)."""
    text = str(value).strip().lower()
    if text.startswith("0x"):
        text = text[2:]
    if not re.fullmatch(r"[0-9a-f]{1,8}", text):
        raise InvalidIdentifier(f"serial {value!r} is not 8 hex digits")
    return text.rjust(8, "0")


def name(value: str, what: str = "name") -> str:
    """A bakeform or token name: letters, digits, dot, dash, underscore; no leading dot."""
    if not isinstance(value, str) or not NAME_RE.fullmatch(value) or ".." in value:
        raise InvalidIdentifier(
            f"{what} {value!r} must be 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return value


def hostname(value: str) -> str:
    """A single DNS label, lower case."""
    if not isinstance(value, str) or not HOSTNAME_RE.fullmatch(value):
        raise InvalidIdentifier(f"hostname {value!r} must be one DNS label: a-z, 0-9 and '-'")
    return value


def mac(value: str) -> str:
    """A MAC address, normalised to lower case with colons."""
    text = str(value).strip().lower().replace("-", ":")
    if not MAC_RE.fullmatch(text):
        raise InvalidIdentifier(f"MAC address {value!r} is not six colon-separated hex bytes")
    return text


def ip(value: str) -> str:
    """A single host address (IPv4 or IPv6), never a network or a wildcard."""
    text = str(value).strip()
    if "%" in text:
        raise InvalidIdentifier(f"address {value!r}: scoped addresses are not accepted")
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise InvalidIdentifier(f"address {value!r} is not a single IP address") from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped  # an IPv4 client seen by a dual-stack socket
    if address.is_unspecified or address.is_multicast:
        raise InvalidIdentifier(f"address {value!r} is not one host's address")
    return str(address)


def label(value: str) -> str:
    if not isinstance(value, str) or not LABEL_RE.fullmatch(value):
        raise InvalidIdentifier(f"label {value!r} must be 1-63 letters, digits, '.', '_', '/', '-'")
    return value


#: What an API token may be given: everything; the fleet; what the BOSH CPI calls; reading.
ROLES = ("admin", "operator", "cpi", "viewer", "host")


def role(value: str) -> str:
    if value not in ROLES:
        raise InvalidIdentifier(f"role {value!r} is not one of {', '.join(ROLES)}")
    return value


def object_id(value: str, what: str = "id") -> str:
    """A bake or disk id: 32 lower-case hex digits (a UUID4 without dashes)."""
    if not isinstance(value, str) or not ID_RE.fullmatch(value):
        raise InvalidIdentifier(f"{what} {value!r} is not a valid id")
    return value


def mount_point(value: str) -> str:
    """Where a disk is mounted on its Pi: an absolute path of plain components (no '.',
    '..', blanks or doubled slashes), at most 255 bytes, outside the system trees.

    The disk agent reads it from a space-separated list and mounts over it as root, so
    the shape is the whole defence; the shell script checks the same shape again."""
    if not isinstance(value, str) or len(value) > 255 or not MOUNT_POINT_RE.fullmatch(value):
        raise InvalidIdentifier(
            f"mount point {value!r} must be an absolute path of letters, digits, '.', '_' "
            "and '-' components"
        )
    if any(part in (".", "..") for part in value.split("/")):
        raise InvalidIdentifier(f"mount point {value!r} must not have '.' or '..' components")
    for tree in SYSTEM_TREES:
        if value == tree or value.startswith(tree + "/"):
            raise InvalidIdentifier(f"mount point {value!r} is inside the system tree {tree}")
    return value


def new_id() -> str:
    return uuid.uuid4().hex
