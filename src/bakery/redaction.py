"""What counts as a secret, and how it is hidden, everywhere: in API answers, events and log
lines. Secrets go into Bakery (power settings, agent settings, tokens) and never come out.

A secret is the value of any key naming one (``SECRET_WORDS``, case-insensitive), every
value under ``headers``, the password of a URL (``http://user:password@relay``) and the
value of a secret-named URL query parameter. ``redacted`` hides them in structured data;
``scrub`` hides their values wherever they appear inside free text (messages, log lines):
PPIs and relay boards echo credentials in their errors.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

SECRET_WORDS = ("password", "secret", "token", "key", "auth", "credential")
#: Keys under which every value is a secret, whatever it is called.
SECRET_CONTAINERS = ("headers",)
REDACTED = "***"


def is_secret_key(key: str) -> bool:
    return any(word in key.lower() for word in SECRET_WORDS)


#: Secrets shorter than this are hidden where they stand but not hunted in other text:
#: a password like ``nats`` would wipe every ``nats://`` in the settings.
MIN_SCRUBBED_LENGTH = 6


def redacted(data: Any) -> Any:
    """``data`` (JSON-like) as anyone may see it: the values of secret keys replaced by
    ``***``, in URLs their password and secret query values, and those secrets wherever
    else they appear in it (a PPI's message quoting its token)."""
    hunted = {secret for secret in secret_values(data) if len(secret) >= MIN_SCRUBBED_LENGTH}
    return scrub(_structured(data), hunted)


def _structured(data: Any, hidden: bool = False) -> Any:
    if isinstance(data, dict):
        return {
            key: _structured(value, hidden or _secret_place(key)) for key, value in data.items()
        }
    if isinstance(data, list):
        return [_structured(item, hidden) for item in data]
    if hidden:
        return REDACTED
    if isinstance(data, str) and "://" in data:
        return _url_without_secrets(data)
    return data


def _url_without_secrets(text: str) -> str:
    try:
        parts = urlsplit(text)
        password = parts.password
    except ValueError:
        return text
    netloc = parts.netloc
    if password:
        netloc = f"{parts.username}:{REDACTED}@{netloc.rpartition('@')[2]}"
    query = [
        (key, REDACTED if is_secret_key(key) else value) for key, value in parse_qsl(parts.query)
    ]
    shown_query = (
        urlencode(query, safe="*") if any(is_secret_key(k) for k, _ in query) else parts.query
    )
    return urlunsplit((parts.scheme, netloc, parts.path, shown_query, parts.fragment))


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
