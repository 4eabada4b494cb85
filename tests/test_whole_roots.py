"""Roots kept whole: an image whose root carries a file capability (``ping``), POSIX ACLs
(``/var/log/journal``) and ``user.*``/``trusted.*`` xattrs is imported, cloned by each
method and seasoned on btrfs, xfs and ext4 data dirs; the bakeform and the bake read back
with getfattr, getfacl and getcap exactly as the image's source tree does."""

from __future__ import annotations

import pytest

from bakery.images import import_image
from bakery.roots import clone_root, create_base, season_root
from bakery.sim.image import REQUIRED_TOOLS, build_sd_image, populate_root
from tests.support.loopfs import loop_filesystem, missing_tools
from tests.support.xattrs import XATTR_TOOLS, read_back, xattr_dump

pytestmark = [pytest.mark.root, pytest.mark.tools(*REQUIRED_TOOLS, "debugfs", *XATTR_TOOLS)]

CLONE_METHOD = {"btrfs": "snapshot", "xfs": "reflink", "ext4": "copy"}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return populate_root(tmp_path_factory.mktemp("source") / "root")


@pytest.fixture(scope="module")
def image(tmp_path_factory, source):
    return build_sd_image(tmp_path_factory.mktemp("image") / "pi.img", root_dir=source)


@pytest.mark.parametrize("fstype", list(CLONE_METHOD))
def test_capabilities_acls_and_xattrs_reach_the_bakeform_and_every_bake(fstype, source, image):
    if missing := missing_tools(fstype):
        pytest.skip(f"{fstype} needs {', '.join(missing)}")
    with loop_filesystem(fstype, 512) as data_dir:
        bakeform = data_dir / "bakeforms/.incoming-raspios"
        bakeform.mkdir(parents=True)
        method = create_base(bakeform / "root")
        with image.open("rb") as stream:
            import_image(stream, bakeform)
        bake = data_dir / "bakes/b1/root"
        bake.parent.mkdir(parents=True)
        clone_root(bakeform / "root", bake, method)
        season_root(bake, hostname="pi-0000beef", resolv_conf="nameserver 10.0.0.53\n")

        assert method == CLONE_METHOD[fstype]
        assert xattr_dump(bakeform / "root") == xattr_dump(source)
        assert xattr_dump(bake) == xattr_dump(source)
        assert read_back(["getcap", "usr/bin/ping"], bake) == "usr/bin/ping cap_net_raw=ep"
        journal = ["getfacl", "var/log/journal"]
        assert read_back(journal, bake) == read_back(journal, source)
        assert "default:group:adm:r-x" in read_back(journal, bake)
