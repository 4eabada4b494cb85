"""What a stemcell is built from in the tests: a Pi OS-like root with the account files
of a Debian image (and its first user, pi, already on uid 1000) and one program of the
build machine's own CPU, the real bosh-agent for that CPU and monit's real source."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from bakery.sim.image import build_sd_image, populate_root
from tests.support import bosh_tools

PASSWD = """root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
pi:x:1000:1000:,,,:/home/pi:/bin/bash
"""
GROUP = """root:x:0:
adm:x:4:pi
dialout:x:20:pi
audio:x:29:pi
shadow:x:42:
video:x:44:pi
users:x:100:pi
systemd-journal:x:999:
pi:x:1000:
nogroup:x:65534:
"""
SHADOW = """root:*:19000:0:99999:7:::
daemon:*:19000:0:99999:7:::
nobody:*:19000:0:99999:7:::
pi:$y$j9T$placeholder:19000:0:99999:7:::
"""
SHADOW_GROUP = 42


def gshadow(group: str) -> str:
    return "".join(f"{line.split(':')[0]}:!::{line.split(':')[3]}\n" for line in group.splitlines())


def debian_root(tree: Path, program: Path = Path("/usr/bin/ls")) -> Path:
    """``populate_root`` plus the account files (shadow files root:shadow 0640, as on
    Debian) and ``program`` as /usr/bin/ls: what tells the build the image's CPU."""
    populate_root(tree)
    for name, text in [("passwd", PASSWD), ("group", GROUP), ("shadow", SHADOW)]:
        (tree / "etc" / name).write_text(text)
    (tree / "etc/gshadow").write_text(gshadow(GROUP))
    for name in ("shadow", "gshadow"):
        os.chmod(tree / "etc" / name, 0o640)
        if os.geteuid() == 0:
            os.chown(tree / "etc" / name, 0, SHADOW_GROUP)
    (tree / "usr/bin").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(program, tree / "usr/bin/ls")
    os.chmod(tree / "usr/bin/ls", 0o755)
    return tree


def debian_image(path: Path, program: Path = Path("/usr/bin/ls")) -> Path:
    """An SD card image whose root is ``debian_root``."""
    tree = debian_root(path.with_name(path.name + ".tree"), program)
    image = build_sd_image(path, root_dir=tree)
    shutil.rmtree(tree)
    return image


#: The tests build stemcells with the real agent of this machine's CPU and monit's source.
needs_agent_and_monit = bosh_tools.needs("agent_amd64", "monit_source")


@pytest.fixture(scope="session")
def agent() -> Path:
    assert bosh_tools.AGENT_AMD64 is not None  # needs_agent_and_monit skipped otherwise
    return bosh_tools.AGENT_AMD64


@pytest.fixture(scope="session")
def monit_source() -> Path:
    assert bosh_tools.MONIT_SOURCE is not None
    return bosh_tools.MONIT_SOURCE
