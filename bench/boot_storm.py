"""A boot storm: N simulated Pi 4s baked at once and booted through the real parts.

Run as root from the repository: ``sudo .venv/bin/python bench/boot_storm.py [--pis 100]``.
It starts a simulated site in netns mode (a bridge, one network namespace per Pi, the
real dnsmasq, ``bakery serve`` with its TFTP server on port 69, nfs-ganesha), uploads a
bakeform with a Pi 4 boot set of realistic sizes (start4.elf 2.2 MB, kernel8.img
``--kernel-mib``), then bakes every Pi at once through the API (``--clients`` requests
in flight) and waits until every Pi has read its NFS root. Without root it falls back
to loopback mode (no DHCP, no NFS step).

Prints the time until all booted (from the first bake request), the bake and boot
spreads, TFTP throughput (payload bytes the Pis received / time from the first
power-on to the last boot) and the peak CPU and memory of the ``bakery serve`` process
tree (gunicorn, its workers, the netboot child, TFTP, dnsmasq) and of nfs-ganesha,
sampled from /proc every 0.2 s. At the end it scrapes Bakery's own ``/metrics`` and
prints the boot-duration distribution Bakery measured (power-on → userspace up, from
each Pi's boot report; netns mode only): p50 and p95 from the buckets of
``bakery_boot_duration_seconds`` (interpolated within a bucket, as PromQL's
``histogram_quantile`` does, and capped at the max), max from
``bakery_boot_duration_max_seconds`` (the slowest boot of the Pis up, from the database:
exact, where buckets only bound it).
There is no peer here: the numbers are for tracking.
The simulated Pis are threads of this one process, sharing the machine with the
server, so on a small machine they are part of what is measured.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from bakery.client import ApiClient
from bakery.sim.image import fleet_boot_files
from bakery.sim.runner import SimulatedSite, SiteOptions, default_mode
from bakery.sim.wait import wait_until

MIB = 1024 * 1024
SAMPLE_EVERY = 0.2
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def boot_files(kernel_mib: int) -> dict[str, bytes]:
    return fleet_boot_files() | {
        "start4.elf": os.urandom(2_250_000),
        "kernel8.img": os.urandom(kernel_mib * MIB),
    }


# -- /proc sampling ------------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, int, int] | None:
    """(parent pid, CPU ticks, resident bytes) of ``pid``, or None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        resident = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return None
    return int(fields[1]), int(fields[11]) + int(fields[12]), resident


def tree_usage(root_pid: int) -> tuple[int, int]:
    """CPU ticks and resident bytes of ``root_pid`` and all its descendants."""
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            stats[int(entry.name)] = stat
    members, frontier = {root_pid}, [root_pid]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, stat in stats.items() if stat[0] == parent]
        members.update(children)
        frontier.extend(children)
    present = [stats[pid] for pid in members if pid in stats]
    return sum(s[1] for s in present), sum(s[2] for s in present)


class Sampler:
    """Peak CPU (% of one core, per interval) and peak resident memory of a tree."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_cpu = self.peak_rss = 0.0
        self.ticks_start = tree_usage(pid)[0]
        self.ticks_end = self.ticks_start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Sampler:
        self.started = time.monotonic()
        self._thread.start()
        return self

    def _run(self) -> None:
        last_ticks, last_time = self.ticks_start, time.monotonic()
        while not self._stop.wait(SAMPLE_EVERY):
            ticks, rss = tree_usage(self.pid)
            now = time.monotonic()
            cpu = (ticks - last_ticks) / CLOCK_TICKS / (now - last_time) * 100
            self.peak_cpu, self.peak_rss = max(self.peak_cpu, cpu), max(self.peak_rss, rss)
            last_ticks, last_time, self.ticks_end = ticks, now, ticks

    def stop(self) -> Sampler:
        self._stop.set()
        self._thread.join()
        self.elapsed = time.monotonic() - self.started
        return self

    def summary(self) -> str:
        average = (self.ticks_end - self.ticks_start) / CLOCK_TICKS / self.elapsed * 100
        return (
            f"CPU peak {self.peak_cpu:.0f}% (average {average:.0f}%) of one core, "
            f"memory peak {self.peak_rss / MIB:.0f} MiB"
        )


# -- the storm ------------------------------------------------------------------------------


def storm(site: SimulatedSite, clients: int, timeout: float) -> dict[str, float]:
    def bake(_: int) -> float:
        ApiClient(site.server.url, site.server.token).post("/bakes", {"bakeform": "demo"})
        return time.time()

    started = time.time()
    with ThreadPoolExecutor(clients) as pool:
        baked = list(pool.map(bake, range(len(site.pis))))
    wait_until(
        lambda: all(pi.state in ("booted", "failed") for pi in site.pis),
        timeout,
        interval=0.1,
        what="every Pi to boot",
    )
    ends = [pi.timeline[-1].at for pi in site.pis]
    power_ons = [pi.power_ons[0] for pi in site.pis]
    return {
        "all booted": max(ends) - started,
        "all baked": max(baked) - started,
        "first power-on": min(power_ons) - started,
        "boot median": statistics.median(e - p for e, p in zip(ends, power_ons, strict=True)),
        "boot max": max(e - p for e, p in zip(ends, power_ons, strict=True)),
        "tftp window": max(ends) - min(power_ons),
    }


# -- Bakery's own view, from its metrics ------------------------------------------------------


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """PromQL's ``histogram_quantile`` over one histogram's cumulative ``(le, count)``
    buckets: the bucket the q-th observation falls in, interpolated linearly inside it
    (from 0 for the first bucket; the highest finite bound if it is in +Inf)."""
    buckets = sorted(buckets)
    if not buckets or buckets[-1][1] == 0:
        return math.nan  # no observations, as PromQL says
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def boot_durations(page: str) -> dict[str, float]:
    """Boots counted, p50, p95 (from the histogram's buckets) and max (its gauge)."""
    samples = [s for family in text_string_to_metric_families(page) for s in family.samples]
    buckets = [
        (float(s.labels["le"]), s.value)
        for s in samples
        if s.name == "bakery_boot_duration_seconds_bucket"
    ]
    slowest = [s.value for s in samples if s.name == "bakery_boot_duration_max_seconds"]
    return {
        "boots": max((count for _, count in buckets), default=0.0),
        "p50": histogram_quantile(0.5, buckets),
        "p95": histogram_quantile(0.95, buckets),
        "max": slowest[0] if slowest else math.nan,
    }


def scrape_boots(site: SimulatedSite, reports: int, timeout: float) -> dict[str, float]:
    """Bakery's boot durations, once its histogram holds ``reports`` boots (a Pi's boot
    report follows its "booted" by a moment)."""
    session = site.server.session()

    def counted() -> dict[str, float] | None:
        page = session.get(f"{site.server.url}/metrics", timeout=30).text
        durations = boot_durations(page)
        return durations if durations["boots"] >= reports else None

    return wait_until(counted, timeout, interval=0.2, what=f"{reports} boot reports counted")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pis", type=int, default=100)
    parser.add_argument("--kernel-mib", type=int, default=8)
    parser.add_argument("--gap", type=float, default=0.0, help="power_on_gap (s)")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers")
    parser.add_argument("--clients", type=int, default=16, help="bake requests in flight")
    parser.add_argument("--mode", choices=["netns", "loopback"], default=default_mode())
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.workdir) as scratch:
        work = Path(scratch)
        options = SiteOptions(
            root=work / "data",
            workdir=work / "site",
            pis=args.pis,
            models=["4B"],
            mode=args.mode,
            power_on_gap=args.gap,
            workers=args.workers,
            boot_files=boot_files(args.kernel_mib),
            settings={"log_level": "WARNING"},
        )
        print(f"starting {args.pis} simulated Pi 4s ({args.mode} mode)...", flush=True)
        with SimulatedSite(options) as site:
            server = Sampler(site.server.process.pid).start()
            ganesha = Sampler(site.ganesha.process.pid).start() if site.ganesha else None
            times = storm(site, args.clients, args.timeout)
            server.stop()
            if ganesha:
                ganesha.stop()
            report(site, times, server, ganesha)
            if args.mode == "netns":  # loopback Pis skip NFS, and so their boot report
                booted = sum(pi.state == "booted" for pi in site.pis)
                report_boots(scrape_boots(site, booted, 60))
            failed = [pi for pi in site.pis if pi.state != "booted"]
    return 1 if failed else 0


def report(site: SimulatedSite, times: dict, server: Sampler, ganesha: Sampler | None) -> None:
    pis = site.pis
    booted = sum(pi.state == "booted" for pi in pis)
    total = sum(pi.tftp_bytes for pi in pis)
    print(f"{booted}/{len(pis)} booted in {times['all booted']:.1f}s from the first bake request")
    print(
        f"  bakes: all answered after {times['all baked']:.1f}s; "
        f"first power-on at {times['first power-on']:.1f}s"
    )
    print(
        f"  per Pi, power-on to booted: median {times['boot median']:.2f}s, "
        f"max {times['boot max']:.2f}s"
    )
    print(
        f"TFTP: {total / MIB:.0f} MiB to {len(pis)} Pis in {times['tftp window']:.1f}s "
        f"= {total / MIB / times['tftp window']:.1f} MiB/s"
    )
    print(f"bakery serve tree: {server.summary()}")
    if ganesha:
        print(f"nfs-ganesha: {ganesha.summary()}")
    for pi in pis:
        if pi.state != "booted":
            print(f"  {pi.serial}: {pi.state} {pi.reason}")


def report_boots(durations: dict[str, float]) -> None:
    """The bucket estimates are capped at the max: no quantile is past the slowest boot."""
    p50, p95 = (min(durations[q], durations["max"]) for q in ("p50", "p95"))
    print(
        f"Bakery's metrics, power-on to userspace up ({durations['boots']:.0f} boots): "
        f"p50 {p50:.2f}s, p95 {p95:.2f}s (from the histogram's buckets), "
        f"max {durations['max']:.2f}s"
    )


if __name__ == "__main__":
    sys.exit(main())
