"""How fast Bakery's TFTP server feeds booting Pis, against tftpd-hpa and dnsmasq's TFTP,
in the same run, on loopback.

Run as root from the repository: ``sudo .venv/bin/python bench/tftp.py``. Every server
serves the same Pi 4 boot set (start4.elf 2.2 MB, kernel8.img 8 MiB, fixup, dtb,
overlays, config.txt, cmdline.txt) under ``<serial>/``; Bakery's comes from a real
baked Pi per serial in a temp data dir (SQLite). Clients are Pi-4-shaped (probe with
``tsize`` + Early terminate, then fetch with ``blksize 1468``, a new port per RRQ,
each Pi from its own loopback address), driven from separate client processes so the
client is not the bottleneck. The three
servers run side by side and are measured round-robin, so the machine's load swings hit
them alike.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.*

from bakery import models  # noqa: E402
from bakery.config import load_settings  # noqa: E402
from bakery.fleet import Fleet  # noqa: E402
from bakery.sim.image import build_sd_image, default_boot_files  # noqa: E402
from bakery.sim.tftp_client import Download, pi4_sequence, run  # noqa: E402

MIB = 1024 * 1024
#: A Pi 4 boot set of realistic sizes (pi-netboot §7).
SIZES = {
    "start4.elf": 2_250_000,
    "fixup4.dat": 5_400,
    "bcm2711-rpi-4-b.dtb": 55_000,
    "overlays/vc4-kms-v3d.dtbo": 3_500,
    "overlays/disable-bt.dtbo": 1_200,
    "overlays/dwc2.dtbo": 1_100,
    "kernel8.img": 8 * MIB,
}
BOOT_ORDER = (
    "start4.elf",
    "config.txt",
    "fixup4.dat",
    "config.txt",
    "bcm2711-rpi-4-b.dtb",
    "overlays/vc4-kms-v3d.dtbo",
    "overlays/disable-bt.dtbo",
    "overlays/dwc2.dtbo",
    "cmdline.txt",
    "kernel8.img",
)
#: Seconds a storm may take before its client processes are taken for dead.
STORM_TIMEOUT = 600
TARGETS = {"single vs tftpd-hpa": 0.6, "all Pis at once vs dnsmasq": 1.0}


def boot_files() -> dict[str, bytes]:
    files = dict(default_boot_files())
    for name, size in SIZES.items():
        files[name] = os.urandom(size)
    return files


def serials(count: int) -> list[str]:
    return [f"{0x10000000 + i:08x}" for i in range(count)]


def pi_address(serial: str) -> str:
    """Each Pi's own loopback address, as each real Pi has its own (127.0.1.1, ...)."""
    index = int(serial, 16) - 0x10000000
    return f"127.0.{1 + index // 250}.{1 + index % 250}"


# -- the servers ---------------------------------------------------------------------------


def prepare_bakery(
    work: Path, files: dict[str, bytes], pis: list[str], boot_protocol: str = "tftp", **settings_
) -> Path:
    """A data dir with one bakeform and ``pis`` Pis baked to boot over ``boot_protocol``
    (``settings_`` added to the data dir's settings); returns the data dir."""
    image = build_sd_image(work / "pi.img", boot=files, boot_mib=128)
    root = work / "data"
    root.mkdir()
    settings = load_settings(environ={}, root=root, power_on_gap=0, nfs_backend="none", **settings_)
    models.connect(settings.database)
    models.create_schema()
    with models.database.connection_context():
        fleet = Fleet(settings)
        with open(image, "rb") as upload:
            fleet.import_bakeform("raspios", upload)
        for serial in pis:
            fleet.register_pi(serial, ip=pi_address(serial), boot_protocol=boot_protocol)
            fleet.bake("raspios", serial=serial)
    models.database.close()
    return root


def prepare_peer_tree(work: Path, files: dict[str, bytes], pis: list[str]) -> Path:
    """``<root>/<serial>/...`` for the peers, the files hard-linked between serials."""
    tree = work / "tftproot"
    master = tree / "master"
    for name, content in files.items():
        (master / name).parent.mkdir(parents=True, exist_ok=True)
        (master / name).write_bytes(content)
    for serial in pis:
        shutil.copytree(master, tree / serial, copy_function=os.link)
    return tree


def start_bakery(data: Path, port: int, workers: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "BAKERY_ROOT": str(data),
        "BAKERY_NFS_BACKEND": "none",
        "BAKERY_LOG_LEVEL": "WARNING",
    }
    bakery = Path(sys.executable).with_name("bakery")
    command = [str(bakery), "tftp", "--bind", f"127.0.0.1:{port}", "--workers", str(workers)]
    return subprocess.Popen(command, env=env)


def start_tftpd_hpa(tree: Path, port: int) -> subprocess.Popen:
    command = ["in.tftpd", "-L", "-u", "root", "-a", f"127.0.0.1:{port}", "-s", str(tree)]
    return subprocess.Popen([*command, "-B", "1468"])


def start_dnsmasq(tree: Path, work: Path) -> subprocess.Popen:
    """dnsmasq's TFTP port is always 69: give it its own loopback address."""
    return subprocess.Popen(
        [
            "dnsmasq",
            "-k",
            "--conf-file=/dev/null",
            "--port=0",
            "--listen-address=127.0.0.3",
            "--bind-interfaces",
            "--enable-tftp",
            f"--tftp-root={tree}",
            "--tftp-max=1000",
            "--user=root",
            "--log-facility=/dev/null",
            f"--pid-file={work / 'dnsmasq.pid'}",
        ]
    )


def wait_until_serving(address: tuple[str, int], probe: str, deadline: float = 10.0) -> None:
    """Until the server answers a probe RRQ (any answer will do)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        download = Download(address, probe, {"tsize": 0}, probe=True)
        run([iter([download])], timeout=0.3, retransmit=0.1)
        if download.done:
            return
    raise RuntimeError(f"no TFTP server answering on {address}")


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# -- the clients ---------------------------------------------------------------------------


def _client_process(pis, address, files, start, results) -> None:
    start.wait()  # every client process at the start line, and the parent's clock
    began = time.monotonic()
    sequences = [pi4_sequence(address, serial, files, pi_address(serial)) for serial in pis]
    finished = run(sequences, timeout=10)
    elapsed = time.monotonic() - began
    fetched = sum(len(d.data) for downloads in finished for d in downloads if not d.probe)
    failed = sum(1 for downloads in finished for d in downloads if d.error or not d.done)
    results.put((elapsed, fetched, failed))


def storm(client, pis: list[str], processes: int, *args) -> tuple[float, int, int]:
    """All ``pis`` at once, split over client processes each running ``client(share,
    *args, start, results)``, which waits on ``start`` and puts (seconds, bytes, failures)
    on ``results``. Returns (seconds from the start signal to the last Pi, bytes fetched,
    failures)."""
    context = multiprocessing.get_context("fork")
    shares = [share for share in (pis[i::processes] for i in range(processes)) if share]
    start, results = context.Barrier(len(shares) + 1), context.Queue()
    workers = [
        context.Process(target=client, args=(share, *args, start, results)) for share in shares
    ]
    for worker in workers:
        worker.start()
    start.wait()
    began = time.monotonic()
    outcomes = [results.get(timeout=STORM_TIMEOUT) for _ in workers]  # a dead client: Empty
    elapsed = time.monotonic() - began
    for worker in workers:
        worker.join()
    return elapsed, sum(o[1] for o in outcomes), sum(o[2] for o in outcomes)


def boot_storm(address, pis: list[str], files, processes: int) -> tuple[float, int, int]:
    """All ``pis`` boot over TFTP at once, split over client processes."""
    return storm(_client_process, pis, processes, address, files)


def curl_time(address: tuple[str, int], path: str, clients: int) -> float:
    """The same downloads with curl (C) as the client: a check on our Python client."""
    url = f"tftp://{address[0]}:{address[1]}/{path}"
    began = time.monotonic()
    procs = [
        subprocess.Popen(["curl", "-sf", "--tftp-blksize", "1468", "-o", "/dev/null", url])
        for _ in range(clients)
    ]
    if any(p.wait() for p in procs):
        raise RuntimeError("curl failed")
    return time.monotonic() - began


# -- the run -------------------------------------------------------------------------------


def measure_once(address, pis, processes, files_per_pi) -> tuple[float, float, tuple]:
    """One round against one server: the kernel alone, one Pi's boot, all Pis at once."""
    kernel = boot_storm(address, pis[:1], ["kernel8.img"], 1)[0]
    single = boot_storm(address, pis[:1], files_per_pi, 1)[0]
    return kernel, single, boot_storm(address, pis, files_per_pi, processes)


def summarize(name: str, pis: list[str], rounds: list[tuple]) -> dict[str, float]:
    """Medians over the rounds, printed with every storm's time (the spread)."""
    storms = [r[2] for r in rounds]
    failed = sum(s[2] for s in storms)
    total = storms[0][1]
    result = {
        "kernel": statistics.median(r[0] for r in rounds),
        "single": statistics.median(r[1] for r in rounds),
        "storm": statistics.median(s[0] for s in storms),
        "storm_bytes": total,
        "failed": failed,
    }
    spread = ", ".join(f"{s[0]:.2f}" for s in storms)
    print(
        f"{name:10s} 8 MiB kernel {result['kernel']:.3f}s | one Pi boot set {result['single']:.3f}s"
        f" | {len(pis)} Pis at once {result['storm']:.2f}s"
        f" ({total / result['storm'] / MIB:.0f} MiB/s, {failed} failed transfers; runs {spread})",
        flush=True,
    )
    return result


def storm_arguments(description: str) -> argparse.ArgumentParser:
    """The options every boot-storm bench takes: how many Pis, rounds and client
    processes, and where its temp dir goes."""
    parser = argparse.ArgumentParser(description=description.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    return parser


def main() -> int:
    parser = storm_arguments(__doc__)
    parser.add_argument("--workers", type=int, default=2, help="Bakery TFTP processes")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root (dnsmasq's TFTP binds port 69)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="bench-tftp-") as tmp:
        return run_bench(Path(tmp), args)


def run_bench(work: Path, args) -> int:
    files = boot_files()
    pis = serials(args.clients)
    data = prepare_bakery(work, files, pis)
    tree = prepare_peer_tree(work, {**files, "cmdline.txt": b"console=tty1 root=/dev/nfs\n"}, pis)
    bakery_port, hpa_port = free_port(), free_port()
    processes: list[subprocess.Popen] = []
    try:
        processes.append(start_bakery(data, bakery_port, args.workers))
        processes.append(start_tftpd_hpa(tree, hpa_port))
        processes.append(start_dnsmasq(tree, work))
        servers = {
            "bakery": ("127.0.0.1", bakery_port),
            "tftpd-hpa": ("127.0.0.1", hpa_port),
            "dnsmasq": ("127.0.0.3", 69),
        }
        results = measure_interleaved(servers, pis, args)
        check_client(servers["tftpd-hpa"], pis, results["tftpd-hpa"])
    finally:
        for process in processes:
            stop(process)
    return report(results)


def measure_interleaved(servers: dict, pis: list[str], args) -> dict[str, dict[str, float]]:
    """Round-robin over the servers, all running (idle ones cost nothing), so a change
    in the machine's load during the run hits every server alike instead of whichever
    happened to be measured then."""
    rounds: dict[str, list[tuple]] = {name: [] for name in servers}
    for address in servers.values():
        wait_until_serving(address, f"{pis[0]}/config.txt")
        measure_once(address, pis[:1], 1, BOOT_ORDER)  # warm caches, untimed
    for _ in range(args.repeats):
        for name, address in servers.items():
            rounds[name].append(measure_once(address, pis, args.client_processes, BOOT_ORDER))
    return {name: summarize(name, pis, rounds[name]) for name in servers}


def check_client(address, pis, measured) -> None:
    """Is the Python client the bottleneck? Compare with curl on the 8 MiB kernel."""
    path = f"{pis[0]}/kernel8.img"
    single = min(curl_time(address, path, 1) for _ in range(3))
    many = curl_time(address, path, len(pis))
    print(
        f"client check (tftpd-hpa, 8 MiB kernel): curl single {single:.3f}s vs ours"
        f" {measured['kernel']:.3f}s; curl x{len(pis)} at once {many:.2f}s",
        flush=True,
    )


def report(results: dict[str, dict[str, float]]) -> int:
    bakery, hpa, dnsmasq = results["bakery"], results["tftpd-hpa"], results["dnsmasq"]
    ratios = {
        "single vs tftpd-hpa": hpa["single"] / bakery["single"],
        "all Pis at once vs dnsmasq": dnsmasq["storm"] / bakery["storm"],
    }
    extra = {
        "single vs dnsmasq": dnsmasq["single"] / bakery["single"],
        "all Pis at once vs tftpd-hpa": hpa["storm"] / bakery["storm"],
    }
    ok = True
    for name, ratio in ratios.items():
        passed = ratio >= TARGETS[name]
        ok &= passed
        verdict = "ok" if passed else "MISSED"
        print(f"{name}: {ratio:.2f}x throughput (target >= {TARGETS[name]}x) {verdict}")
    for name, ratio in extra.items():
        print(f"{name}: {ratio:.2f}x throughput")
    if any(r["failed"] for r in results.values()):
        print("some transfers failed: see the counts above")
    return 0 if ok else 1


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    sys.exit(main())
