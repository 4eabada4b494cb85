"""CPI latency: ``info`` (the whole process) and ``create_vm`` against a live Bakery.

The director runs the CPI once per call and calls ``info`` before nearly every operation,
so process start-up is the CPI's latency; ``create_vm`` is timed from request to answer
(Bakery allocates a Pi, clones the stemcell root, creates and attaches the ephemeral disk,
writes the agent settings, powers on), not counting the Pi's boot, which the director
waits for through the agent. The original bakery-cpi (Go, 2018) polled every 4 s for its
Pi to become ready before answering, so 4 s is the least its create_vm took.

Starts its own Bakery (``bakery serve``, SQLite) on a btrfs loop filesystem when run as
root (the root clone is a snapshot), otherwise in a temp dir (a copy), uploads a
stemcell-like image through the CPI, registers simulated Pis (manual power: nothing
boots) and runs every call director-style (``env -i PATH=...``).

    sudo .venv/bin/python bench/cpi.py [--info-runs 21] [--vm-runs 7] [--root-files 4000]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for bench.served, tests.support

from bench.served import data_dir, start_bakery  # noqa: E402

from bakery.sim.image import build_sd_image  # noqa: E402
from bakery.sim.server import BakeryProcess  # noqa: E402

CPI = Path(sys.executable).with_name("bakery-cpi")
DIRECTOR_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
ORIGINAL_POLL_S = 4.0
INFO_TARGET_S = 0.150
CREATE_VM_TARGET_S = 2.0


def call(config: Path, method: str, *arguments) -> tuple[float, dict]:
    """One director-style CPI call; its wall time (whole process) and its answer."""
    request = json.dumps({"method": method, "arguments": list(arguments), "api_version": 2})
    started = time.perf_counter()
    done = subprocess.run(
        [str(CPI), str(config)], input=request.encode(), capture_output=True, env=DIRECTOR_ENV
    )
    elapsed = time.perf_counter() - started
    response = json.loads(done.stdout)
    if response["error"]:
        raise SystemExit(f"{method} failed: {response['error']}")
    return elapsed, response["result"]


def stemcell_root(top: Path, files: int) -> Path:
    """A root tree shaped like a stemcell's: many small files in nested directories."""
    rng = random.Random(7)
    for index in range(files):
        path = top / f"usr/lib/d{index % 97}/e{index % 13}/f{index}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(min(int(rng.expovariate(1 / 6000)) + 1, 200_000)))
    (top / "etc").mkdir(exist_ok=True)
    (top / "etc/hostname").write_text("stemcell\n")
    return top


def write_cpi_config(workdir: Path, server: BakeryProcess) -> Path:
    config = {
        "bakery": {"url": server.url, "token": server.token},
        "agent": {"mbus": "nats://nats:nats@10.0.0.6:4222"},
        "ephemeral_disk_mib": 10240,
    }
    path = workdir / "cpi.json"
    path.write_text(json.dumps(config))
    return path


def register_pis(server: BakeryProcess, count: int) -> None:
    api = server.session()
    for n in range(1, count + 1):
        body = {"serial": f"{n:08x}", "ip": f"127.0.3.{n}", "mac": f"dc:a6:32:00:01:{n:02x}"}
        api.post(f"{server.url}/api/v1/pis", json=body).raise_for_status()


def time_create_vm(config: Path, stemcell: str, runs: int) -> list[float]:
    """create_vm, then an untimed delete_vm, ``runs`` times."""
    networks = {"default": {"type": "dynamic", "cloud_properties": {}}}
    times = []
    for run in range(runs):
        elapsed, (vm_cid, _) = call(
            config, "create_vm", f"agent-{run}", stemcell, {}, networks, [], {}
        )
        times.append(elapsed)
        call(config, "delete_vm", vm_cid)
    return times


def verdict(seconds: float, target: float) -> str:
    return "ok" if seconds < target else "MISSED"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--info-runs", type=int, default=21)
    parser.add_argument("--vm-runs", type=int, default=7)
    parser.add_argument("--root-files", type=int, default=4000)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=args.workdir)))
        root, where = data_dir(stack, workdir)
        tree = stemcell_root(workdir / "tree", args.root_files)
        image = build_sd_image(workdir / "stemcell.img", root_dir=tree, root_mib=192)
        server = start_bakery(stack, workdir, root)
        config = write_cpi_config(workdir, server)
        register_pis(server, 2)
        upload_s, stemcell = call(
            config, "create_stemcell", str(image), {"name": "bench-stemcell", "version": "1"}
        )
        info = statistics.median(call(config, "info")[0] for _ in range(args.info_runs))
        create_vm = statistics.median(time_create_vm(config, stemcell, args.vm_runs))
    print(f"data dir: {where}; stemcell root {args.root_files} files, upload {upload_s:.2f} s")
    print(
        f"info: {info * 1000:.0f} ms median of {args.info_runs} "
        f"(target < {INFO_TARGET_S * 1000:.0f} ms) {verdict(info, INFO_TARGET_S)}"
    )
    print(
        f"create_vm: {create_vm:.2f} s median of {args.vm_runs} (original bakery-cpi: "
        f">= {ORIGINAL_POLL_S:.0f} s poll interval; ratio {ORIGINAL_POLL_S / create_vm:.1f}x) "
        f"(target < {CREATE_VM_TARGET_S:.0f} s) {verdict(create_vm, CREATE_VM_TARGET_S)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
