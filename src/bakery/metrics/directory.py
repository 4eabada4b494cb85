"""Where a Bakery process keeps its counts, so that every process's add up in one scrape.

Bakery is many processes: gunicorn's workers, the netboot supervisor, the TFTP server and
the workers it forks, the HTTP boot server, the start-up power restore. prometheus-client's
multiprocess mode gives each process its own memory-mapped files (``counter_<pid>.db``,
``histogram_<pid>.db``) in one directory, and a scrape, whichever process answers it, adds
up the files of every process, including those that have exited: a counter must not go
back when a worker is replaced.

The directory is ``<root>/metrics`` (0700, like the data dir). ``bakery serve`` empties it
once per start (``start_afresh``), before recovery and before any worker or child exists,
so counts begin at zero with each start of the host; every service command joins it
(``use_directory``) before anything is counted, and the processes it starts inherit it
through ``PROMETHEUS_MULTIPROC_DIR``. A service run alone (``bakery tftp``) joins the
same directory and is counted by whichever ``/metrics`` answers; its files are kept until
the next ``bakery serve`` start empties the directory.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from prometheus_client import values

from ..config import ConfigError, Settings
from . import family

#: The variable prometheus-client reads (at import, and when it opens a process's files).
ENV = "PROMETHEUS_MULTIPROC_DIR"
DIRECTORY_MODE = 0o700


def directory_of(settings: Settings) -> Path:
    """The metrics directory of a data dir."""
    return settings.path("metrics")


def current_directory() -> Path | None:
    """The directory this process counts in; None when it counts in memory only (a test,
    or a library user that never joined one)."""
    directory = os.environ.get(ENV)
    return Path(directory) if directory else None


def use_directory(directory: Path) -> None:
    """Count in ``directory`` from now on, in this process and the ones it starts.

    Must come before the first count: one made in memory before it would be missing
    from every scrape, so that is refused (RuntimeError) rather than lost quietly."""
    if family.made_in_memory():
        raise RuntimeError(f"metrics were counted in memory before joining {directory}")
    _make_private(directory)
    os.environ[ENV] = str(directory)
    if not getattr(values.ValueClass, "_multiprocess", False):
        # prometheus-client chose in-memory values at its import, before the variable
        # was set: switch to per-process files (the documented environment, made here).
        multiprocess_values: Callable[[], type] = values.MultiProcessValue  # untyped there
        values.ValueClass = multiprocess_values()


def start_afresh(directory: Path) -> None:
    """Remove what earlier runs counted, then ``use_directory``: once per host start, in
    the process that starts all the others, before any of them exists."""
    _make_private(directory)
    for stale in directory.glob("*.db"):
        stale.unlink()
    use_directory(directory)


def _make_private(directory: Path) -> None:
    try:
        directory.mkdir(mode=DIRECTORY_MODE, exist_ok=True)
        directory.chmod(DIRECTORY_MODE)
    except OSError as exc:
        raise ConfigError(f"metrics directory {directory}: {exc.strerror}") from None
