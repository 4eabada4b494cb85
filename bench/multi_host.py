"""Bake throughput with 1, 2 and 3 Bakery hosts sharing one PostgreSQL database: how close
n hosts come to n times the bakes per second of one.

Run as root from the repository: ``sudo .venv/bin/python bench/multi_host.py``.
It starts one throwaway PostgreSQL server and, for each host count, a fresh database in
it and that many simulated sites (``bakery.sim.runner.SimulatedSite``, loopback mode:
``bakery serve`` with 2 workers and its TFTP server, ``--pis-per-host`` simulated Pis with
webhook power, serials distinct per host), each with its own data dir and host_id
``rack-<i>``. Only rack-1 imports the ``demo`` bakeform; the others find it in the
database and copy it. Nothing boots (``power_on: false``): what is timed is the API,
allocation in the shared database, the root clone, seasoning and the exports.

A round sends ``hosts x --pis-per-host`` bake requests without a serial, round-robin over
the hosts' APIs, ``--clients`` per host in flight, and is timed until all are answered
(every one must be 201); then every bake is unbaked untimed, each through another host's
API than the one that baked it (which hands the unbake to the bake's host). An untimed
warm-up round first puts the bakeform copies in place. Prints the median of ``--rounds``
per host count and its ratio to one host.

Fairness: all hosts run on this one machine and share its cores and its disk (and the
database server runs there too), so n hosts get no more hardware than one. The ratio
shows what the shared database and the job routing cost, not what n separate machines
would give: there, the ideal is n x.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import requests
from requests.adapters import HTTPAdapter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.support

from tests.support.postgres import create_database, postgres_server  # noqa: E402

from bakery.sim.runner import DEMO_BAKEFORM, FIRST_SERIAL, SimulatedSite, SiteOptions  # noqa: E402
from bakery.sim.wait import wait_until  # noqa: E402

#: Serials of host i start at FIRST_SERIAL + SERIAL_STRIDE * i.
SERIAL_STRIDE = 0x1000
BAKE_REQUEST = {"bakeform": DEMO_BAKEFORM, "power_on": False}


@dataclass
class Host:
    """One running Bakery host and an HTTP session to its API."""

    name: str
    site: SimulatedSite
    session: requests.Session
    url: str

    def bake(self) -> requests.Response:
        return self.session.post(f"{self.url}/api/v1/bakes", json=BAKE_REQUEST, timeout=300)

    def unbake(self, bake_id: str) -> requests.Response:
        return self.session.delete(f"{self.url}/api/v1/bakes/{bake_id}", timeout=300)

    def has_bakeform(self) -> bool:
        answer = self.session.get(f"{self.url}/api/v1/bakeforms/{DEMO_BAKEFORM}", timeout=30)
        return answer.status_code == 200


@dataclass
class Baked:
    """A bake, the host whose API answered it and the host that made it (another one when
    the answering host had no free Pi and handed the bake on)."""

    host: Host
    bake_id: str
    made_by: str

    @property
    def handed_on(self) -> bool:
        return self.made_by != self.host.name


@dataclass
class Result:
    hosts: int
    bakes: int
    seconds: float
    runs: list[float]
    handed_on: int

    @property
    def rate(self) -> float:
        return self.bakes / self.seconds


def start_host(
    stack: ExitStack, base: Path, index: int, database_url: str, pis: int, connections: int
) -> Host:
    """Host ``rack-<index + 1>``, stopped with ``stack``. The first host of a database
    makes the admin token; later ones are handed its file before they start (the token
    is in the database, the file only in the first host's data dir). ``connections``: the
    most requests the bench may have in flight to it."""
    name = f"rack-{index + 1}"
    root = base / name / "data"
    options = SiteOptions(
        root=root,
        workdir=base / name / "site",
        pis=pis,
        mode="loopback",
        power_on_gap=0,
        first_serial=FIRST_SERIAL + SERIAL_STRIDE * index,
        bakeform=DEMO_BAKEFORM if index == 0 else None,
        settings={"database_url": database_url, "host_id": name},
    )
    if index > 0:
        seed_admin_token(root, (base / "rack-1" / "data" / "admin-token").read_text())
    site = stack.enter_context(SimulatedSite(options))
    assert site.server is not None  # the site started it
    session = site.server.session()
    session.mount("http://", HTTPAdapter(pool_maxsize=connections))
    host = Host(name, site, session, site.server.url)
    readdress(host, index)
    return host


def seed_admin_token(root: Path, token: str) -> None:
    root.mkdir(parents=True, mode=0o700)
    descriptor = os.open(root / "admin-token", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(token)


def readdress(host: Host, index: int) -> None:
    """Give the host's Pis addresses of their own (127.<101 + index>.x.y): every site
    hands out the same loopback addresses, and an address registered again is taken
    from the Pi that had it, whose bakes would then skip the export step. Nothing boots,
    so the simulated Pis need not know."""
    first = ipaddress.ip_address(f"127.{101 + index}.0.1")
    for offset, pi in enumerate(host.site.pis):
        body = {"ip": str(first + offset)}
        host.session.patch(f"{host.url}/api/v1/pis/{pi.serial}", json=body).raise_for_status()


def start_hosts(
    stack: ExitStack, base: Path, count: int, database_url: str, args: argparse.Namespace
) -> list[Host]:
    hosts = [
        start_host(stack, base, i, database_url, args.pis_per_host, args.clients * count)
        for i in range(count)
    ]
    for host in hosts:  # the bakeform is shared in the database
        wait_until(host.has_bakeform, 120, what=f"bakeform {DEMO_BAKEFORM} on {host.name}")
    return hosts


def bake_all(hosts: Sequence[Host], pool: ThreadPoolExecutor, per_host: int) -> list[Baked]:
    """``per_host`` bakes per host, requested round-robin; SystemExit unless all are 201."""
    targets = [hosts[i % len(hosts)] for i in range(per_host * len(hosts))]
    answers = list(zip(targets, pool.map(Host.bake, targets), strict=True))
    for number, (host, answer) in enumerate(answers, 1):
        if answer.status_code != 201:
            raise SystemExit(
                f"bake {number} of {len(answers)} through {host.name} answered "
                f"HTTP {answer.status_code}: {answer.text.strip()}"
            )
    return [Baked(host, answer.json()["id"], answer.json()["host"]) for host, answer in answers]


def unbake_all(hosts: Sequence[Host], pool: ThreadPoolExecutor, baked: list[Baked]) -> None:
    """Unbake each bake through the API of the host after the one asked to bake it."""
    list(pool.map(lambda bake: unbake_elsewhere(hosts, bake), baked))


def unbake_elsewhere(hosts: Sequence[Host], baked: Baked) -> None:
    other = hosts[(hosts.index(baked.host) + 1) % len(hosts)]
    answer = other.unbake(baked.bake_id)
    if answer.status_code != 200:
        raise SystemExit(
            f"unbake of {baked.bake_id} (baked by {baked.made_by}) through {other.name} "
            f"answered HTTP {answer.status_code}: {answer.text.strip()}"
        )


def timed(run: Callable[[], list[Baked]]) -> tuple[float, list[Baked]]:
    started = time.perf_counter()
    baked = run()
    return time.perf_counter() - started, baked


def measure(hosts: Sequence[Host], per_host: int, clients: int, rounds: int) -> Result:
    """A warm-up round, then ``rounds`` timed ones (bakes timed, unbakes not)."""
    runs: list[float] = []
    handed_on = 0
    with ThreadPoolExecutor(clients * len(hosts)) as pool:
        for round_number in range(rounds + 1):
            seconds, baked = timed(lambda: bake_all(hosts, pool, per_host))
            unbake_all(hosts, pool, baked)
            if round_number:
                runs.append(seconds)
                handed_on += sum(bake.handed_on for bake in baked)
    median = statistics.median(runs)
    return Result(len(hosts), per_host * len(hosts), median, runs, handed_on)


def run_hosts(admin_url: str, base: Path, count: int, args: argparse.Namespace) -> Result:
    database_url = create_database(admin_url)
    with ExitStack() as stack:
        hosts = start_hosts(stack, base / f"{count}-hosts", count, database_url, args)
        return measure(hosts, args.pis_per_host, args.clients, args.rounds)


def report(result: Result, one: Result) -> str:
    label = f"{result.hosts} host{'s' if result.hosts > 1 else ''}:"
    line = f"{label:8} {result.bakes} bakes in {result.seconds:.1f} s, {result.rate:.1f} bakes/s"
    if result.hosts > 1:
        line += f", {result.rate / one.rate:.2f}x one host"
    spread = ", ".join(f"{t:.2f}" for t in result.runs)
    line += f" (runs {spread})"
    if result.handed_on:
        line += f"; {result.handed_on} timed bakes made by another host than the one asked"
    return line


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-hosts", type=int, default=3)
    parser.add_argument("--pis-per-host", type=int, default=10)
    parser.add_argument("--clients", type=int, default=8, help="requests in flight per host")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    print(
        f"{args.pis_per_host} Pis per host, {args.clients} requests in flight per host, "
        f"median of {args.rounds} rounds, one PostgreSQL",
        flush=True,
    )
    with ExitStack() as stack:
        base = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=args.workdir)))
        admin_url = stack.enter_context(postgres_server())
        one = run_hosts(admin_url, base, 1, args)
        print(report(one, one), flush=True)
        for count in range(2, args.max_hosts + 1):
            print(report(run_hosts(admin_url, base, count, args), one), flush=True)
    print(
        "ideal: n hosts = n x one host (separate machines); these share one machine's "
        f"{os.cpu_count()} cores, its disk and the database server"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
