"""Marshmallow fields shared by the resources: the identifier rules of
``bakery.identifiers`` as field validators, so a bad value is refused with the
field's name before any handler runs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from marshmallow import ValidationError, fields

from .. import identifiers


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
