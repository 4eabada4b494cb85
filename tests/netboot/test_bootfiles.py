"""What a Pi is served: an NFS cmdline.txt and a config.txt without SD-card extras."""

from __future__ import annotations

import pytest

from bakery.netboot.bootfiles import adjust_config_txt, render_cmdline

BOOKWORM = (
    "console=serial0,115200 console=tty1 root=PARTUUID=4e639091-02 rootfstype=ext4 "
    "fsck.repair=yes rootwait quiet init=/usr/lib/raspberrypi-sys-mods/firstboot\n"
)


def test_cmdline_swaps_the_sd_root_for_the_bakes_nfs_root():
    line = render_cmdline(BOOKWORM, "10.0.0.1", "/srv/bakery/bakes/abc/root")
    assert line == (
        "console=serial0,115200 console=tty1 quiet root=/dev/nfs "
        "nfsroot=10.0.0.1:/srv/bakery/bakes/abc/root,vers=3,tcp rw ip=dhcp rootwait\n"
    )


def test_cmdline_drops_trixie_resize_and_keeps_unknown_options():
    line = render_cmdline(
        "console=tty1 root=PARTUUID=x-02 resize cgroup_enable=memory", "10.0.0.1", "/r"
    )
    assert "resize" not in line.split() and "cgroup_enable=memory" in line
    assert [o for o in line.split() if o.startswith("root=")] == ["root=/dev/nfs"]


def test_empty_image_cmdline_still_boots_from_nfs():
    assert render_cmdline("", "10.0.0.1", "/r").startswith("root=/dev/nfs nfsroot=10.0.0.1:/r,")


@pytest.mark.parametrize(
    "export", ["relative/root", "/a b", "/x/../etc", "/x,rw", "/x\nroot=/dev/sda"]
)
def test_cmdline_refuses_an_export_path_that_could_inject_options(export):
    with pytest.raises(ValueError):
        render_cmdline(BOOKWORM, "10.0.0.1", export)


def test_config_txt_loses_only_the_dropped_keys():
    text = "dtparam=audio=on\nauto_initramfs=1\n[pi4]\narm_boost=1\n auto_initramfs = 1\n"
    assert adjust_config_txt(text, ["auto_initramfs"]) == "dtparam=audio=on\n[pi4]\narm_boost=1\n"
    assert adjust_config_txt(text, []) == text
