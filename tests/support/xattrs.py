"""Extended attributes as the attr, acl and libcap tools print them: the read-back the
whole-root tests compare, independent of the order a filesystem lists its entries in."""

from __future__ import annotations

import subprocess
from pathlib import Path

#: The programs of Debian's attr, acl and libcap2-bin packages the read-back runs.
XATTR_TOOLS = ("getfattr", "getfacl", "getcap")


def read_back(command: list[str], cwd: Path) -> str:
    """What ``command`` prints, run in ``cwd`` (so it names paths relative to the tree)."""
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout.strip()


#: xfs also lists a POSIX ACL in its on-disk form, to root, as these ``trusted.*`` names:
#: the same ACL as ``system.posix_acl_*``, not an attribute of the tree.
XFS_ACL_NAMES = ("trusted.SGI_ACL_FILE=", "trusted.SGI_ACL_DEFAULT=")


def xattr_dump(top: Path) -> list[str]:
    """``getfattr -R`` of every entry under ``top`` (symlinks' own, values in hex), one
    block per entry, sorted: filesystems list directories in different orders."""
    dump = read_back(["getfattr", "-R", "-h", "-d", "-m", "-", "-e", "hex", "."], top)
    lines = [line for line in dump.split("\n") if not line.startswith(XFS_ACL_NAMES)]
    return sorted(block for block in "\n".join(lines).split("\n\n") if block)
