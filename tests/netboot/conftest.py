"""What the netboot tests share: a data dir whose exports are a file (read, never
served), and one Ethernet segment between two network namespaces."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bakery.config import Settings, load_settings
from tests.support import netns

#: The server's address on the segment (proxy DHCP, TFTP and NFS server).
SERVER_IP = "10.99.0.1"


@pytest.fixture
def tftp_settings(tmp_path) -> Settings:
    """SQLite only: the API tests cover PostgreSQL; these are about the wire."""
    (tmp_path / "firmware").mkdir()
    return load_settings(
        environ={},
        root=tmp_path / "data",
        database_url=f"sqlite:///{tmp_path / 'bakery.db'}",
        power_on_gap=0,
        nfs_backend="ganesha",
        exports_file=str(tmp_path / "exports.conf"),
        firmware_dir=str(tmp_path / "firmware"),
        tftp_retries=2,
    )


@pytest.fixture
def wire() -> Iterator[tuple[netns.Namespace, netns.Namespace]]:
    """(server side with ``SERVER_IP``, Pi side without an address) of one segment."""
    with netns.joined_namespaces(
        netns.End("bk-srv", f"{SERVER_IP}/24"), netns.End("bk-pi")
    ) as namespaces:
        yield namespaces
