"""The data dir is Bakery's alone.

Bakeform and bake roots keep their setuid-root programs and device nodes, as they must
for the Pis that boot them. A local user who can reach them can run a setuid shell or
read a loop device through a node, so the data dir is 0700 and owned by Bakery's user:
checked at every start, refused with one line when looser. Everything under it is made
with ``PRIVATE_UMASK`` (the roots keep their own modes inside, which the Pis need), and
a mount without ``nosuid,nodev`` gets a warning, the second wall an operator can add.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .config import ConfigError

#: The umask of every Bakery process: what it makes is its own unless it says otherwise.
PRIVATE_UMASK = 0o077
#: The data dir's own mode.
DATA_DIR_MODE = 0o700


def use_private_umask() -> None:
    """Make files and directories 0600/0700 unless created with an explicit mode."""
    os.umask(PRIVATE_UMASK)


def claim_data_dir(root: Path) -> None:
    """Create ``root`` 0700 if missing; refuse one another user could enter or change.

    A looser data dir is refused, not silently fixed: it may have been open for a
    while, and the operator should know (and may need to look at who used it)."""
    if not root.exists():
        root.mkdir(parents=True, mode=DATA_DIR_MODE)
        root.chmod(DATA_DIR_MODE)  # mkdir's mode is narrowed by the umask, never widened
    info = root.stat()
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"data dir {root} is not a directory")
    if info.st_uid != os.geteuid():
        raise ConfigError(
            f"data dir {root} belongs to uid {info.st_uid}, not to Bakery's uid {os.geteuid()}"
        )
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise ConfigError(
            f"data dir {root} is mode {mode:04o}: other users could run the setuid programs "
            f"in its roots; make it Bakery's alone with: chmod 700 {root}"
        )


def mount_warning(root: Path) -> str | None:
    """What the data dir's mount lacks of ``nosuid,nodev``, as a line to log; None when
    it has both."""
    flags = os.statvfs(root).f_flag
    missing = [
        option
        for option, flag in (("nosuid", os.ST_NOSUID), ("nodev", os.ST_NODEV))
        if not flags & flag
    ]
    if not missing:
        return None
    return (
        f"data dir {root} is on a mount without {','.join(missing)}: mount it with "
        "nosuid,nodev so the roots' setuid programs and device nodes cannot be used on "
        "this host even by a process that gets inside"
    )
