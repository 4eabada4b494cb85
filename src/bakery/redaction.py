"""What counts as a secret, and how it is hidden, everywhere: in API answers, events and log
lines. Secrets go into Bakery (power settings, agent settings, tokens) and never come out.

A secret is the value of any key naming one (``SECRET_WORDS``, case-insensitive), every
value under ``headers``, the password of a URL (``http://user:password@relay``) and the
value of a secret-named URL query parameter. ``scrub`` also hides those values wherever
they appear inside other text: PPIs and relay boards echo credentials in their errors.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

SECRET_WORDS = ("password", "secret", "token", "key", "auth", "credential")
#: Keys under which every value is a secret, whatever it is called.
SECRET_CONTAINERS = ("headers",)
REDACTED = "***"


def is_secret_key(key: str) -> bool:
    return any(word in key.lower() for word in SECRET_WORDS)


def redacted(data: Any) -> Any:
    """``data`` (JSON-like) as anyone may see it: secret values replaced by ``***``,
    and secrets embedded in other values (a URL's password) too."""
    return scrub(_hide_secret_keys(data), secret_values(data))


def _hide_secret_keys(data: Any, hidden: bool = False) -> Any:
    if isinstance(data, dict):
        return {
            key: _hide_secret_keys(value, hidden or _secret_place(key))
            if isinstance(value, dict | list)
            else (REDACTED if hidden or _secret_place(key) else value)
            for key, value in data.items()
        }
    if isinstance(data, list):
        return [_hide_secret_keys(item, hidden) for item in data]
    return REDACTED if hidden else data


def _secret_place(key: Any) -> bool:
    return isinstance(key, str) and (is_secret_key(key) or key in SECRET_CONTAINERS)


def secret_values(data: Any, hidden: bool = False) -> set[str]:
    """Every secret string in ``data``, to scrub from free text and from the data itself."""
    found: set[str] = set()
    if isinstance(data, dict):
        for key, value in data.items():
            found |= secret_values(value, hidden or _secret_place(key))
    elif isinstance(data, list):
        for item in data:
            found |= secret_values(item, hidden)
    elif hidden and data not in (None, "") and not isinstance(data, bool | int | float):
        found.add(str(data))
    elif isinstance(data, str) and "://" in data:
        found |= _secrets_in_url(data)
    return found


def _secrets_in_url(text: str) -> set[str]:
    """The password of ``scheme://user:password@host`` and secret-named query values."""
    try:
        parts = urlsplit(text)
        password = parts.password
    except ValueError:
        return set()
    query = {value for key, value in parse_qsl(parts.query) if is_secret_key(key) and value}
    return query | ({password} if password else set())


def scrub(value: Any, secrets: set[str]) -> Any:
    """``value`` (text, or JSON-like data) with every secret string replaced by ``***``,
    wherever it is embedded. Longer secrets first, so one that contains another goes whole."""
    if isinstance(value, dict):
        return {key: scrub(item, secrets) for key, item in value.items()}
    if isinstance(value, list):
        return [scrub(item, secrets) for item in value]
    if isinstance(value, str):
        for secret in sorted(secrets, key=len, reverse=True):
            value = value.replace(secret, REDACTED)
    return value
