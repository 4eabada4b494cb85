"""API tokens: created once, shown once, stored only as a hash.

Tokens are 256-bit random strings, so a plain sha256 is as strong as a slow
password hash here and lets every request be checked with one indexed lookup.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets

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


def create_token(name: str, role: str = "admin") -> tuple[ApiToken, str]:
    """Create a token; return the row and the plaintext, which is never stored."""
    identifiers.name(name, "token name")
    if ApiToken.select().where(ApiToken.name == name).exists():
        raise Conflict(f"a token named {name!r} already exists")
    plaintext = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken.create(
        name=name, token_hash=hash_token(plaintext), prefix=plaintext[:10], role=role
    )
    return row, plaintext


def verify_token(presented: str) -> ApiToken | None:
    """The token row for ``presented``, or None. Updates its last use."""
    if not 32 <= len(presented) <= 128:
        return None
    digest = hash_token(presented)
    row = ApiToken.get_or_none(ApiToken.token_hash == digest)
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        return None
    ApiToken.update(last_used_at=utcnow()).where(ApiToken.id == row.id).execute()
    return row


def list_tokens() -> list[ApiToken]:
    return list(ApiToken.select().order_by(ApiToken.name))


def revoke_token(name: str) -> None:
    if not ApiToken.delete().where(ApiToken.name == name).execute():
        raise NotFound(f"no token named {name!r}", code="token_not_found")


#: The role of tokens that come from the settings (and go when they leave them).
CONFIGURED_ROLE = "configured"


def import_configured_tokens(settings: Settings) -> None:
    """Make exactly the tokens named in the settings valid, with their current value: a
    BOSH operator rotates or revokes a token by changing the manifest and redeploying."""
    ApiToken.delete().where(
        ApiToken.role == CONFIGURED_ROLE, ApiToken.name.not_in(list(settings.api_tokens) or [""])
    ).execute()
    for name, plaintext in settings.api_tokens.items():
        digest = hash_token(plaintext)
        updated = (
            ApiToken.update(token_hash=digest, prefix=plaintext[:10], role=CONFIGURED_ROLE)
            .where(ApiToken.name == name)
            .execute()
        )
        if not updated:
            ApiToken.create(
                name=name, token_hash=digest, prefix=plaintext[:10], role=CONFIGURED_ROLE
            )


def ensure_admin_token(settings: Settings) -> str | None:
    """On the very first start, create an admin token and write it where only root reads it.

    Returns the file path written, or None when tokens already exist."""
    if ApiToken.select().exists():
        return None
    _, plaintext = create_token(ADMIN_TOKEN_NAME)
    path = settings.admin_token_file
    fsutil.write_atomically(path, plaintext + "\n", mode=0o600)
    log.warning("first start: admin API token written to %s (read it, then keep it safe)", path)
    return str(path)
