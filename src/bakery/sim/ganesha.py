"""A real nfs-ganesha: the simulated Pis' NFS server in netns mode, and the tests'.

nfs-ganesha is a userspace NFS server, so it runs on a machine whose kernel has no
NFS server. It runs NFSv4 only: v3 needs rpcbind, and the simulator must not touch
the host's portmapper (Bakery's exports set ``Pseudo`` = ``Path``, so a v4 client
reads the path a Pi's ``nfsroot=`` names). It reads the exports file Bakery writes
through ``%include``, exactly as a production main config does, and Bakery SIGHUPs
it through the pid file to re-read them.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .. import nfsserver
from .server import free_port
from .wait import wait_until

GANESHA = "ganesha.nfsd"


@dataclass
class Ganesha:
    """One nfs-ganesha process with its config, pid file, log and recovery dir in ``workdir``."""

    workdir: Path
    exports_file: Path
    bind: str = "127.0.0.1"
    port: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def config_file(self) -> Path:
        return self.workdir / "ganesha.conf"

    @property
    def pid_file(self) -> Path:
        return self.workdir / "ganesha.pid"

    @property
    def log_file(self) -> Path:
        return self.workdir / "ganesha.log"

    def config_text(self) -> str:
        return nfsserver.server_config(
            bind=self.bind,
            exports_file=self.exports_file,
            recovery_dir=self.workdir / "recovery",
            port=self.port,
        )

    def start(self, timeout: float = 30.0) -> None:
        """Start in the foreground and return once the NFS port accepts connections."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.exports_file.exists():
            self.exports_file.parent.mkdir(parents=True, exist_ok=True)
            self.exports_file.write_text("# no exports yet\n")
        self.port = self.port or free_port(self.bind)
        self.config_file.write_text(self.config_text())
        with open(self.workdir / "ganesha.stdout", "wb") as output:
            self.process = subprocess.Popen(
                [GANESHA, "-F", "-f", str(self.config_file), "-L", str(self.log_file)]
                + ["-p", str(self.pid_file), "-N", "NIV_EVENT"],
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_until(self._serving, timeout, what=f"nfs-ganesha on {self.bind}:{self.port}")

    def _serving(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError(f"nfs-ganesha exited early:\n{self.log()}")
        try:
            socket.create_connection((self.bind, self.port), timeout=1).close()
        except OSError:
            return False
        return self.pid_file.exists()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log(self) -> str:
        parts = [self.workdir / "ganesha.stdout", self.log_file]
        return "\n".join(path.read_text(errors="replace") for path in parts if path.exists())

    def reloads(self) -> int:
        """How many SIGHUP export reloads ganesha has finished."""
        return self.log().count("Reread exports complete")


@contextmanager
def running_ganesha(
    workdir: Path, exports_file: Path, bind: str = "127.0.0.1", port: int = 0
) -> Iterator[Ganesha]:
    """A started nfs-ganesha that is always stopped; its log is printed if the body fails."""
    server = Ganesha(workdir, exports_file, bind, port)
    try:
        server.start()
        yield server
    except BaseException:
        print(f"--- nfs-ganesha log ({server.log_file}) ---\n{server.log()}")
        raise
    finally:
        server.stop()
