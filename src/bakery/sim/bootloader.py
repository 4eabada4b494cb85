"""What a Pi does from power-on to a mounted root, per model (pi-netboot §1-3).

1. DHCP: broadcast the model's DISCOVER and wait for a proxy offer whose boot menu
   says "Raspberry Pi Boot"; its option 54 is the TFTP server (skipped in loopback
   mode, where the server is configured like the EEPROM's ``TFTP_IP``).
2. TFTP, in the model's order: the Pi 3B/3B+ ROM fetches ``bootcode.bin`` and
   ``bootsig.bin`` from the root with 512-byte blocks, then probes
   ``<serial>/start.elf``; the Pi 4 probes ``<serial>/start4.elf``; without either the
   prefix is dropped. Both then load config.txt, ``start*.elf`` and fixup, config.txt
   again, the device tree, overlays, cmdline.txt and the kernel. The Pi 5 has no
   ``start*.elf``: it asks for ``<serial>/config.txt`` then ``<serial>//config.txt``
   (and acts on the second), then probes ``kernel_2712.img``. Files are probed first
   (tsize, then "Early terminate") and then downloaded, as the bootloaders do.
   A Pi 4 or 5 whose EEPROM is set to HTTP boot (``SimPi.http_boot``) fetches
   ``boot.img`` and ``boot.sig`` over HTTP instead, refuses an image whose signature its
   key does not verify, and takes config.txt, the device tree, cmdline.txt and the
   kernel from the FAT image (``sim.http_boot``).
3. The kernel reads ``nfsroot=<server>:<path>`` from cmdline.txt and mounts it; the
   simulated kernel reads ``<path>/etc/hostname``, retrying as nfsroot does while the
   server is not ready.

A missing required file, a TFTP timeout, a refused mount or a missing offer raises
``BootFailure``: the Pi stops there, as a real one would on its rainbow screen.
Power-off is the ``power_off`` event; every wait watches it and raises
``BootCancelled``.
"""

from __future__ import annotations

import http.client
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ..stemcell.install import API_URL_FILE
from ..stemcell.install import DEFAULT_SECRET_PATH as SECRET_FILE
from . import dhcp_client, http_boot, nfs, userspace
from .models import SimPi
from .network import Link
from .tftp_client import Download, run

PI4_BLKSIZE = 1468
BOOT_MENU_TEXT = "Raspberry Pi Boot"
TFTP_PORT = 69
#: Seconds between two NFS mount attempts (the kernel's nfsroot retries, too).
NFS_RETRY = 0.5
NFSROOT_RE = re.compile(r"(?:^|\s)nfsroot=(?P<server>[^:\s,]+):(?P<path>/[^,\s]*)")
#: What each HTTP-booting model's firmware reads from boot.img: its device tree, and the
#: kernels it tries when config.txt names none.
HTTP_BOOT_FILES = {
    "4B": ("bcm2711-rpi-4-b.dtb", ("kernel8.img",)),
    "5": ("bcm2712-rpi-5-b.dtb", ("kernel_2712.img", "kernel8.img")),
}
#: The DHCP model each of Bakery's model names speaks with.
DHCP_MODELS = {"3B": "3b", "3B+": "3b+", "4B": "4", "5": "5"}


class BootFailure(Exception):
    """The boot stopped; the message is the reason shown in the Pi's status."""


class BootCancelled(Exception):
    """The Pi lost power mid-boot."""


@dataclass(frozen=True)
class Timeouts:
    """How long a simulated Pi waits; shorter than a real EEPROM's defaults
    (45 s DHCP, 30 s per TFTP file) so a failure shows up quickly."""

    dhcp: float = 10.0
    tftp_file: float = 5.0
    nfs: float = 15.0


DEFAULT_TIMEOUTS = Timeouts()

Report = Callable[[str, str, str], None]


class Tftp:
    """One Pi's TFTP requests: the options its bootloader stage sends, probes, and
    failures turned into BootFailure. Each file downloaded goes on the timeline."""

    def __init__(
        self,
        server: tuple[str, int],
        pi: SimPi,
        timeout: float,
        cancelled: Callable[[], bool],
        report: Report,
    ) -> None:
        self.server, self.pi, self.timeout = server, pi, timeout
        self.cancelled, self.report = cancelled, report
        self.options: dict[str, str | int] = {"tsize": 0}

    def transfer(self, name: str, options: dict[str, str | int], probe: bool) -> Download:
        download = Download(self.server, name, dict(options), probe, self.pi.address)
        run([iter([download])], timeout=self.timeout, cancelled=self.cancelled)
        if self.cancelled():
            raise BootCancelled
        if download.error is None and not download.done:
            raise BootFailure(f"TFTP: no answer for {name} in {self.timeout:.0f} s")
        if download.error is not None and download.error[0] != 1:
            raise BootFailure(f"TFTP error {download.error[0]} for {name}: {download.error[1]}")
        return download

    def probe(self, name: str) -> bool:
        """The existence check: tsize, read the OACK, send "Early terminate"."""
        return self.transfer(name, {"tsize": 0}, probe=True).error is None

    def get(
        self, name: str, required: bool = True, options: dict[str, str | int] | None = None
    ) -> bytes | None:
        """Download ``name``; None when it does not exist and is not ``required``."""
        download = self.transfer(name, self.options if options is None else options, False)
        if download.error is not None:
            if required:
                raise BootFailure(f"TFTP: {name} not found")
            return None
        self.pi.tftp_bytes += len(download.data)
        self.report("tftp", "tftp", f"{name} ({len(download.data)} bytes)")
        return bytes(download.data)

    def fetch(self, name: str, required: bool = True) -> bytes | None:
        """Probe, then download: how the bootloaders load most files."""
        if not self.probe(name):
            if required:
                raise BootFailure(f"TFTP: {name} not found")
            return None
        return self.get(name, required)


@dataclass(frozen=True)
class BootConfig:
    """The few config.txt settings a netboot follows."""

    kernel: str | None
    overlays: tuple[str, ...]

    @classmethod
    def parse(cls, text: bytes | None) -> BootConfig:
        kernel, overlays = None, []
        for line in (text or b"").decode("latin-1").splitlines():
            key, _, value = line.split("#", 1)[0].strip().partition("=")
            if key == "kernel" and value:
                kernel = value.strip()
            elif key == "dtoverlay" and value:
                overlays.append(value.split(",", 1)[0].strip())
        return cls(kernel, tuple(overlays))


def parse_nfsroot(cmdline: str) -> tuple[str, str]:
    """The (server, path) of ``nfsroot=`` in a kernel command line."""
    match = NFSROOT_RE.search(cmdline)
    if match is None:
        raise BootFailure("cmdline.txt has no nfsroot=<server>:<path>: no root to mount")
    return match["server"], match["path"]


class Bootloader:
    """One boot of ``pi``; ``report(state, step, detail)`` tells the simulator."""

    def __init__(
        self,
        pi: SimPi,
        link: Link,
        report: Report,
        power_off: threading.Event,
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
    ) -> None:
        self.pi, self.link, self.report = pi, link, report
        self.power_off, self.cancelled, self.timeouts = power_off, power_off.is_set, timeouts

    def boot(self) -> tuple[str, str] | None:
        """Boot up to the kernel's NFS root; returns its server and path when the root's
        init is to run next (an init this machine can run, on a Pi with its own network
        namespace), else None (the sim then reports userspace itself)."""
        self.console(f"RPi: BOOTLOADER release VERSION:sim DATE: 2026/12/01 board {self.pi.model}")
        self.console(
            f"boot: mode {'HTTP 7' if self.pi.http_boot else 'NETWORK 2'} serial {self.pi.serial}"
        )
        server = self.dhcp()
        self.console(f"NET_BOOT: server {server[0]} from {self.pi.address}")
        if self.pi.http_boot is not None:
            cmdline = self.load_over_http(self.pi.http_boot).decode("latin-1")
        else:
            self.report("tftp", "tftp", f"TFTP server {server[0]}:{server[1]}")
            tftp = Tftp(server, self.pi, self.timeouts.tftp_file, self.cancelled, self.report)
            cmdline = self.load(tftp).decode("latin-1")
        self.console("boot: kernel loaded; starting it with its cmdline.txt")
        nfs_server, root = parse_nfsroot(cmdline)
        return self.mount(nfs_server, root)

    def console(self, line: str) -> None:
        """One line of the bootloader's log, sent as NETCONSOLE sends it: a UDP datagram
        from the Pi's address (nothing when the EEPROM does not set NETCONSOLE)."""
        if self.pi.netconsole is None:
            return
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((self.pi.address, 0))
            sock.sendto(f"{line}\r\n".encode(), self.pi.netconsole)

    # -- DHCP ----------------------------------------------------------------------------

    def dhcp(self) -> tuple[str, int]:
        if self.link.interface is None:
            self.report("tftp", "dhcp", "skipped: no DHCP in loopback mode")
            assert self.link.tftp_server is not None  # a link without DHCP names its server
            return self.link.tftp_server
        self.report("dhcp", "dhcp", f"DISCOVER from {self.pi.mac}")
        identity = dhcp_client.PiIdentity(
            DHCP_MODELS[self.pi.model], self.pi.mac, serial=self.pi.serial
        )
        sock = dhcp_client.client_socket(self.link.interface)
        try:
            offers = dhcp_client.offers(
                sock, identity, self.timeouts.dhcp, cancelled=self.cancelled
            )
        finally:
            sock.close()
        if self.cancelled():
            raise BootCancelled
        for offer in offers:
            if any(BOOT_MENU_TEXT in entry for entry in offer.boot_menu) and offer.server_id:
                self.report("dhcp", "dhcp", f"proxy offer from {offer.server_id}")
                return offer.server_id, TFTP_PORT
        raise BootFailure(
            f"DHCP: no proxy offer with {BOOT_MENU_TEXT!r} in {self.timeouts.dhcp:.0f} s"
        )

    # -- TFTP, per model -------------------------------------------------------------------

    def load(self, tftp: Tftp) -> bytes:
        """Every file up to the kernel; returns cmdline.txt."""
        if self.pi.model == "5":
            return self.load_pi5(tftp)
        if self.pi.model == "4B":
            return self.load_pi4(tftp)
        return self.load_pi3(tftp)

    def prefix(self, tftp: Tftp, firmware: tuple[str, ...]) -> str:
        """``<serial>/`` if it holds a start file, else the TFTP root (pi-netboot §2.2)."""
        serial = self.pi.serial
        return f"{serial}/" if any(tftp.probe(f"{serial}/{name}") for name in firmware) else ""

    def load_pi3(self, tftp: Tftp) -> bytes:
        tftp.get("bootcode.bin", options={})  # the ROM: no options, 512-byte blocks
        tftp.get("bootsig.bin", required=False, options={})
        prefix = self.prefix(tftp, ("start.elf",))
        tftp.fetch(f"{prefix}autoboot.txt", required=False)
        config = tftp.fetch(f"{prefix}config.txt", required=False)
        tftp.fetch(f"{prefix}recovery.elf", required=False)
        tftp.fetch(f"{prefix}start.elf")
        tftp.fetch(f"{prefix}fixup.dat")
        tftp.fetch(f"{prefix}config.txt", required=False)
        tftp.fetch(f"{prefix}dt-blob.bin", required=False)
        dtb = "bcm2710-rpi-3-b-plus.dtb" if self.pi.model == "3B+" else "bcm2710-rpi-3-b.dtb"
        return self.load_kernel(tftp, prefix, config, dtb, ("kernel8.img", "kernel7.img"))

    def load_pi4(self, tftp: Tftp) -> bytes:
        tftp.options = {"tsize": 0, "blksize": PI4_BLKSIZE}
        prefix = self.prefix(tftp, ("start4.elf", "start.elf"))
        config = tftp.fetch(f"{prefix}config.txt", required=False)
        tftp.fetch(f"{prefix}start4.elf")
        tftp.fetch(f"{prefix}fixup4.dat")
        tftp.fetch(f"{prefix}config.txt", required=False)
        return self.load_kernel(tftp, prefix, config, "bcm2711-rpi-4-b.dtb", ("kernel8.img",))

    def load_pi5(self, tftp: Tftp) -> bytes:
        tftp.options = {"tsize": 0, "blksize": PI4_BLKSIZE}
        serial = self.pi.serial
        tftp.fetch(f"{serial}/config.txt", required=False)
        config = tftp.fetch(f"{serial}//config.txt", required=False)  # the one it acts on
        kernels = ("kernel_2712.img", "kernel8.img")
        return self.load_kernel(tftp, f"{serial}/", config, "bcm2712-rpi-5-b.dtb", kernels)

    def load_kernel(
        self, tftp: Tftp, prefix: str, config: bytes | None, dtb: str, kernels: tuple[str, ...]
    ) -> bytes:
        """What every model loads after its firmware: device tree, overlays, cmdline.txt
        and the kernel config.txt names (else the first of ``kernels`` that exists)."""
        settings = BootConfig.parse(config)
        tftp.fetch(f"{prefix}{dtb}")
        for overlay in settings.overlays:
            tftp.fetch(f"{prefix}overlays/{overlay}.dtbo", required=False)
        cmdline = tftp.fetch(f"{prefix}cmdline.txt")
        assert cmdline is not None  # required: fetch raises rather than answer None
        for kernel in (settings.kernel,) if settings.kernel else kernels:
            if tftp.fetch(f"{prefix}{kernel}", required=False) is not None:
                return cmdline
        raise BootFailure(f"TFTP: no kernel ({', '.join(kernels)}) found")

    # -- HTTP boot -------------------------------------------------------------------------

    def load_over_http(self, settings: http_boot.HttpBootSettings) -> bytes:
        """boot.img and boot.sig, the signature checked, then what the model's firmware
        reads from the image; returns cmdline.txt."""
        url = f"http://{settings.host}:{settings.port}/{settings.path}/"
        self.report("http", "http", f"GET {url}boot.img")
        try:
            image = http_boot.fetch(settings, "boot.img", self.pi.address, self.timeouts.tftp_file)
            signature = http_boot.fetch(
                settings, "boot.sig", self.pi.address, self.timeouts.tftp_file
            )
        except OSError as exc:
            raise BootFailure(f"HTTP boot: {exc}") from None
        if self.cancelled():
            raise BootCancelled
        try:
            http_boot.verify(image, signature.decode("latin-1"), settings.key)
        except http_boot.SignatureRefused as exc:
            raise BootFailure(f"HTTP boot: boot.img refused: {exc}") from None
        self.pi.http_bytes += len(image) + len(signature)
        self.report("http", "http", f"boot.img ({len(image)} bytes) signature verified")
        dtb, kernels = HTTP_BOOT_FILES[self.pi.model]
        config = http_boot.read_files(image, ["config.txt"])["config.txt"]
        kernel = BootConfig.parse(config).kernel
        candidates = [kernel] if kernel else list(kernels)
        files = http_boot.read_files(image, [dtb, "cmdline.txt", *candidates])
        missing = [name for name in (dtb, "cmdline.txt") if files[name] is None]
        if all(files[name] is None for name in candidates):
            missing.append(" or ".join(candidates))
        if missing:
            raise BootFailure(f"HTTP boot: boot.img has no {', '.join(missing)}")
        return files["cmdline.txt"] or b""

    # -- NFS root --------------------------------------------------------------------------

    def mount(self, server: str, root: str) -> tuple[str, str] | None:
        if self.link.nfs_skipped:
            self.report("booted", "nfs", f"{server}:{root} skipped: {self.link.nfs_skipped}")
            return None
        self.report("nfs", "nfs", f"mounting {server}:{root}")
        hostname = self.read_root(server, f"{root}/etc/hostname").decode(errors="replace")
        self.pi.hostname = hostname.strip()
        self.report("booted", "booted", f"root {server}:{root} read, hostname {self.pi.hostname}")
        # The server is this machine: the export's path is the root's directory here.
        if self.link.interface is not None and userspace.runnable_init(Path(root)):
            return server, root
        self.report_userspace(server, root)
        return None

    def report_userspace(self, server: str, root: str) -> None:
        """What the root's boot report does once userspace is up: POST to the API URL
        Bakery wrote into the root, with the bake's secret from the root, from the Pi's
        address. A root without them (not baked by this Bakery) reports nothing."""
        try:
            url = nfs.read_file(server, f"{root}/{API_URL_FILE}", self.link.nfs_port, 5.0)
            secret = nfs.read_file(server, f"{root}/{SECRET_FILE}", self.link.nfs_port, 5.0)
        except nfs.NfsError:
            return
        endpoint = urlsplit(url.decode().strip())
        connection = http.client.HTTPConnection(
            endpoint.hostname or "", endpoint.port, timeout=10, source_address=(self.pi.address, 0)
        )
        try:
            headers = {"X-Bakery-Bake-Secret": secret.decode().strip()}
            connection.request("POST", "/api/v1/metadata/boot", headers=headers)
            status = connection.getresponse().status
        except OSError as exc:
            self.report("booted", "userspace", f"boot report failed: {exc}")
            return
        finally:
            connection.close()
        self.report("booted", "userspace", f"boot report: HTTP {status}")

    def read_root(self, server: str, path: str) -> bytes:
        """Read ``path``, retrying until the NFS timeout (the export may be a moment
        behind the bake: the server re-reads its exports after a SIGHUP)."""
        deadline = time.monotonic() + self.timeouts.nfs
        while True:
            remaining = deadline - time.monotonic()
            try:
                return nfs.read_file(server, path, self.link.nfs_port, max(1.0, remaining))
            except nfs.NfsError as exc:
                if self.cancelled():
                    raise BootCancelled from None
                if time.monotonic() + NFS_RETRY > deadline:
                    raise BootFailure(f"NFS: {exc}") from None
            if self.power_off.wait(NFS_RETRY):
                raise BootCancelled
