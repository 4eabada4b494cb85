"""The ``webhook`` driver: one URL per action, as on simpleweb relay boards and MAAS webhooks.

Settings::

    {"on_url": "http://relay-1/relay/3/on", "off_url": "http://relay-1/relay/3/off",
     "status_url": "http://relay-1/relay/3",        optional; without it status is unknown
     "method": "POST" | "GET",                      for on/off, default POST; status is a GET
     "headers": {"Authorization": "Bearer ..."},    sent as is, never logged or recorded
     "on_regex": "...", "off_regex": "...",         read the state from the status body
     "verify_tls": true, "timeout": 10}              timeout defaults to power_timeout

Every URL's host must be one of the setting ``webhook_hosts`` (names, addresses or
networks): the relay boards the operator has.

The default regexes accept MAAS-style bodies (``status: running`` / ``stopped``) as
well as ``{"state": "on"}`` / ``{"power": "off"}``. HTTP 5xx and unreachable boards are
worth retrying; 401/403 is an ``auth`` error and any other 4xx ``fatal``. Messages name
the board by scheme, host and path only, since query strings often carry tokens.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any
from urllib.parse import urlsplit

import requests

from bakery.config import Settings
from bakery.power.base import (
    PowerDriver,
    PowerError,
    PowerResult,
    PowerTarget,
    register,
    reject_unknown_keys,
)

DEFAULT_ON_REGEX = r"(status|state|power)\W*[:=]\W*(on|running)\b"
DEFAULT_OFF_REGEX = r"(status|state|power)\W*[:=]\W*(off|stopped)\b"
METHODS = ("POST", "GET")
URL_FIELDS = ("on_url", "off_url", "status_url")
SETTINGS_KEYS = {*URL_FIELDS, "method", "headers", "on_regex", "off_regex", "verify_tls", "timeout"}


def _is_http_url(url: Any) -> bool:
    if not isinstance(url, str) or any(c.isspace() for c in url):
        return False
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a port out of range
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _check_url(settings: dict[str, Any], field: str) -> None:
    if not _is_http_url(settings[field]):
        raise ValueError(f"webhook power settings: {field!r} must be an http(s) URL")


def _check_host_allowed(settings: dict[str, Any], field: str, allowed: list[str]) -> None:
    """The URL's host is one the operator listed (by name, address or network): a Pi's
    power settings must not make Bakery send requests anywhere its registrant likes."""
    host = urlsplit(settings[field]).hostname or ""
    if not any(_host_matches(host, entry) for entry in allowed):
        listed = ", ".join(allowed) or "none: set webhook_hosts"
        raise ValueError(
            f"webhook power settings: {field!r} host {host} is not an allowed relay host "
            f"(allowed: {listed})"
        )


def _host_matches(host: str, entry: str) -> bool:
    if "/" not in entry:
        return host.lower() == entry.lower()
    try:
        return ipaddress.ip_address(host) in ipaddress.ip_network(entry, strict=False)
    except ValueError:  # a name, or not a network
        return False


def _check_regex(settings: dict[str, Any], field: str) -> None:
    try:
        re.compile(settings[field])
    except (re.error, TypeError):
        raise ValueError(f"webhook power settings: {field!r} is not a valid regex") from None


def _check_headers(headers: Any) -> None:
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise ValueError("webhook power settings: 'headers' must map names to strings")


def _check_timeout(timeout: Any) -> None:
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise ValueError("webhook power settings: 'timeout' must be a positive number")


def _origin(url: str) -> str:
    """Scheme, host and port: the relay board, without credentials."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}"


def _where(url: str) -> str:
    """The URL without credentials or query: safe to log and to show in events."""
    return _origin(url) + urlsplit(url).path


@register
class WebhookDriver(PowerDriver):
    name = "webhook"
    queryable = True

    @classmethod
    def validate_settings(cls, settings: dict[str, Any], config: Settings) -> dict[str, Any]:
        reject_unknown_keys(settings, SETTINGS_KEYS, cls.name)
        for field in ("on_url", "off_url"):
            if field not in settings:
                raise ValueError(f"webhook power settings: {field!r} is required")
        for field in URL_FIELDS:
            if field in settings:
                _check_url(settings, field)
                _check_host_allowed(settings, field, config.webhook_hosts)
        for field in ("on_regex", "off_regex"):
            if field in settings:
                _check_regex(settings, field)
        clean = dict(settings)
        clean["method"] = str(settings.get("method", "POST")).upper()
        if clean["method"] not in METHODS:
            raise ValueError("webhook power settings: 'method' must be POST or GET")
        _check_headers(settings.get("headers", {}))
        if not isinstance(settings.get("verify_tls", True), bool):
            raise ValueError("webhook power settings: 'verify_tls' must be true or false")
        if "timeout" in settings:
            _check_timeout(settings["timeout"])
        return clean

    def device_key(self, target: PowerTarget) -> str:
        """The relay board: everything behind one host and port."""
        return f"webhook:{_origin(target.settings['on_url'])}"

    def on(self, target: PowerTarget) -> PowerResult:
        self._request(target, "on_url")
        return PowerResult("on")

    def off(self, target: PowerTarget) -> PowerResult:
        self._request(target, "off_url")
        return PowerResult("off")

    def status(self, target: PowerTarget) -> PowerResult:
        if not target.settings.get("status_url"):
            return PowerResult("unknown", "no status_url configured")
        body = self._request(target, "status_url")
        return PowerResult(_state_from_body(target.settings, body))

    def _request(self, target: PowerTarget, url_field: str) -> str:
        """Send one request; answer the body of a 2xx reply, raise a typed error otherwise.

        A status query is always a GET: it must not switch anything, whatever ``method``
        the board wants for switching."""
        settings = target.settings
        url = settings[url_field]
        method = "GET" if url_field == "status_url" else settings.get("method", "POST").upper()
        headers = {"Accept": "application/json", "X-Bakery-Serial": target.serial}
        headers.update(settings.get("headers", {}))
        try:
            response = requests.request(
                method,
                url,
                headers=headers,
                timeout=settings.get("timeout", self.config.power_timeout),
                verify=settings.get("verify_tls", True),
            )
        except requests.exceptions.SSLError:
            raise PowerError("setting", f"TLS failed for {_where(url)} (verify_tls?)") from None
        except requests.Timeout:
            raise PowerError("timeout", f"{method} {_where(url)} timed out") from None
        except requests.ConnectionError:
            raise PowerError("connection", f"cannot connect to {_where(url)}") from None
        except requests.RequestException as exc:
            raise PowerError("fatal", f"{method} {_where(url)}: {type(exc).__name__}") from None
        _raise_for_status(method, url, response.status_code)
        return response.text


def _raise_for_status(method: str, url: str, status: int) -> None:
    if 200 <= status < 300:
        return
    message = f"{method} {_where(url)} answered HTTP {status}"
    if status >= 500:
        raise PowerError("retryable", message)
    if status in (401, 403):
        raise PowerError("auth", message)
    raise PowerError("fatal", message)


def _state_from_body(settings: dict[str, Any], body: str) -> str:
    is_on = re.search(settings.get("on_regex", DEFAULT_ON_REGEX), body, re.IGNORECASE)
    is_off = re.search(settings.get("off_regex", DEFAULT_OFF_REGEX), body, re.IGNORECASE)
    if bool(is_on) == bool(is_off):
        return "unknown"
    return "on" if is_on else "off"
