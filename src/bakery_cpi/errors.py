"""The errors a CPI call answers with, one class per ``Bosh::Clouds::*`` type.

The director accepts only the types it knows (bosh-cpi.md §1.4) and reacts to each
differently: it retries ``VMCreationFailed`` with ``ok_to_retry``, ignores ``VMNotFound``
from ``delete_vm``, falls back to copying a disk on ``NotSupported`` from ``resize_disk``.
So every failure becomes one of these before it is answered, never a free-form type.
"""

from __future__ import annotations

from typing import Any


class CpiError(Exception):
    """``Bosh::Clouds::CpiError``: the request or the CPI's own configuration is wrong."""

    bosh_type = "CpiError"

    def __init__(self, message: str, *, ok_to_retry: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.ok_to_retry = ok_to_retry

    def as_response_error(self) -> dict[str, Any]:
        return {
            "type": f"Bosh::Clouds::{self.bosh_type}",
            "message": self.message,
            "ok_to_retry": self.ok_to_retry,
        }


class NotSupported(CpiError):
    bosh_type = "NotSupported"


class MethodNotImplemented(CpiError):
    """``Bosh::Clouds::NotImplemented`` (named apart from Python's builtin constant)."""

    bosh_type = "NotImplemented"


class CloudError(CpiError):
    """``Bosh::Clouds::CloudError``: Bakery refused or could not be reached."""

    bosh_type = "CloudError"


class VMNotFound(CpiError):
    bosh_type = "VMNotFound"


class DiskNotFound(CpiError):
    bosh_type = "DiskNotFound"


class DiskNotAttached(CpiError):
    bosh_type = "DiskNotAttached"


class VMCreationFailed(CpiError):
    bosh_type = "VMCreationFailed"
