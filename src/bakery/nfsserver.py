"""The nfs-ganesha a Bakery host runs itself (setting ``ganesha_binary``, what the bakery
job's nfs-ganesha package provides): its main configuration and its command line.

The main configuration names the exports file Bakery writes (``%include``), which the
``ganesha`` export backend rewrites and reloads with SIGHUP through the pid file, so the
server is started once and never restarted for an export. It serves NFSv4 and NFSv3,
the MOUNT protocol on ``nfs_mount_port`` (which Pis' cmdline.txt then names: no rpcbind
is needed), NLM and RQUOTA off (a Pi root is one client's). The simulator's ganesha
(``sim.ganesha``) is configured by the same function.
"""

from __future__ import annotations

from pathlib import Path

from .config import Settings

#: NFS's own port.
NFS_PORT = 2049
#: The MOUNT port the bakery job's server uses (the port Linux's rpc.mountd takes too).
DEFAULT_MOUNT_PORT = 20048


def server_config(
    *,
    bind: str,
    exports_file: Path,
    recovery_dir: Path,
    port: int = NFS_PORT,
    mount_port: int = 0,
) -> str:
    """A ganesha.conf serving the exports in ``exports_file`` on ``bind``: NFSv4 alone,
    or v3 and v4 when ``mount_port`` gives v3's MOUNT protocol a fixed port."""
    protocols = "3, 4" if mount_port else "4"
    mount = f"    MNT_Port = {mount_port};\n" if mount_port else ""
    return (
        "NFS_CORE_PARAM {\n"
        f"    NFS_Port = {port};\n"
        f"{mount}"
        f"    Bind_addr = {bind};\n"
        f"    Protocols = {protocols};\n"
        "    Enable_NLM = false;\n"
        "    Enable_RQUOTA = false;\n"
        # without CAP_SYS_RESOURCE (a container, bpm) ganesha would refuse to start
        "    allow_set_io_flusher_fail = true;\n"
        "}\n"
        "NFSV4 {\n"
        "    Graceless = true;\n"
        f'    RecoveryRoot = "{recovery_dir}";\n'
        "}\n"
        f'%include "{exports_file}"\n'
    )


def config_path(settings: Settings) -> Path:
    return settings.path("run", "ganesha.conf")


def pid_file(settings: Settings) -> Path | None:
    """The pid file the ganesha backend signals: the configured one, else the one
    Bakery's own server writes (``ganesha_binary``); None: there is no server to signal."""
    if settings.ganesha_pid_file:
        return Path(settings.ganesha_pid_file)
    if settings.ganesha_binary:
        return settings.path("run", "ganesha.pid")
    return None


def exports_path(settings: Settings) -> Path:
    """The exports file the ganesha backend writes and the server includes."""
    return Path(settings.exports_file or settings.path("nfs", "ganesha-exports.conf"))


def write_config(settings: Settings) -> Path:
    """Render this host's ganesha.conf (and an empty exports file if none yet)."""
    exports = exports_path(settings)
    if not exports.exists():
        exports.parent.mkdir(parents=True, exist_ok=True)
        exports.write_text("# no exports yet\n")
    recovery = settings.path("nfs", "recovery")
    recovery.mkdir(parents=True, exist_ok=True)
    path = config_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        server_config(
            bind=settings.nfs_server,
            exports_file=exports,
            recovery_dir=recovery,
            mount_port=settings.nfs_mount_port,
        )
    )
    return path


def command(settings: Settings) -> list[str]:
    """The server in the foreground, logging to its stderr (its supervisor's log)."""
    return [
        settings.ganesha_binary,
        "-F",
        "-f",
        str(write_config(settings)),
        "-p",
        str(pid_file(settings)),
        "-L",
        "STDERR",
        "-N",
        "NIV_EVENT",
    ]
