"""The CPI's configuration: one ``cpi.json`` per process, as BOSH CPI jobs render it.

The job template only dumps properties into JSON (``JSON.dump``); everything is checked
here, at the start of every call, so a typo in a manifest answers the first call with a
``CpiError`` that names the key instead of failing half-way through a ``create_vm``.

Format (keys not listed are refused, so misspellings are caught)::

    {
      "bakery": {
        "url": "https://bakery.example:8443",   # required; http or https, optional path prefix
        "token": "...",                          # required; an API token (bakery token create)
        "ca_cert": "-----BEGIN CERTIFICATE-----...",  # optional PEM text trusted for https
        "ca_file": "/var/vcap/jobs/bakery_cpi/config/ca.pem",  # optional, a PEM file instead
        "timeout": 600                           # optional seconds per HTTP request (default 600)
      },
      "agent": {                                 # copied into every VM's agent settings;
                                                 # only create_vm needs it
        "mbus": "nats://10.0.0.6:4222",          # required with the block
        "ntp": ["0.pool.ntp.org"],               # optional, default []
        "blobstore": {"provider": "dav", "options": {...}}   # optional, default {}
      },
      "ephemeral_disk_mib": 10240                # optional default size of a VM's ephemeral
                                                 # disk; 0 = none (vm_type may override)
    }

With a cpi-config (multi-CPI), the director merges its ``properties`` flat into the
request's ``context``; those keys are deep-merged over the file, so a cpi-config can
point one CPI at another Bakery (``{"bakery": {"url": ...}}``). The director's own
context keys (``director_uuid``, ``request_id``, ``vm``) are not configuration.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .errors import CpiError

#: Context keys the director adds itself; everything else in the context is configuration.
DIRECTOR_CONTEXT_KEYS = ("director_uuid", "request_id", "vm")
DEFAULT_EPHEMERAL_DISK_MIB = 10240
DEFAULT_TIMEOUT = 600.0

TOP_KEYS = {"bakery", "agent", "ephemeral_disk_mib"}
BAKERY_KEYS = {"url", "token", "ca_cert", "ca_file", "timeout"}
AGENT_KEYS = {"mbus", "ntp", "blobstore"}


@dataclass(frozen=True)
class CpiConfig:
    """Validated configuration of one CPI call."""

    url: str
    token: str
    #: Empty when the file has no agent block: every call but create_vm works without.
    mbus: str = ""
    ca_cert: str = ""
    ca_file: str = ""
    timeout: float = DEFAULT_TIMEOUT
    ntp: list[str] = field(default_factory=list)
    blobstore: dict[str, Any] = field(default_factory=dict)
    ephemeral_disk_mib: int = DEFAULT_EPHEMERAL_DISK_MIB
    #: Where the configuration came from, for errors found after loading.
    source: str = "cpi.json"

    def agent_mbus(self) -> str:
        """The agent's mbus URL, for a VM's settings; CpiError when there is no agent block
        (a CPI configured for stemcells and disks only, or for ``info``)."""
        if not self.mbus:
            raise _bad(self.source, "agent.mbus", "is missing: creating a VM needs the agent block")
        return self.mbus


def load_config(path: str, context: dict[str, Any] | None = None) -> CpiConfig:
    """Read ``path``, deep-merge the request context's properties over it, validate."""
    raw = _read(path)
    properties = {k: v for k, v in (context or {}).items() if k not in DIRECTOR_CONTEXT_KEYS}
    return parse_config(deep_merge(raw, properties), source=path)


def _read(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as file:
            raw = json.load(file)
    except OSError as exc:
        raise CpiError(f"cpi.json: cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise CpiError(f"cpi.json: {path} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise CpiError(f"cpi.json: {path} must hold a JSON object")
    return raw


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` over ``base``; nested objects merge key by key, anything else replaces."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse_config(raw: dict[str, Any], source: str = "cpi.json") -> CpiConfig:
    """Validate a merged configuration; every problem names its key."""
    _refuse_unknown(raw, TOP_KEYS, "", source)
    bakery = _section(raw, "bakery", BAKERY_KEYS, source)
    agent = _section(raw, "agent", AGENT_KEYS, source) if "agent" in raw else {}
    return CpiConfig(
        url=_url(bakery.get("url"), source),
        token=_string(bakery, "bakery.token", source, required=True),
        ca_cert=_string(bakery, "bakery.ca_cert", source),
        ca_file=_string(bakery, "bakery.ca_file", source),
        timeout=_number(bakery.get("timeout", DEFAULT_TIMEOUT), "bakery.timeout", source),
        mbus=_string(agent, "agent.mbus", source, required="agent" in raw),
        ntp=_string_list(agent.get("ntp", []), "agent.ntp", source),
        blobstore=_object(agent.get("blobstore", {}), "agent.blobstore", source),
        ephemeral_disk_mib=ephemeral_disk_mib(
            raw.get("ephemeral_disk_mib", DEFAULT_EPHEMERAL_DISK_MIB),
            f"{source}: ephemeral_disk_mib",
        ),
        source=source,
    )


def ephemeral_disk_mib(value: Any, what: str) -> int:
    """A disk size in MiB, 0 meaning no disk (shared with vm_type cloud_properties)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CpiError(f"{what} must be a whole number of MiB >= 0, got {value!r}")
    return value


def _bad(source: str, key: str, problem: str) -> CpiError:
    return CpiError(f"{source}: {key} {problem}")


def _refuse_unknown(section: dict[str, Any], known: set[str], prefix: str, source: str) -> None:
    unknown = sorted(set(section) - known)
    if unknown:
        raise _bad(source, prefix + unknown[0], f"is not a known key (known: {sorted(known)})")


def _section(raw: dict[str, Any], name: str, known: set[str], source: str) -> dict[str, Any]:
    section = raw.get(name)
    if not isinstance(section, dict):
        raise _bad(source, name, "is missing or not an object")
    _refuse_unknown(section, known, f"{name}.", source)
    return section


def _string(section: dict[str, Any], key: str, source: str, required: bool = False) -> str:
    value = section.get(key.rsplit(".", 1)[1], "")
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise _bad(source, key, "must be a string")
    if required and not value.strip():
        raise _bad(source, key, "is missing or empty")
    return value


def _url(value: Any, source: str) -> str:
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        raise _bad(source, "bakery.url", f"must be an http:// or https:// URL, got {value!r}")
    if not value.split("://", 1)[1].split("/", 1)[0]:
        raise _bad(source, "bakery.url", f"has no host: {value!r}")
    return value.rstrip("/")


def _number(value: Any, key: str, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise _bad(source, key, f"must be a number of seconds > 0, got {value!r}")
    return float(value)


def _string_list(value: Any, key: str, source: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _bad(source, key, "must be a list of strings")
    return value


def _object(value: Any, key: str, source: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad(source, key, "must be an object")
    return value
