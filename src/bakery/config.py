"""One typed settings object for the whole service.

Settings are read once, at start, from an optional JSON file (the BOSH job renders one)
and then from ``BAKERY_*`` environment variables, which win. Everything is validated
here so that a typo in a manifest stops the service at start with one clear line,
instead of failing on the first bake.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import fsutil, identifiers

NFS_BACKENDS = ("kernel", "ganesha", "none")
#: The signing key's file in the data dir, unless ``http_boot_key_file`` says otherwise.
HTTP_BOOT_KEY_NAME = "http-boot-key.pem"
#: The settings that name a file Bakery writes into each bake's root.
ROOT_FILE_SETTINGS = ("agent_settings_path", "disks_list_path", "bake_secret_path")
#: A host name, an IPv4/IPv6 address, or a network in CIDR notation.
WEBHOOK_HOST_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.:-]{0,252}(/\d{1,3})?")


class ConfigError(ValueError):
    """A setting is missing, malformed or out of range; the message names it."""


@dataclass(frozen=True)
class Settings:
    """Everything the service can be told. Field names are the JSON keys; the
    environment variable for ``foo_bar`` is ``BAKERY_FOO_BAR``."""

    #: The data directory: bakeforms, bakes, disks, lock files, the SQLite database.
    root: Path = Path("data")
    #: ``sqlite:///path`` or ``postgresql://user:pass@host/db``; empty = SQLite in ``root``.
    database_url: str = ""
    #: Address the API listens on when started with ``bakery serve``.
    bind: str = "127.0.0.1:8080"
    workers: int = 2
    #: Address Pis use to reach NFS (and TFTP); rendered into cmdline.txt.
    nfs_server: str = "127.0.0.1"
    #: How exports are published: ``kernel`` (exportfs), ``ganesha`` or ``none``.
    nfs_backend: str = "none"
    #: Exports file the backend writes; empty = the backend's default.
    exports_file: str = ""
    #: nfs-ganesha pid file, signalled with SIGHUP to re-read exports.
    ganesha_pid_file: str = ""
    #: The NFS server's MOUNT port when it runs without a portmapper (the bakery job's
    #: nfs-ganesha: 20048): Pis' cmdline.txt then names it and NFS's own port 2049, so
    #: their kernels mount NFSv3 without asking rpcbind. 0: they ask the portmapper.
    nfs_mount_port: int = 0
    #: Run this nfs-ganesha (``ganesha.nfsd``) as a supervised child serving the exports
    #: of backend ``ganesha`` (the bakery job's package); empty: one runs outside Bakery.
    ganesha_binary: str = ""
    #: Extra options on every export line (the root needs no_root_squash).
    export_options: str = "rw,sync,no_subtree_check,no_root_squash"
    #: Written into each bake's /etc/resolv.conf (NetworkManager won't, see pi-netboot §3.3).
    resolv_conf: str = "nameserver 1.1.1.1\n"
    #: Where a bake's agent settings are written inside its root: the File settings
    #: source that the stemcell's agent.json names.
    agent_settings_path: str = "var/vcap/bosh/bakery-agent-env.json"
    #: Where the list of attached disks is written inside each root, for the disk agent.
    disks_list_path: str = "var/lib/bakery/disks"
    #: Where each bake's own secret is written inside its root (root only): what its Pi
    #: shows to ask Bakery about itself, which no other host on the Pi LAN can read.
    bake_secret_path: str = "var/lib/bakery/secret"
    #: Largest bakeform upload accepted, in MiB.
    max_upload_mib: int = 32768
    #: Largest disk, in MiB.
    max_disk_mib: int = 1048576
    #: Seconds a power driver may take before its process group is killed.
    power_timeout: float = 30.0
    #: Attempts for a power call that fails with a retryable error.
    power_retries: int = 3
    #: Minimum seconds between two power-ons, fleet-wide (Pi 3 DHCP boot storms).
    power_on_gap: float = 2.0
    #: Power driver given to Pis registered without one.
    default_power_driver: str = "manual"
    #: The directory of PPI programs (and their config files) the ``ppi`` driver may run;
    #: a Pi's power settings name one of its files, never a path. Empty: no PPIs.
    ppi_dir: str = ""
    #: Hosts (names, addresses or networks like ``10.0.0.0/24``) the ``webhook`` driver may
    #: call; a Pi's URLs must point at one of them. Empty: no webhooks.
    webhook_hosts: list[str] = field(default_factory=list)
    #: Run the TFTP server with ``bakery serve``.
    tftp_enabled: bool = True
    #: Where the TFTP server listens; empty = ``<nfs_server>:69``.
    tftp_bind: str = ""
    #: TFTP server processes sharing the port (SO_REUSEPORT, each Pi's requests to one of
    #: them), to use several cores: 50 Pis at once, 2 workers 1.2x dnsmasq, 1 worker 0.86x.
    tftp_workers: int = 2
    #: Largest TFTP blksize granted (1468 fits one Ethernet frame; Pi 4 asks for it).
    tftp_max_blksize: int = 1468
    #: Seconds before a TFTP block is sent again, and how many times.
    tftp_timeout: float = 1.0
    tftp_retries: int = 5
    #: Where the HTTP boot server listens (``<ip>:<port>``, the EEPROM's HTTP_HOST and
    #: HTTP_PORT); empty: no HTTP boot, and bakes over HTTP are refused.
    http_boot_bind: str = ""
    #: The operator's RSA-2048 key that signs each bake's boot.img (PEM); empty =
    #: ``<root>/http-boot-key.pem``, made on first use. Its public half goes in the EEPROMs.
    http_boot_key_file: str = ""
    #: The URL a Pi reaches the API at (for its boot report); empty =
    #: ``http(s)://<nfs_server>:<port of bind>``.
    pi_api_url: str = ""
    #: Seconds after a power-on by which a baked Pi's userspace should say it is up; a
    #: boot past it is shown as stalled, with an event.
    boot_deadline: float = 600.0
    #: Where bootloader logs are received (``<ip>:<port>``; the EEPROM's NETCONSOLE sends to
    #: port 6666 of 255.255.255.255 unless told otherwise); empty: not received.
    netconsole_bind: str = ""
    #: Where Prometheus scrapes ``/metrics`` without a token (``<ip>:<port>``, an address
    #: only the monitoring network reaches); empty: only at the API's ``/metrics``, with a
    #: token (a ``viewer`` one will do).
    metrics_bind: str = ""
    #: Files served to requests without a serial prefix (the Pi 3 ROM's bootcode.bin);
    #: empty = ``<root>/firmware``.
    firmware_dir: str = ""
    #: config.txt settings removed from what Pis are served.
    config_txt_drop: list[str] = field(default_factory=lambda: ["auto_initramfs"])
    #: Pis seen on the wire for the first time become ``available`` rather than ``discovered``.
    auto_accept: bool = False
    #: Let a Pi registered with its MAC move to any loopback address without the neighbour
    #: table's word: only the simulator's Pis (each at its own 127.x address) need it.
    trust_loopback: bool = False
    #: Run dnsmasq (proxy DHCP) as a child of ``bakery serve``.
    dnsmasq_enabled: bool = False
    dnsmasq_binary: str = "dnsmasq"
    #: The interface facing the Pis, and its network address for ``dhcp-range=<net>,proxy``.
    pi_interface: str = ""
    proxy_range: str = ""
    #: Pad the "Raspberry Pi Boot" menu text as Pi 3B (non-plus) ROMs need (pi-netboot §1.4).
    pi3b_padding: bool = False
    #: Seconds dnsmasq waits before answering (Pi 3 ROM timing, pi-netboot §1.4); 0 = off.
    dhcp_reply_delay: int = 0
    #: MAC prefixes of Raspberry Pi boards (pi-netboot §4): only these get proxy offers.
    pi_ouis: list[str] = field(
        default_factory=lambda: ["b8:27:eb", "dc:a6:32", "e4:5f:01", "d8:3a:dd", "2c:cf:67"]
    )
    #: Hostname of this bakery host; bakes are recovered only by the host that made them.
    host_id: str = ""
    #: The URL the other hosts sharing the database reach this host's API at (to copy
    #: its bakeforms); empty = the URL the Pis use (``pi_api_url``'s rule).
    host_url: str = ""
    #: The CA bundle (PEM) that other hosts' TLS certificates are checked against;
    #: empty = the system's.
    host_ca_file: str = ""
    #: Log level of the service.
    log_level: str = "INFO"
    #: Serve the API over HTTPS with this certificate and key (PEM files).
    tls_cert_file: str = ""
    tls_key_file: str = ""
    #: API tokens given by the operator (name -> token, at least 32 characters), e.g.
    #: from a BOSH manifest; stored hashed at start. With none, the first start makes one.
    api_tokens: dict[str, Any] = field(default_factory=dict)

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{self.root / 'bakery.db'}"

    @property
    def tftp_address(self) -> tuple[str, int]:
        address = _address(self.tftp_bind or f"{self.nfs_server}:69")
        assert address is not None  # never empty
        return address

    @property
    def http_boot_address(self) -> tuple[str, int] | None:
        return _address(self.http_boot_bind)

    @property
    def api_url_for_pis(self) -> str:
        if self.pi_api_url:
            return self.pi_api_url.rstrip("/")
        scheme = "https" if self.tls_cert_file else "http"
        return f"{scheme}://{self.nfs_server}:{self.bind.rpartition(':')[2]}"

    @property
    def netconsole_address(self) -> tuple[str, int] | None:
        return _address(self.netconsole_bind)

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        return _address(self.metrics_bind)

    @property
    def http_boot_key_path(self) -> Path:
        if self.http_boot_key_file:
            return Path(self.http_boot_key_file)
        return self.root / HTTP_BOOT_KEY_NAME

    @property
    def firmware_path(self) -> Path:
        return Path(self.firmware_dir) if self.firmware_dir else self.root / "firmware"

    @property
    def admin_token_file(self) -> Path:
        return self.root / "admin-token"

    @property
    def host_token_file(self) -> Path:
        """This host's own API token, which it shows the other hosts' APIs."""
        return self.root / "host-token"

    @property
    def url_for_hosts(self) -> str:
        return self.host_url.rstrip("/") if self.host_url else self.api_url_for_pis

    def path(self, *parts: str) -> Path:
        """A path inside the data directory."""
        return self.root.joinpath(*parts)

    def root_file_paths(self) -> list[str]:
        """The files Bakery writes into every bake's root, relative to it."""
        return [getattr(self, name) for name in ROOT_FILE_SETTINGS]


def _address(bind: str) -> tuple[str, int] | None:
    """``<ip>:<port>`` (checked at load) as a socket address; None for an empty setting."""
    if not bind:
        return None
    host, _, port = bind.rpartition(":")
    return host, int(port)


def _coerce(name: str, kind: Any, raw: Any) -> Any:
    """Turn a JSON or environment value into the field's type, or say why not."""
    try:
        if kind in (int, "int"):
            if isinstance(raw, bool):
                raise ValueError
            return int(raw)
        if kind in (float, "float"):
            if isinstance(raw, bool):
                raise ValueError
            return float(raw)
        if kind in (Path, "Path"):
            return Path(str(raw))
        if kind in (str, "str"):
            if not isinstance(raw, str | int | float):
                raise ValueError
            return str(raw)
        if kind in (bool, "bool"):
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError
            return text in ("1", "true", "yes", "on")
        if kind in ("list[str]",):
            if isinstance(raw, str):
                raw = json.loads(raw) if raw.strip().startswith("[") else raw.split(",")
            if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
                raise ValueError
            return [x.strip() for x in raw if x.strip()]
        if kind in ("dict[str, Any]",):
            value = json.loads(raw) if isinstance(raw, str) else raw
            if not isinstance(value, dict):
                raise ValueError
            return value
    except (TypeError, ValueError, json.JSONDecodeError):
        raise ConfigError(f"setting {name!r}: {raw!r} is not a valid {kind}") from None
    raise ConfigError(f"setting {name!r}: unsupported type {kind}")


def _validate(s: Settings) -> None:
    if s.nfs_backend not in NFS_BACKENDS:
        raise ConfigError(f"setting 'nfs_backend': must be one of {', '.join(NFS_BACKENDS)}")
    try:
        ipaddress.ip_address(s.nfs_server)
    except ValueError:
        raise ConfigError(f"setting 'nfs_server': {s.nfs_server!r} is not an IP address") from None
    if not 0 <= s.nfs_mount_port <= 65535:
        raise ConfigError("setting 'nfs_mount_port': must be a port (1-65535), or 0 for none")
    if s.database_url and not s.database_url.startswith(
        ("sqlite://", "postgresql://", "postgres://", "postgresql+pool://", "postgres+pool://")
    ):
        raise ConfigError("setting 'database_url': must start with sqlite:// or postgresql://")
    for name in ("workers", "max_upload_mib", "max_disk_mib", "power_retries", "tftp_workers"):
        if getattr(s, name) < 1:
            raise ConfigError(f"setting {name!r}: must be at least 1")
    for name in ("power_timeout", "boot_deadline"):
        if getattr(s, name) <= 0:
            raise ConfigError(f"setting {name!r}: must be positive")
    if s.power_on_gap < 0:
        raise ConfigError("setting 'power_on_gap': must not be negative")
    _validate_netboot(s)
    if s.metrics_bind:
        address_rule("metrics_bind", s.metrics_bind)
    _validate_tokens(s)
    if bool(s.tls_cert_file) != bool(s.tls_key_file):
        raise ConfigError("settings 'tls_cert_file' and 'tls_key_file' go together")
    for name in ("tls_cert_file", "tls_key_file"):
        if getattr(s, name) and not Path(getattr(s, name)).is_file():
            raise ConfigError(f"setting {name!r}: no such file {getattr(s, name)}")
    for name in ROOT_FILE_SETTINGS:
        parts = getattr(s, name).split("/")
        if not all(re.fullmatch(r"[A-Za-z0-9._-]+", p) and p not in (".", "..") for p in parts):
            raise ConfigError(f"setting {name!r}: must be a relative path inside the Pi's root")
    for name in ("pi_api_url", "host_url"):
        url = getattr(s, name)
        if url and not re.fullmatch(r"https?://[A-Za-z0-9.:\[\]-]+(:\d+)?/?", url):
            raise ConfigError(f"setting {name!r}: {url!r} is not http(s)://<host>[:port]")
    if s.ppi_dir and not Path(s.ppi_dir).is_absolute():
        raise ConfigError(f"setting 'ppi_dir': {s.ppi_dir!r} must be an absolute path")
    for host in s.webhook_hosts:
        if not WEBHOOK_HOST_RE.fullmatch(host):
            raise ConfigError(f"setting 'webhook_hosts': {host!r} is not a host or a network")
    if any(c in s.export_options for c in ' \n\t()*#"'):
        raise ConfigError("setting 'export_options': only a comma-separated option list")


def load_settings(
    config_file: str | os.PathLike[str] | None = None,
    environ: dict[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Read the JSON file (if any), then ``BAKERY_*`` variables, then ``overrides``.

    ``config_file`` defaults to ``$BAKERY_CONFIG``. Unknown keys in the file are an
    error, so a misspelt property in a BOSH manifest is caught at start.
    """
    environ = dict(os.environ if environ is None else environ)
    config_file = config_file or environ.get("BAKERY_CONFIG")
    values: dict[str, Any] = {}
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    if config_file:
        try:
            loaded = json.loads(Path(config_file).read_text())
        except OSError as exc:
            raise ConfigError(f"config file {config_file}: {exc.strerror}") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"config file {config_file}: not valid JSON ({exc})") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {config_file}: must hold a JSON object")
        unknown = sorted(set(loaded) - set(fields))
        if unknown:
            raise ConfigError(f"config file {config_file}: unknown setting(s) {', '.join(unknown)}")
        values.update(loaded)
    for name in fields:
        env_name = f"BAKERY_{name.upper()}"
        if env_name in environ:
            values[name] = environ[env_name]
    values.update({k: v for k, v in overrides.items() if v is not None})
    typed = {name: _coerce(name, fields[name].type, raw) for name, raw in values.items()}
    settings = Settings(**typed)
    if not settings.host_id:
        settings = dataclasses.replace(settings, host_id=os.uname().nodename)
    settings = dataclasses.replace(settings, root=settings.root.absolute())
    _validate(settings)
    return settings


def _validate_tokens(s: Settings) -> None:
    """``name: token`` or ``name: {token, role, owner}``, each part checked."""
    for name, value in s.api_tokens.items():
        where = f"setting 'api_tokens': token {name!r}"
        if not identifiers.NAME_RE.fullmatch(name):
            raise ConfigError(f"setting 'api_tokens': {name!r} is not a token name")
        entry = value if isinstance(value, dict) else {"token": value}
        unknown = sorted(set(entry) - {"token", "role", "owner"})
        if unknown:
            raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}")
        token = entry.get("token")
        if not isinstance(token, str) or not re.fullmatch(r"[\x21-\x7e]{32,128}", token):
            raise ConfigError(f"{where} must be 32-128 printable characters")
        if entry.get("role", "cpi") not in identifiers.ROLES:
            raise ConfigError(f"{where}: role must be one of {', '.join(identifiers.ROLES)}")
        owner = entry.get("owner", name)
        if not isinstance(owner, str) or not identifiers.NAME_RE.fullmatch(owner):
            raise ConfigError(f"{where}: owner {owner!r} is not a name")


# -- the rules of settings that end up in another program's configuration -----------------
# dnsmasq.render_config applies them again to whatever Settings it is given.

#: An interface name as the kernel takes it (at most 15 characters), never an option.
INTERFACE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,14}")
OUI_RE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){2}")


def interface_rule(value: object) -> str:
    if not isinstance(value, str) or not INTERFACE_RE.fullmatch(value):
        raise ConfigError(f"setting 'pi_interface': {value!r} is not a network interface name")
    return value


def oui_rule(value: object) -> str:
    if not isinstance(value, str) or not OUI_RE.fullmatch(value):
        raise ConfigError(f"setting 'pi_ouis': {value!r} is not a MAC prefix like dc:a6:32")
    return value


def ipv4_rule(setting: str, value: object) -> str:
    try:
        if not isinstance(value, str):
            raise TypeError
        return str(ipaddress.IPv4Address(value))
    except (ipaddress.AddressValueError, TypeError):
        raise ConfigError(f"setting {setting!r}: {value!r} is not an IPv4 address") from None


def reply_delay_rule(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"setting 'dhcp_reply_delay': {value!r} is not a whole number of seconds")
    return value


def address_rule(name: str, value: str) -> None:
    """``<ip>:<port>``, an address a server binds."""
    host, _, port = value.rpartition(":")
    try:
        ipaddress.ip_address(host)
        if not 0 < int(port) < 65536:
            raise ValueError
    except ValueError:
        raise ConfigError(f"setting {name!r}: {value!r} is not <ip>:<port>") from None


def _validate_netboot(s: Settings) -> None:
    address_rule("tftp_bind", s.tftp_bind or f"{s.nfs_server}:69")
    for name in ("http_boot_bind", "netconsole_bind"):
        if getattr(s, name):
            address_rule(name, getattr(s, name))
    if s.http_boot_key_file and not Path(s.http_boot_key_file).is_absolute():
        raise ConfigError("setting 'http_boot_key_file': must be an absolute path")
    if not 512 <= s.tftp_max_blksize <= 65464:
        raise ConfigError("setting 'tftp_max_blksize': must be between 512 and 65464")
    if s.tftp_timeout <= 0 or s.tftp_retries < 1:
        raise ConfigError("settings 'tftp_timeout'/'tftp_retries': must be positive")
    for oui in s.pi_ouis:
        oui_rule(oui)
    for key in s.config_txt_drop:
        if not re.fullmatch(r"[A-Za-z0-9_]+", key):
            raise ConfigError(f"setting 'config_txt_drop': {key!r} is not a config.txt key")
    if s.pi_interface:
        interface_rule(s.pi_interface)
    if s.proxy_range:
        ipv4_rule("proxy_range", s.proxy_range)
    if s.dnsmasq_enabled and not (s.pi_interface and (s.proxy_range or s.tftp_bind)):
        raise ConfigError(
            "settings 'pi_interface' and 'proxy_range' are needed when dnsmasq_enabled is set"
        )
    reply_delay_rule(s.dhcp_reply_delay)


def dump_settings(settings: Settings, path: Path) -> Path:
    """Write ``settings`` as a config file another bakery process can load as is
    (``bakery serve`` hands its settings to the TFTP server it starts this way)."""
    values = {
        f.name: str(getattr(settings, f.name))
        if f.type in (Path, "Path")
        else getattr(settings, f.name)
        for f in dataclasses.fields(Settings)
    }
    fsutil.write_atomically(path, json.dumps(values, indent=2, sort_keys=True), mode=0o600)
    return path
