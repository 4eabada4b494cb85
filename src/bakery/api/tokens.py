"""/api/v1/tokens: create (shown once), list, revoke API tokens."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask.views import MethodView
from marshmallow import Schema, fields, validate

from .. import auth, identifiers
from .auth import ADMIN, allow
from .blueprint import Blueprint
from .fields import Name

if TYPE_CHECKING:
    from ..auth import ApiToken

blp = Blueprint("tokens", __name__, url_prefix="/api/v1/tokens", description="API tokens")


class TokenSchema(Schema):
    name = fields.String()
    prefix = fields.String()
    role = fields.String()
    owner = fields.String()
    configured = fields.Boolean(metadata={"description": "from the settings file"})
    created_at = fields.DateTime()
    last_used_at = fields.DateTime(allow_none=True)


class NewTokenSchema(TokenSchema):
    token = fields.String(metadata={"description": "the token itself; shown only now"})


class TokenCreateSchema(Schema):
    name = Name(required=True)
    role = fields.String(
        load_default="viewer",
        validate=validate.OneOf(identifiers.ROLES),
        metadata={"description": "what the token may call (default: read only)"},
    )
    owner = Name(
        load_default="",
        metadata={"description": "whose bakes and disks it makes and sees (default: its name)"},
    )


@blp.route("")
class Tokens(MethodView):
    @allow(ADMIN)
    @blp.response(200, TokenSchema(many=True))
    def get(self) -> list[ApiToken]:
        return auth.list_tokens()

    @allow(ADMIN)
    @blp.arguments(TokenCreateSchema)
    @blp.response(201, NewTokenSchema)
    def post(self, args: dict[str, Any]) -> dict[str, Any]:
        """Create a token; the answer is the only time its value is shown."""
        row, plaintext = auth.create_token(args["name"], args["role"], args["owner"])
        shown = {field: getattr(row, field) for field in TokenSchema().fields}
        return {**shown, "token": plaintext}


@blp.route("/<name>")
class TokenResource(MethodView):
    @allow(ADMIN)
    @blp.response(204)
    def delete(self, name: str) -> None:
        """Revoke a token; requests with it are refused from now on."""
        auth.revoke_token(name)
