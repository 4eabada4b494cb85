"""netboot.bootfiles: what a Pi is served (an NFS cmdline.txt, a config.txt without SD-card
extras) and which paths a request may name."""

from __future__ import annotations

import pytest

from bakery.netboot.bootfiles import (
    UnsafePath,
    adjust_config_txt,
    find_boot_file,
    guess_model,
    parse_request_path,
    render_cmdline,
    served_message,
)

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


@pytest.mark.parametrize(
    ("raw", "serial", "relative"),
    [
        ("1234abcd/start4.elf", "1234abcd", "start4.elf"),
        ("1234ABCD//config.txt", "1234abcd", "config.txt"),
        ("1234abcd/overlays//x.dtbo", "1234abcd", "overlays/x.dtbo"),
        ("bootcode.bin", None, "bootcode.bin"),
    ],
)
def test_request_paths_split_into_serial_and_file(raw, serial, relative):
    path = parse_request_path(raw)
    assert (path.serial, path.relative) == (serial, relative)


@pytest.mark.parametrize(
    "raw",
    [
        "../../etc/passwd",
        "1234abcd/../../etc/passwd",
        "/etc/passwd",
        "1234abcd/overlays/../../x",
        "1234abcd/./config.txt",
        "zzzzzzzz/start4.elf",
        "1234abcd\\..\\x",
        "1234abcd/a\x00b",
        "",
        "//",
    ],
)
def test_unsafe_request_paths_are_refused(raw):
    with pytest.raises(UnsafePath):
        parse_request_path(raw)


def test_boot_files_match_case_insensitively_inside_the_tree(tmp_path):
    (tmp_path / "boot" / "overlays").mkdir(parents=True)
    (tmp_path / "boot" / "overlays" / "vc4-kms-v3d.dtbo").write_bytes(b"x")
    assert find_boot_file(tmp_path / "boot", "OVERLAYS/VC4-KMS-V3D.DTBO") == (
        tmp_path / "boot" / "overlays" / "vc4-kms-v3d.dtbo"
    )
    assert find_boot_file(tmp_path / "boot", "overlays") is None


def test_boot_file_lookup_never_follows_symlinks_out_of_the_tree(tmp_path):
    (tmp_path / "boot").mkdir()
    (tmp_path / "secret").write_text("no")
    (tmp_path / "boot" / "link").symlink_to(tmp_path / "secret")
    (tmp_path / "boot" / "dir").symlink_to(tmp_path)
    assert find_boot_file(tmp_path / "boot", "link") is None
    assert find_boot_file(tmp_path / "boot", "dir/secret") is None
    assert find_boot_file(tmp_path / "boot", "../secret") is None


@pytest.mark.parametrize(
    ("names", "model"),
    [
        (["1234abcd/start4.elf"], "4B"),
        (["bootcode.bin"], "3B"),
        (["1234abcd/start.elf"], "3B"),
        (["1234abcd/config.txt", "1234abcd/kernel_2712.img"], "5"),
        (["1234abcd/config.txt"], None),
    ],
)
def test_model_is_guessed_from_the_files_asked_for(names, model):
    assert guess_model(names) == model


@pytest.mark.parametrize(
    ("size", "seconds", "protocol", "said"),
    [
        (2_250_000, 0.2141, "tftp", "start4.elf 2.2 MB in 0.21 s"),
        (162, 0.0012, "tftp", "start4.elf 162 B in 0.00 s"),
        (55_000, 0.05, "tftp", "start4.elf 55.0 kB in 0.05 s"),
        (10_900_000, 0.09, "http", "start4.elf 10.9 MB in 0.09 s over HTTP"),
        (1_500_000_000, 12.0, "http", "start4.elf 1.5 GB in 12.00 s over HTTP"),
    ],
)
def test_a_served_file_reads_as_its_name_size_and_time(size, seconds, protocol, said):
    assert served_message("start4.elf", size, seconds, protocol) == said


def test_a_server_without_a_portmapper_has_its_ports_on_the_cmdline():
    """The bakery job's nfs-ganesha answers MOUNT on a fixed port and runs no rpcbind: a
    Pi's kernel mounts NFSv3 only if the cmdline names both ports."""
    line = render_cmdline(BOOKWORM, "10.0.0.1", "/srv/bakery/bakes/abc/root", mount_port=20048)

    assert (
        "nfsroot=10.0.0.1:/srv/bakery/bakes/abc/root,vers=3,tcp,port=2049,mountport=20048,"
        "mountproto=tcp "
    ) in line
    assert "port=" not in render_cmdline(BOOKWORM, "10.0.0.1", "/srv/bakery/bakes/abc/root")
