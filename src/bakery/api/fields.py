"""Marshmallow fields shared by the resources: the identifier rules of
``bakery.identifiers`` as field validators, so a bad value is refused with the
field's name before any handler runs."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from marshmallow import ValidationError, fields, validate

from .. import identifiers
from ..fleet import BOOT_PROTOCOLS


def _check(rule: Callable[[str], str]) -> Callable[[str], None]:
    def validate(value: str) -> None:
        try:
            rule(value)
        except identifiers.InvalidIdentifier as exc:
            raise ValidationError(str(exc)) from None

    return validate


def Serial(**kwargs: Any) -> fields.String:  # noqa: N802 - reads like a field class
    return fields.String(validate=_check(identifiers.serial), **kwargs)


def Name(**kwargs: Any) -> fields.String:  # noqa: N802
    return fields.String(validate=_check(identifiers.name), **kwargs)


def Mac(**kwargs: Any) -> fields.String:  # noqa: N802
    return fields.String(validate=_check(identifiers.mac), **kwargs)


def Ip(**kwargs: Any) -> fields.String:  # noqa: N802
    return fields.String(validate=_check(identifiers.ip), **kwargs)


def Hostname(**kwargs: Any) -> fields.String:  # noqa: N802
    return fields.String(validate=_check(identifiers.hostname), **kwargs)


def Labels(**kwargs: Any) -> fields.List[str]:  # noqa: N802
    return fields.List(fields.String(validate=_check(identifiers.label)), **kwargs)


def ObjectId(**kwargs: Any) -> fields.String:  # noqa: N802
    return fields.String(validate=_check(identifiers.object_id), **kwargs)


def MountPoint(**kwargs: Any) -> fields.String:  # noqa: N802
    return fields.String(validate=_check(identifiers.mount_point), **kwargs)


def BootProtocol(description: str, **kwargs: Any) -> fields.String:  # noqa: N802
    return fields.String(
        validate=validate.OneOf(BOOT_PROTOCOLS), metadata={"description": description}, **kwargs
    )


def JsonObject(max_bytes: int, **kwargs: Any) -> fields.Dict:  # noqa: N802
    """Any JSON object of at most ``max_bytes`` as compact JSON: what is stored is
    shown in every listing, so it is held to what its purpose needs."""

    def validate(value: dict[str, Any]) -> None:
        size = len(json.dumps(value, separators=(",", ":")).encode())
        if size > max_bytes:
            raise ValidationError(f"{size} bytes as JSON, over the limit of {max_bytes}")

    return fields.Dict(validate=validate, **kwargs)
