"""A whole simulated site: Bakery (``bakery serve``), its NFS server, the network and
a fleet of simulated Pis enrolled with ``webhook`` power through the simulator's
power API, and a small generated bakeform. ``bakery sim run`` (the demo), the
end-to-end tests and ``bench/boot_storm.py`` all start one of these.

Start order matters: the network first (dnsmasq binds the bridge), then the power
API (Bakery restores baked Pis' power when it starts), nfs-ganesha (Bakery signals it
on every export change), Bakery, and last the enrolment over Bakery's API.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..client import ApiClient, ApiError
from ..config import HTTP_BOOT_KEY_NAME
from ..datadir import claim_data_dir
from ..netboot import bootimage
from .bootloader import Timeouts
from .ganesha import Ganesha
from .http_boot import EepromKey, HttpBootSettings
from .image import build_sd_image, firmware_files, fleet_boot_files
from .models import EEPROM_MODELS, MODELS, SimPi, make_pis
from .network import LoopbackNetwork, NetnsNetwork, Network, free_subnet
from .power_api import PowerApi, power_settings
from .server import BakeryProcess, accepts_connections, free_port, free_udp_port, udp_bound
from .simulator import Simulator
from .wait import wait_until

#: Serials of simulated Pis count up from here (any 8 hex digits would do).
FIRST_SERIAL = 0x5EED0000
DEMO_BAKEFORM = "demo"
UNPRIVILEGED_TFTP_PORT = 6969


@dataclass
class SiteOptions:
    """What to start. ``root`` is Bakery's data dir; the site's own files (server
    config and log, ganesha's config and exports, the demo image) go in ``workdir``."""

    root: Path
    workdir: Path
    pis: int = 4
    models: list[str] = field(default_factory=lambda: ["4B", "5", "3B+"])
    mode: str = "loopback"
    api_port: int | None = None
    power_port: int = 0
    #: Loopback mode's TFTP port, default a free one (netns mode serves on port 69 of
    #: the bridge address, where dnsmasq's offers send the Pis).
    tftp_port: int | None = None
    power_on_gap: float = 2.0
    workers: int = 2
    first_serial: int = FIRST_SERIAL
    #: Upload the generated bakeform under this name (None: no bakeform)...
    bakeform: str | None = DEMO_BAKEFORM
    #: ...with these boot files (default ``fleet_boot_files()``: every model boots).
    boot_files: dict[str, bytes] | None = None
    timeouts: Timeouts = field(default_factory=Timeouts)
    #: Set every Pi 4 and Pi 5 to HTTP boot: their EEPROMs get the URL and the public
    #: key of Bakery's signing key, Bakery's HTTP boot server runs and they are
    #: registered to boot over HTTP. Pi 3s keep booting over TFTP.
    http_boot: bool = False
    #: Set every Pi 4 and Pi 5 EEPROM's NETCONSOLE to Bakery's bootloader log listener.
    netconsole: bool = False
    #: More Bakery settings (they win over the site's).
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.models) - set(MODELS))
        if unknown or not self.models:
            raise ValueError(f"models must be among {', '.join(MODELS)}; got {unknown}")
        if self.mode not in ("loopback", "netns"):
            raise ValueError(f"mode {self.mode!r} is not loopback or netns")
        if self.tftp_port is None:
            self.tftp_port = free_udp_port()


class SimulatedSite:
    """``with SimulatedSite(options) as site:`` everything runs; on exit everything
    stops and the network is removed, whatever happened."""

    def __init__(self, options: SiteOptions) -> None:
        self.options = options
        self.network: Network | None = None
        self.ganesha: Ganesha | None = None
        self.simulator: Simulator | None = None
        self.power: PowerApi | None = None
        self.server: BakeryProcess | None = None
        self.api: ApiClient | None = None
        #: Where the HTTP boot server listens, when ``http_boot`` is set.
        self.http_boot_address: tuple[str, int] | None = None
        #: Where bootloader logs go, when ``netconsole`` is set.
        self.netconsole_address: tuple[str, int] | None = None
        self._cleanup = ExitStack()

    @property
    def pis(self) -> list[SimPi]:
        assert self.simulator is not None  # start() made it
        return list(self.simulator.pis.values())

    def __enter__(self) -> SimulatedSite:
        try:
            self.start()
        except BaseException:
            self._cleanup.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._cleanup.close()

    def start(self) -> None:
        options = self.options
        claim_data_dir(options.root)  # made as Bakery makes it (the workdir may be inside)
        options.workdir.mkdir(parents=True, exist_ok=True)
        self.network = self._start_network()
        pis = make_pis(
            options.pis, options.models, self.network.addresses(options.pis), options.first_serial
        )
        for pi in pis:
            self.network.attach(pi)
        if options.http_boot:
            self._set_http_boot(pis)
        if options.netconsole:
            self._set_netconsole(pis)
        self.simulator = Simulator(pis, self.network, options.timeouts)
        self._cleanup.callback(self.simulator.stop)
        self.power = PowerApi(self.simulator, port=options.power_port).start()
        self._cleanup.callback(self.power.stop)
        if options.mode == "netns":
            self._start_ganesha()
        install_firmware(options.root / "firmware")
        # netns mode: the API on every address, the bridge's too, where the Pis' boot
        # reports reach it (tokens guard it as on loopback)
        host = "0.0.0.0" if isinstance(self.network, NetnsNetwork) else "127.0.0.1"
        self.server = BakeryProcess(self.bakery_config(), options.workdir, options.api_port, host)
        self._cleanup.callback(self.server.stop)
        self.server.start()
        if self.http_boot_address is not None:  # netboot children, started after the API
            address = self.http_boot_address
            wait_until(lambda: accepts_connections(address), 30, what="the HTTP boot server")
        if self.netconsole_address is not None:
            port = self.netconsole_address[1]
            wait_until(lambda: udp_bound(port), 30, what="the bootloader log listener")
        self.api = ApiClient(self.server.url, self.server.token)
        enrol(self.api, pis, self.power.url)
        if options.bakeform:
            ensure_bakeform(self.api, options.bakeform, options.workdir, options.boot_files)

    def _set_http_boot(self, pis: list[SimPi]) -> None:
        """Write each Pi 4 and 5 EEPROM's HTTP boot lines, with the public half of the
        key Bakery will sign with (made here, where Bakery looks for it)."""
        configured = self.options.settings.get("http_boot_key_file")
        key_file = Path(configured) if configured else self.options.root / HTTP_BOOT_KEY_NAME
        bootimage.ensure_key(key_file)
        key = EepromKey.from_pem(bootimage.public_key_pem(key_file))
        if isinstance(self.network, NetnsNetwork):
            self.http_boot_address = (self.network.server_ip, 80)
        else:
            self.http_boot_address = ("127.0.0.1", free_port())
        host, port = self.http_boot_address
        for pi in pis:
            if pi.model in EEPROM_MODELS:
                pi.http_boot = HttpBootSettings(host, port, pi.serial, key)

    def _set_netconsole(self, pis: list[SimPi]) -> None:
        """NETCONSOLE in each Pi 4 and 5 EEPROM: its own address as the source, Bakery's
        listener as the destination (6666, the bootloader's default port, in netns mode)."""
        if isinstance(self.network, NetnsNetwork):
            self.netconsole_address = (self.network.server_ip, 6666)
        else:
            self.netconsole_address = ("127.0.0.1", free_udp_port())
        for pi in pis:
            if pi.model in EEPROM_MODELS:
                pi.netconsole = self.netconsole_address

    def _start_network(self) -> Network:
        if self.options.mode == "loopback":
            assert self.options.tftp_port is not None  # SiteOptions.__post_init__ chose one
            return LoopbackNetwork(("127.0.0.1", self.options.tftp_port))
        network = NetnsNetwork(free_subnet())
        self._cleanup.callback(network.close)
        return network.open()

    def _start_ganesha(self) -> None:
        directory = self.options.workdir / "ganesha"
        assert isinstance(self.network, NetnsNetwork)  # ganesha runs in netns mode only
        self.ganesha = Ganesha(
            directory, directory / "exports.conf", self.network.server_ip, self.network.nfs_port
        )
        self._cleanup.callback(self.ganesha.stop)
        self.ganesha.start()

    def bakery_config(self) -> dict[str, Any]:
        """Bakery's settings for this site: where Pis find TFTP, NFS and DHCP."""
        options = self.options
        config: dict[str, Any] = {
            "root": str(options.root),
            "power_on_gap": options.power_on_gap,
            "workers": options.workers,
            "tftp_enabled": True,
            "log_level": "INFO",
            # The simulator's relay-board API, the one webhook host of a simulated rack.
            "webhook_hosts": ["127.0.0.1"],
        }
        if options.mode == "loopback":
            config |= {
                # each simulated Pi sends from its own 127.66.x.y: the neighbour table
                # has no MAC for loopback addresses, so they are taken on trust
                "trust_loopback": True,
                "nfs_server": "127.0.0.1",
                "tftp_bind": f"127.0.0.1:{options.tftp_port}",
                "nfs_backend": "none",
            }
        else:
            # netns mode: start() made the network and ganesha before asking for this
            assert isinstance(self.network, NetnsNetwork) and self.ganesha is not None
            server_ip = self.network.server_ip
            config |= {
                "nfs_server": server_ip,
                "tftp_bind": f"{server_ip}:69",
                "dnsmasq_enabled": True,
                "pi_interface": self.network.bridge,
                "proxy_range": self.network.proxy_range,
                "nfs_backend": "ganesha",
                "exports_file": str(self.ganesha.exports_file),
                "ganesha_pid_file": str(self.ganesha.pid_file),
            }
        if self.http_boot_address is not None:
            config["http_boot_bind"] = "{}:{}".format(*self.http_boot_address)
        if self.netconsole_address is not None:
            config["netconsole_bind"] = "{}:{}".format(*self.netconsole_address)
        return config | options.settings


def install_firmware(directory: Path) -> None:
    """Put the Pi 3 ROM's ``bootcode.bin`` where Bakery serves unprefixed files."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in firmware_files().items():
        if not (directory / name).exists():
            (directory / name).write_bytes(content)


def enrol(api: ApiClient, pis: list[SimPi], power_url: str) -> None:
    """Register each Pi with its MAC, model, address and ``webhook`` power through the
    simulator; a Pi registered by an earlier run is updated instead."""
    for pi in pis:
        body = {
            "mac": pi.mac,
            "model": pi.model,
            "ip": pi.address,
            "labels": ["sim"],
            "power_driver": "webhook",
            "power_settings": power_settings(power_url, pi.serial),
            "boot_protocol": "tftp" if pi.http_boot is None else "http",
        }
        try:
            api.post("/pis", {"serial": pi.serial, **body})
        except ApiError as exc:
            if exc.status != 409:
                raise
            api.patch(f"/pis/{pi.serial}", body)


def ensure_bakeform(
    api: ApiClient, name: str, workdir: Path, boot_files: dict[str, bytes] | None = None
) -> None:
    """Upload a small generated Pi OS-like image as bakeform ``name`` unless it exists."""
    try:
        api.get(f"/bakeforms/{name}")
        return
    except ApiError as exc:
        if exc.status != 404:
            raise
    boot = fleet_boot_files() if boot_files is None else boot_files
    image = build_sd_image(workdir / f"{name}.img", boot=boot)
    try:
        api.upload(f"/bakeforms/{name}", image, replace=False, progress=lambda _: None)
    finally:
        image.unlink(missing_ok=True)


def default_mode() -> str:
    """netns when this user may build namespaces, else loopback."""
    return "netns" if os.geteuid() == 0 else "loopback"
