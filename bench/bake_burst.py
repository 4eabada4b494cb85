"""A burst of bakes: N bake requests at once through ``bakery serve``, timed until all are
answered, against the same N made one after another in the same run.

Run as root from the repository: ``sudo .venv/bin/python bench/bake_burst.py [--pis 40]``.
It starts ``bakery serve`` (SQLite, 2 workers, no TFTP) with its data dir on a btrfs loop
filesystem (snapshots; without root or btrfs a temp dir and copies), imports the
simulator's SD image as a bakeform and registers ``--pis`` Pis with manual power (nothing
boots: what is timed is the API, allocation, the root clone, seasoning, the exports and
the database). Each round bakes every Pi, ``--clients`` requests in flight, then unbakes
them all untimed; then the same bakes one request at a time. Prints the medians of
``--rounds`` and the ratio: how much answering a burst at once gains over a queue.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for bench.served, tests.support

from bench.served import data_dir, start_bakery  # noqa: E402

from bakery.sim.image import build_sd_image  # noqa: E402
from bakery.sim.server import BakeryProcess  # noqa: E402


def timed_bakes(server: BakeryProcess, pis: int, clients: int) -> float:
    """Seconds until ``pis`` bake requests, ``clients`` at a time, are all answered; then
    every bake is unbaked (untimed)."""
    api = server.session()

    def bake(_: int) -> requests.Response:
        return api.post(f"{server.url}/api/v1/bakes", json={"bakeform": "raspios"}, timeout=300)

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        answers = list(pool.map(bake, range(pis)))
    elapsed = time.perf_counter() - started
    failed = [answer.text for answer in answers if answer.status_code != 201]
    if failed:
        raise SystemExit(f"{len(failed)} bakes failed, first: {failed[0]}")
    for answer in answers:
        api.delete(f"{server.url}/api/v1/bakes/{answer.json()['id']}").raise_for_status()
    return elapsed


def medians(run: Callable[[], float], rounds: int) -> tuple[float, list[float]]:
    times = [run() for _ in range(rounds)]
    return statistics.median(times), times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pis", type=int, default=40)
    parser.add_argument("--clients", type=int, default=16, help="requests in flight")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=args.workdir)))
        root, kind = data_dir(stack, workdir)
        server = start_bakery(stack, workdir, root, tftp_enabled=False)
        api = server.session()
        with build_sd_image(workdir / "pi.img").open("rb") as image:
            api.put(f"{server.url}/api/v1/bakeforms/raspios", data=image).raise_for_status()
        for n in range(1, args.pis + 1):
            body = {"serial": f"{n:08x}", "ip": f"127.0.3.{n}"}
            api.post(f"{server.url}/api/v1/pis", json=body).raise_for_status()
        burst, burst_runs = medians(
            lambda: timed_bakes(server, args.pis, args.clients), args.rounds
        )
        queue, queue_runs = medians(lambda: timed_bakes(server, args.pis, 1), args.rounds)
    spread = ", ".join(f"{t:.2f}" for t in burst_runs)
    print(f"data dir: {kind}; {args.pis} Pis, {args.clients} requests in flight")
    print(f"{args.pis} bakes at once: all answered in {burst:.2f}s median (runs {spread})")
    spread = ", ".join(f"{t:.2f}" for t in queue_runs)
    print(f"{args.pis} bakes one at a time: {queue:.2f}s median (runs {spread})")
    print(f"burst vs one at a time: {queue / burst:.2f}x faster")
    return 0


if __name__ == "__main__":
    sys.exit(main())
