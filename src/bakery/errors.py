"""The errors the service reports to its users.

Each carries a short machine ``code``, a human ``message`` and the HTTP status the
API answers with, so the API layer maps them without knowing what went wrong.
"""

from __future__ import annotations

from typing import Any


class BakeryError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.code
        self.details = details


class InvalidInput(BakeryError):
    status = 422
    code = "validation_error"

    @classmethod
    def of_field(cls, field: str, problem: str) -> InvalidInput:
        """The error for one field of a JSON body, shaped as the schema validation's own
        errors are, for rules that need the fleet's state or settings to check."""
        return cls(f"invalid input: {field}: {problem}", details={"json": {field: [problem]}})


class NotFound(BakeryError):
    """``code`` names what is missing (``bake_not_found``, ``disk_not_found``...), so a
    client tells a missing disk from a missing bake in one answer; ``not_found`` is
    left for URLs that name no resource at all."""

    status = 404
    code = "not_found"


class Forbidden(BakeryError):
    """The token may not do this: its role does not allow the route, or what it would
    change belongs to another owner."""

    status = 403
    code = "forbidden"


class Conflict(BakeryError):
    status = 409
    code = "conflict"


class NotSupported(BakeryError):
    """The request is valid but this installation cannot do it (e.g. no reflinks)."""

    status = 501
    code = "not_supported"


class TooLarge(BakeryError):
    status = 413
    code = "too_large"


class Unavailable(BakeryError):
    """Try again later: no free Pi, a busy database, a power device not answering."""

    status = 503
    code = "unavailable"


class NoPiAvailable(Unavailable):
    code = "no_pi_available"


class PowerFailed(Unavailable):
    """A power device did not do what was asked."""

    code = "power_failed"


class StorageFailed(Unavailable):
    """The data directory refused a write (full disk, failed snapshot)."""

    code = "storage_failed"


def error_class(code: str) -> type[BakeryError]:
    """The most general error class whose own ``code`` is ``code`` (BakeryError for a
    code only some instance carries): what re-raises another host's error as the same
    kind of error."""
    pending: list[type[BakeryError]] = [BakeryError]
    while pending:  # breadth first: a class before its subclasses
        cls = pending.pop(0)
        if cls.code == code:
            return cls
        pending.extend(cls.__subclasses__())
    return BakeryError
