"""roots.cloudinit: user-data checked before a bake, and a NoCloud seed with the datasource
pinned in every root that has cloud-init, so an NFS-booted Pi never waits on a metadata
service."""

from __future__ import annotations

import os
import stat

import pytest
import yaml

from bakery.roots import SeasoningError, check_user_data, seed_cloud_init
from bakery.roots.cloudinit import PIN_FILE, SEED_DIR

BAKE_ID = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def cloud_root(tmp_path):
    """A root with cloud-init installed, as Raspberry Pi OS trixie and Ubuntu have it."""
    root = tmp_path / "root"
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/cloud-init").write_text("#!/usr/bin/python3\n")
    (root / "etc/cloud/cloud.cfg.d").mkdir(parents=True)
    return root


@pytest.mark.parametrize(
    "text",
    [
        "#cloud-config\npackages: [k3s]\nruncmd:\n  - [sh, -c, 'echo up']\n",
        "#cloud-config\n",
        "#!/bin/sh\necho hello from user-data\n",
    ],
    ids=["cloud-config", "empty-cloud-config", "script"],
)
def test_cloud_config_and_scripts_are_accepted(text):
    check_user_data(text)


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("#cloud-config\nusers:\n  - name: pi\n    groups: [sudo\nruncmd: []\n", "line 5"),
        ("#cloud-config\npackages:\n\t- k3s\n", "line 3"),
        ("#cloud-config\n- just\n- a list\n", "must be a mapping"),
        ("packages: [k3s]\n", "#cloud-config"),
        ("", "#cloud-config"),
    ],
    ids=["unclosed-list", "tab-indent", "not-a-mapping", "no-header", "empty"],
)
def test_bad_user_data_is_refused_saying_where(text, said):
    with pytest.raises(ValueError, match=said):
        check_user_data(text)


def test_the_seed_names_the_bake_and_pins_the_datasource(cloud_root):
    user_data = "#cloud-config\nruncmd:\n  - [touch, /run/seeded]\n"

    seeded = seed_cloud_init(
        cloud_root, instance_id=BAKE_ID, hostname="pi-0000beef", user_data=user_data
    )

    assert seeded

    seed = cloud_root / SEED_DIR
    meta = yaml.safe_load((seed / "meta-data").read_text())
    assert meta == {"instance-id": BAKE_ID, "local-hostname": "pi-0000beef"}
    assert (seed / "user-data").read_text() == user_data
    assert stat.S_IMODE(os.stat(seed / "user-data").st_mode) == 0o600
    pin = yaml.safe_load((cloud_root / PIN_FILE).read_text())
    assert pin == {"datasource_list": ["NoCloud", "None"], "network": {"config": "disabled"}}
    assert not (seed / "network-config").exists()  # the kernel's DHCP keeps the network


def test_a_cloud_init_image_without_user_data_still_gets_a_seed(cloud_root):
    assert seed_cloud_init(cloud_root, instance_id=BAKE_ID, hostname="pi-01", user_data=None)

    assert (cloud_root / SEED_DIR / "user-data").read_text() == "#cloud-config\n"
    assert (cloud_root / PIN_FILE).exists()


def test_an_image_without_cloud_init_is_left_alone_unless_given_user_data(tmp_path):
    root = tmp_path / "root"
    root.mkdir()

    assert not seed_cloud_init(root, instance_id=BAKE_ID, hostname="pi-01", user_data=None)
    assert list(root.iterdir()) == []

    assert seed_cloud_init(root, instance_id=BAKE_ID, hostname="pi-01", user_data="#!/bin/sh\n")
    assert (root / SEED_DIR / "user-data").read_text() == "#!/bin/sh\n"


def test_a_seed_directory_linked_out_of_the_root_is_refused(cloud_root, tmp_path):
    outside = tmp_path / "host-var-lib"
    outside.mkdir()
    (cloud_root / "var").mkdir()
    (cloud_root / "var/lib").symlink_to(outside)

    with pytest.raises(SeasoningError):
        seed_cloud_init(cloud_root, instance_id=BAKE_ID, hostname="pi-01", user_data=None)

    assert list(outside.iterdir()) == []
