"""API tokens: created once, shown once, stored only as a hash; each with a role (what it
may call: ``identifiers.ROLES``) and an owner (whose bakes, disks and bakeforms it makes
and sees, as Ironic's node owner).

Tokens are 256-bit random strings, so a plain sha256 is as strong as a slow
password hash here and lets every request be checked with one indexed lookup.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass

import peewee as pw

from . import fsutil, identifiers
from .config import Settings
from .errors import Conflict, NotFound

# ApiToken re-exported: the API names the rows it answers with, and may not import models.
from .models import ApiToken as ApiToken
from .models import utcnow

log = logging.getLogger(__name__)

TOKEN_PREFIX = "bky_"
ADMIN_TOKEN_NAME = "admin"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


#: Seconds between two writes of a token's last use: a read request must not have to write
#: (a full disk would fail every request), and once a minute says enough of who is active.
LAST_USE_RESOLUTION = 60.0
#: The role of a token named in the settings by its value alone: the BOSH director's.
CONFIGURED_DEFAULT_ROLE = "cpi"


@dataclass(frozen=True)
class TokenSpec:
    """A token the operator configured: its value, role and owner."""

    name: str
    token: str
    role: str
    owner: str


def create_token(name: str, role: str = "viewer", owner: str = "") -> tuple[ApiToken, str]:
    """Create a token; return the row and the plaintext, which is never stored.

    ``owner`` (default: the token's name) is whose bakes, disks and bakeforms it makes and
    sees; tokens of one owner share them (a BOSH director's CPI and its operator)."""
    identifiers.name(name, "token name")
    identifiers.role(role)
    owner = identifiers.name(owner or name, "owner")
    if ApiToken.select().where(ApiToken.name == name).exists():
        raise Conflict(f"a token named {name!r} already exists")
    plaintext = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken.create(
        name=name, token_hash=hash_token(plaintext), prefix=plaintext[:10], role=role, owner=owner
    )
    return row, plaintext


def verify_token(presented: str) -> ApiToken | None:
    """The token row for ``presented``, or None. Its last use is written at most once per
    ``LAST_USE_RESOLUTION`` seconds, and a failed write does not refuse the request."""
    if not 32 <= len(presented) <= 128:
        return None
    digest = hash_token(presented)
    row = ApiToken.get_or_none(ApiToken.token_hash == digest)
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        return None
    _note_use(row)
    return row


def _note_use(row: ApiToken) -> None:
    now = utcnow()
    last = row.last_used_at
    if last is not None and (now - last).total_seconds() < LAST_USE_RESOLUTION:
        return
    try:
        ApiToken.update(last_used_at=now).where(ApiToken.id == row.id).execute()
    except pw.DatabaseError as exc:  # a full disk, a read-only replica: still a valid token
        log.warning("could not record the use of token %s: %s", row.name, exc)


def list_tokens() -> list[ApiToken]:
    return list(ApiToken.select().order_by(ApiToken.name))


def revoke_token(name: str) -> None:
    if not ApiToken.delete().where(ApiToken.name == name).execute():
        raise NotFound(f"no token named {name!r}", code="token_not_found")


def configured_tokens(settings: Settings) -> list[TokenSpec]:
    """The settings' ``api_tokens``: ``name: token`` (role cpi) or ``name: {token, role,
    owner}``; the owner defaults to the name. Checked when the settings are loaded."""
    specs = []
    for name, value in settings.api_tokens.items():
        entry = value if isinstance(value, dict) else {"token": value}
        role = entry.get("role", CONFIGURED_DEFAULT_ROLE)
        specs.append(TokenSpec(name, entry["token"], role, entry.get("owner") or name))
    return specs


def import_configured_tokens(settings: Settings) -> None:
    """Make exactly the tokens named in the settings valid, with their current value, role
    and owner: a BOSH operator rotates or revokes a token by changing the manifest and
    redeploying."""
    specs = configured_tokens(settings)
    names = [spec.name for spec in specs] or [""]
    ApiToken.delete().where(ApiToken.configured, ApiToken.name.not_in(names)).execute()
    for spec in specs:
        fields = dict(
            token_hash=hash_token(spec.token),
            prefix=spec.token[:10],
            role=spec.role,
            owner=spec.owner,
            configured=True,
        )
        if not ApiToken.update(**fields).where(ApiToken.name == spec.name).execute():
            ApiToken.create(name=spec.name, **fields)


def ensure_admin_token(settings: Settings) -> str | None:
    """On the very first start, create an admin token and write it where only root reads it.

    Returns the file path written, or None when tokens already exist."""
    if ApiToken.select().exists():
        return None
    _, plaintext = create_token(ADMIN_TOKEN_NAME, role="admin")
    path = settings.admin_token_file
    fsutil.write_atomically(path, plaintext + "\n", mode=0o600)
    log.warning("first start: admin API token written to %s (read it, then keep it safe)", path)
    return str(path)


def ensure_host_token(settings: Settings) -> None:
    """This host's own token, of role ``host``: all it may do on the other hosts' APIs is
    fetch the uploads of the bakeforms they imported (the role a stolen one gives is no
    more). In ``host_token_file`` (0600); made again if missing or no longer valid."""
    path = settings.host_token_file
    name = _host_token_name(settings.host_id)
    if path.exists():
        row = verify_token(path.read_text().strip())
        if row is not None and (row.name, row.role) == (name, "host"):
            return
    ApiToken.delete().where(ApiToken.name == name).execute()
    _, plaintext = create_token(name, role="host")
    fsutil.write_atomically(path, plaintext + "\n", mode=0o600)


def _host_token_name(host_id: str) -> str:
    """``host-<host_id>``, or a digest of it where the name would not be a valid one."""
    name = f"host-{host_id}"
    try:
        return identifiers.name(name, "token name")
    except identifiers.InvalidIdentifier:
        return "host-" + hashlib.sha256(host_id.encode()).hexdigest()[:16]


# -- the dashboard's sign-in ----------------------------------------------------------------

#: The file in the data dir holding the key that signs the dashboard's session cookies.
SESSION_KEY_NAME = "web-session-key"


def session_key(settings: Settings) -> bytes:
    """The key the dashboard signs its session cookies with: made at first use (mode 0600)
    and then shared by every worker, so a session signed by one is good in all."""
    path = settings.path(SESSION_KEY_NAME)
    fsutil.make_once(path, lambda staging: staging.write_bytes(secrets.token_bytes(32)))
    return path.read_bytes()


def token_by_digest(digest: str) -> ApiToken | None:
    """The token whose hash is ``digest``: what a dashboard session holds instead of the
    token itself, so a stolen cookie never reveals a token. None once it is revoked."""
    if not digest:
        return None
    row = ApiToken.get_or_none(ApiToken.token_hash == digest)
    if row is None:
        return None
    _note_use(row)
    return row
