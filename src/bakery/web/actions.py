"""The dashboard's actions: each a form POST that runs one fleet call as the signed-in
token (role-checked like the API route it stands for), then goes back to a page with
what happened as a message; the upload is the one the page's script sends with progress.

Form values are checked by the API's own schemas, so a value the API refuses the page
refuses too, in the same words."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from flask import flash, jsonify, redirect, request, url_for
from flask.views import MethodView
from marshmallow import Schema, ValidationError
from werkzeug.wrappers import Response

from ..api.bakes import BakeRequestSchema
from ..api.blueprint import body_limit
from ..api.current import current_fleet as fleet
from ..api.disks import DiskCreateSchema
from ..api.errors import error_response, field_messages
from ..api.pis import PowerSchema
from ..errors import BakeryError, InvalidInput
from .blueprint import blp
from .session import local_path, requires


def form_input(
    schema: Schema, integers: Iterable[str] = (), fixed: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The form's non-empty fields, loaded by ``schema``; ``integers`` are whole numbers;
    ``fixed`` values (from the page's URL) win over the form's."""
    values: dict[str, Any] = {}
    for name, value in request.form.items():
        if name == "csrf_token" or name == "back" or not value.strip():
            continue
        values[name] = value.strip()
        if name in integers:
            try:
                values[name] = int(values[name])
            except ValueError:
                raise InvalidInput(f"{name}: not a whole number") from None
    try:
        loaded: dict[str, Any] = schema.load(values | (fixed or {}))
    except ValidationError as exc:
        problems = exc.messages if isinstance(exc.messages, dict) else {"form": exc.messages}
        raise InvalidInput(f"invalid input: {field_messages({'form': problems})}") from None
    return loaded


def done(default: str, attempt: Callable[[], str]) -> Response:
    """Run ``attempt`` (it returns the message saying what it did), flash its message or
    the error's, and go back to the form's page (``back``) or ``default``."""
    try:
        flash(attempt(), "ok")
    except BakeryError as exc:
        flash(exc.message, "error")
    return redirect(local_path(request.form.get("back"), default))


@blp.route("/pis/<serial>/bake", methods=["POST"])
@requires("work")
def bake_pi(serial: str) -> Response:
    def attempt() -> str:
        args = form_input(BakeRequestSchema(), fixed={"serial": serial})
        bake = fleet().bake(args.pop("bakeform"), **args)
        return f"baked {bake.bakeform_name} onto {bake.pi.serial} as bake {bake.id}"

    return done(url_for("web.pi_page", serial=serial), attempt)


@blp.route("/bakes/<bake_id>/unbake", methods=["POST"])
@requires("work")
def unbake(bake_id: str) -> Response:
    def attempt() -> str:
        bake = fleet().unbake(bake_id)
        return f"unbaked {bake.id}: {bake.pi.serial} is free"

    return done(url_for("web.bakes"), attempt)


@blp.route("/pis/<serial>/power", methods=["POST"])
@requires("fleet")
def power(serial: str) -> Response:
    def attempt() -> str:
        action = form_input(PowerSchema())["action"]
        result = fleet().operator_power(serial, action)
        return f"power {action}: {result.state} {result.message}".strip()

    return done(url_for("web.pi_page", serial=serial), attempt)


@blp.route("/bakeforms/<name>/delete", methods=["POST"])
@requires("work")
def delete_bakeform(name: str) -> Response:
    def attempt() -> str:
        fleet().delete_bakeform(name)
        return f"deleted bakeform {name}"

    return done(url_for("web.bakeforms"), attempt)


@blp.route("/disks", methods=["POST"])
@requires("work")
def create_disk() -> Response:
    def attempt() -> str:
        disk = fleet().create_disk(**form_input(DiskCreateSchema(), integers=("size_mib",)))
        return f"created disk {disk.id} ({disk.size_mib} MiB)"

    return done(url_for("web.disks"), attempt)


@blp.route("/disks/<disk_id>/delete", methods=["POST"])
@requires("work")
def delete_disk(disk_id: str) -> Response:
    def attempt() -> str:
        fleet().delete_disk(disk_id)
        return f"deleted disk {disk_id}"

    return done(url_for("web.disks"), attempt)


class BakeformUpload(MethodView):
    """``PUT /bakeforms/<name>/image``: the image as the request body, sent by the
    page's script so it can show the upload's progress; answers JSON (that script reads
    it). Streamed and held to ``max_upload_mib`` as the API's upload is."""

    decorators = [requires("work")]

    @body_limit(None)
    def put(self, name: str) -> Response | tuple[Response, int]:
        replace = request.args.get("replace") in ("1", "true", "on")
        try:
            bakeform = fleet().import_bakeform(
                name, request.stream, replace=replace, length=request.content_length
            )
        except BakeryError as exc:
            return error_response(exc.status, exc.code, exc.message, exc.details)
        return jsonify({"name": bakeform.name, "sha256": bakeform.sha256}), 201


blp.add_url_rule("/bakeforms/<name>/image", view_func=BakeformUpload.as_view("upload_bakeform"))
