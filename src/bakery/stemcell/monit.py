"""monit compiled from its source tarball for the stemcell's architecture.

The bosh-agent starts, stops and watches a VM's jobs through monit's HTTP API as monit
5.2.5 speaks it; later monits (Debian's 5.33) answer its ``start`` with a CSRF error. So
stemcells compile 5.2.5 from source, with ``/var/vcap/bosh`` as the prefix: the agent
runs a plain ``monit`` from its PATH and monit finds its control file through that
prefix. A stemcell for a Pi is built on a PC, so arm64 and armhf are cross-compiled with
Debian's cross compilers (``gcc-aarch64-linux-gnu`` and ``libcrypt-dev:arm64``, say).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

from bakery.stemcell.architecture import Architecture, elf_architecture, host_architecture

VERSION = "5.2.5"
PREFIX = "/var/vcap/bosh"
#: Where monit is in the root (the agent's PATH starts with the prefix's bin).
BINARY = f"{PREFIX.lstrip('/')}/bin/monit"
#: What a native configure finds out by running test programs, which a cross build
#: cannot run: the answers for glibc on Linux, so both builds come out the same.
CROSS_ANSWERS = {
    "ac_cv_func_malloc_0_nonnull": "yes",
    "ac_cv_func_realloc_0_nonnull": "yes",
    "ac_cv_func_lstat_dereferences_slashed_symlink": "yes",
    "ac_cv_func_stat_empty_string_bug": "no",
    "jm_cv_func_working_gnu_strftime": "yes",
    "ac_cv_func_fork_works": "yes",
}
#: The tarball ships only the grammar's sources (bison, flex); GCC 12 needs -fcommon for
#: its global definitions in headers.
CFLAGS = "-O2 -fcommon"
BUILD_TOOLS = ("make", "bison", "flex")
_VERSION_RE = re.compile(rb"^PACKAGE_VERSION='([^']*)'", re.MULTILINE)
LOG_LINES = 15


class MonitBuildError(ValueError):
    """monit cannot be built from this source for this architecture; the message says why."""


def build_monit(source: Path, target: Architecture, work: Path) -> bytes:
    """The monit executable compiled from the source tarball `source` for `target`,
    built in the scratch directory `work`. Raises MonitBuildError for a tarball that is
    not monit 5.2.5's source, missing compilers or a failed build (with its last lines)."""
    tree = _unpack(source, work / "monit-source")
    host = host_architecture()
    if host is None:
        raise MonitBuildError("monit can only be compiled on amd64, arm64 or armhf")
    compiler = "gcc" if target == host else f"{target.triplet}-gcc"
    missing = [tool for tool in (*BUILD_TOOLS, compiler) if shutil.which(tool) is None]
    if missing:
        raise MonitBuildError(
            f"building monit for {target.name} needs {', '.join(missing)}: install it"
            + (
                ""
                if target == host
                else f" (Debian: gcc-{target.triplet}, libcrypt-dev:{target.name})"
            )
        )
    log = work / "monit-build.log"
    staged = work / "monit-staged"
    _step(["./configure", *_configure_arguments(host, target)], tree, log)
    _step(["make", f"-j{os.cpu_count() or 1}"], tree, log)
    _step(["make", "install", f"DESTDIR={staged}"], tree, log)
    binary = (staged / BINARY).read_bytes()
    if elf_architecture(binary[:64]) != target:
        raise MonitBuildError(f"the compiler made a monit that is not for {target.name}")
    return binary


def _unpack(source: Path, into: Path) -> Path:
    """The source tree of the tarball, unpacked with tarfile's data filter (no links out,
    no devices, no setuid bits), after checking it is monit's and its version."""
    try:
        with tarfile.open(source) as tar:
            tar.extractall(into, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise MonitBuildError(f"{source} is not a readable source tarball: {exc}") from None
    trees = [path for path in into.iterdir() if (path / "configure").is_file()]
    if len(trees) != 1 or not (trees[0] / "monit.1").is_file():
        raise MonitBuildError(f"{source} is not monit's source (no monit-*/configure in it)")
    match = _VERSION_RE.search((trees[0] / "configure").read_bytes())
    version = match[1].decode(errors="replace") if match else "of no known version"
    if version != VERSION:
        raise MonitBuildError(
            f"{source} is monit {version}, not {VERSION}: the bosh-agent drives monit "
            f"{VERSION}'s HTTP API, which later versions refuse (a CSRF error)"
        )
    return trees[0]


def _configure_arguments(host: Architecture, target: Architecture) -> list[str]:
    arguments = [f"--prefix={PREFIX}", "--without-ssl", f"CFLAGS={CFLAGS}"]
    if target == host:
        return arguments
    # --build as well as --host: with qemu-user registered for the target, configure
    # would otherwise run its test programs, believe it is not cross-compiling and
    # take the wrong answers.
    answers = [f"{name}={value}" for name, value in CROSS_ANSWERS.items()]
    return [*arguments, f"--build={host.triplet}", f"--host={target.triplet}", *answers]


def _step(args: list[str], cwd: Path, log: Path) -> None:
    """One build step, its output added to `log`; a failure quotes the log's last lines."""
    with log.open("ab") as output:
        done = subprocess.run(args, cwd=cwd, stdout=output, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-LOG_LINES:]
        raise MonitBuildError(
            f"building monit failed at `{' '.join(args)}` (exit {done.returncode}):\n"
            + "\n".join(tail)
        )
