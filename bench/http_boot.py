"""How much faster Pis get their boot files over HTTP (one signed boot.img) than over TFTP
(file by file, lock-step), from the same Bakery data dir, in the same run, on loopback.

Run as root from the repository: ``sudo .venv/bin/python bench/http_boot.py``. Every Pi
has its own bake of one bakeform whose boot partition is bench/tftp.py's Pi 4 boot set
(start4.elf 2.2 MB, kernel8.img 8 MiB, fixup, dtb, overlays, config.txt, cmdline.txt;
``--initramfs-mib`` adds an initramfs8 of that size, as Raspberry Pi OS has). Over TFTP a
Pi fetches each file as the Pi 4 bootloader does (tsize probe, Early terminate, then the
download with blksize 1468, a new port per file) from Bakery's ``bakery tftp``; over
HTTP it fetches its ``boot.img`` and ``boot.sig`` (holding those same files) from
``bakery http-boot``, one connection each. Each Pi sends from its own loopback address.
Both servers run side by side on the same data dir and are measured in turn, so a change
in the machine's load hits both; the images are built by an untimed first fetch (they
are made once per bake and kept). Clients run in separate processes, threads for HTTP.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for bench.tftp, tests.*

from bench import tftp as tftp_bench  # noqa: E402

from bakery.sim.server import accepts_connections, free_port  # noqa: E402
from bakery.sim.wait import wait_until  # noqa: E402

MIB = tftp_bench.MIB
TARGET = 5.0


def start_http_boot(data: Path, bind: str) -> subprocess.Popen:
    env = {**os.environ, "BAKERY_ROOT": str(data), "BAKERY_LOG_LEVEL": "WARNING"}
    env["BAKERY_NFS_BACKEND"] = "none"
    bakery = Path(sys.executable).with_name("bakery")
    return subprocess.Popen([str(bakery), "http-boot", "--bind", bind], env=env)


def fetch(address: tuple[str, int], serial: str) -> int:
    """One Pi's HTTP boot: boot.img then boot.sig, one connection each, from its own
    address; the bytes of the bodies. A plain socket reading into one buffer, as a
    bootloader reads into its ramdisk: http.client's copies made the client the
    bottleneck."""
    total = 0
    for name in ("boot.img", "boot.sig"):
        source = (tftp_bench.pi_address(serial), 0)
        with socket.create_connection(address, timeout=60, source_address=source) as sock:
            request = f"GET /{serial}/{name} HTTP/1.1\r\nHost: bakery\r\nConnection: close\r\n\r\n"
            sock.sendall(request.encode())
            total += read_body(sock, f"{serial}/{name}")
    return total


def read_body(sock: socket.socket, what: str) -> int:
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError(f"{what}: connection closed in the headers")
        head += chunk
    header, _, rest = head.partition(b"\r\n\r\n")
    lines = header.decode("latin-1").split("\r\n")
    if lines[0].split()[1] != "200":
        raise RuntimeError(f"{what}: {lines[0]}")
    length = next(
        int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:")
    )
    body = memoryview(bytearray(length))
    body[: len(rest)] = rest
    received = len(rest)
    while received < length:
        count = sock.recv_into(body[received:])
        if not count:
            raise RuntimeError(f"{what}: {received} of {length} bytes")
        received += count
    return length


def _http_client_process(pis, address, start, results) -> None:
    start.wait()
    began = time.monotonic()
    with ThreadPoolExecutor(max_workers=len(pis)) as pool:
        fetched = sum(pool.map(lambda serial: fetch(address, serial), pis))
    results.put((time.monotonic() - began, fetched, 0))


def http_storm(address, pis: list[str], processes: int) -> tuple[float, int, int]:
    """All ``pis`` fetch their boot image at once, split over client processes."""
    return tftp_bench.storm(_http_client_process, pis, processes, address)


def main() -> int:
    parser = tftp_bench.storm_arguments(__doc__)
    parser.add_argument("--initramfs-mib", type=int, default=0)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root (Pis on many loopback addresses, as bench/tftp.py)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="bench-http-boot-") as tmp:
        return run_bench(Path(tmp), args)


def run_bench(work: Path, args) -> int:
    files = tftp_bench.boot_files()
    order = list(tftp_bench.BOOT_ORDER)
    if args.initramfs_mib:
        files["initramfs8"] = os.urandom(args.initramfs_mib * MIB)
        order.insert(order.index("kernel8.img"), "initramfs8")
    pis = tftp_bench.serials(args.clients)
    tftp_port, http_port = free_port(), free_port()
    http_bind = f"127.0.0.1:{http_port}"
    data = tftp_bench.prepare_bakery(work, files, pis, "http", http_boot_bind=http_bind)
    tftp_address, http_address = ("127.0.0.1", tftp_port), ("127.0.0.1", http_port)
    processes = []
    try:
        processes.append(tftp_bench.start_bakery(data, tftp_port, workers=2))
        processes.append(start_http_boot(data, f"127.0.0.1:{http_port}"))
        tftp_bench.wait_until_serving(tftp_address, f"{pis[0]}/config.txt")
        wait_until(lambda: accepts_connections(http_address), 30, what="bakery http-boot")
        tftp_bench.measure_once(tftp_address, pis[:1], 1, order)  # warm caches, untimed
        http_storm(http_address, pis, args.client_processes)  # builds every boot.img
        rounds: dict[str, list[tuple[float, int, int]]] = {"tftp": [], "http": []}
        for _ in range(args.repeats):
            storm = tftp_bench.boot_storm(tftp_address, pis, order, args.client_processes)
            rounds["tftp"].append(storm)
            rounds["http"].append(http_storm(http_address, pis, args.client_processes))
    finally:
        for process in processes:
            tftp_bench.stop(process)
    return report(rounds, len(pis))


def report(rounds: dict[str, list[tuple[float, int, int]]], count: int) -> int:
    medians = {}
    for name, runs in rounds.items():
        medians[name] = statistics.median(run[0] for run in runs)
        spread = ", ".join(f"{run[0]:.2f}" for run in runs)
        per_pi = runs[0][1] / count / MIB
        failed = sum(run[2] for run in runs)
        print(
            f"{name:4s}: {count} Pis at once {medians[name]:.2f}s ({per_pi:.1f} MiB per Pi, "
            f"{runs[0][1] / medians[name] / MIB:.0f} MiB/s, {failed} failed; runs {spread})",
            flush=True,
        )
    ratio = medians["tftp"] / medians["http"]
    verdict = "ok" if ratio >= TARGET else "MISSED"
    print(f"{count} Pis, HTTP vs TFTP: {ratio:.1f}x faster (target >= {TARGET}x) {verdict}")
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
