"""The CPI wire protocol (bosh-cpi.md §1): one JSON request in, one JSON object out.

Whatever happens, the answer is exactly one ``{"result", "error", "log"}`` object with
``log`` a string and an error of a type the director knows; the director parses all
of stdout at once, so nothing else is ever printed there. ``info`` is answered here,
without loading the HTTP client: the director calls it before nearly every operation.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .config import load_config
from .errors import CloudError, CpiError, MethodNotImplemented
from .log import CallLog

API_VERSION = 2
#: Stemcell formats whose ``image`` this CPI imports: a Raspberry Pi SD-card image
#: (MBR, FAT boot partition, ext4 root; raw, .xz or .gz) built for netbooting on Bakery.
STEMCELL_FORMATS = ["bakery-raw", "pi-raw"]

#: method -> (required argument count, kind of each argument). Kinds: ``str``, ``str?``
#: (string or null), ``int``, ``obj`` (object or null), ``any``.
METHODS: dict[str, tuple[int, tuple[str, ...]]] = {
    "info": (0, ()),
    "create_stemcell": (2, ("str", "obj", "obj")),
    "delete_stemcell": (1, ("str",)),
    "create_vm": (4, ("str", "str", "obj", "obj", "any", "obj")),
    "delete_vm": (1, ("str",)),
    "has_vm": (1, ("str",)),
    "reboot_vm": (1, ("str", "obj")),
    "set_vm_metadata": (2, ("str", "obj")),
    "calculate_vm_cloud_properties": (1, ("obj",)),
    "create_disk": (2, ("int", "obj", "str?")),
    "delete_disk": (1, ("str",)),
    "has_disk": (1, ("str",)),
    "attach_disk": (2, ("str", "str")),
    "detach_disk": (2, ("str", "str")),
    "get_disks": (1, ("str",)),
    "set_disk_metadata": (2, ("str", "obj")),
    "resize_disk": (2, ("str", "int")),
    "snapshot_disk": (1, ("str", "obj")),
    "delete_snapshot": (1, ("str",)),
}

KIND_CHECKS: dict[str, Callable[[Any], bool]] = {
    "str": lambda v: isinstance(v, str),
    "str?": lambda v: v is None or isinstance(v, str),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "obj": lambda v: v is None or isinstance(v, dict),
    "any": lambda v: True,
}


@dataclass(frozen=True)
class Request:
    method: str
    arguments: list[Any]
    context: dict[str, Any]
    api_version: int


def parse_request(raw: bytes) -> Request:
    """The request, or CpiError saying what is wrong with it."""
    try:
        document = json.loads(raw)
    except ValueError as exc:
        raise CpiError(f"request is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise CpiError("request must be a JSON object")
    method = document.get("method")
    if not isinstance(method, str) or not method:
        raise CpiError("request has no 'method' string")
    arguments = document.get("arguments", [])
    context = document.get("context") or {}
    api_version = document.get("api_version", 1)
    if not isinstance(arguments, list):
        raise CpiError("request 'arguments' must be a list")
    if not isinstance(context, dict):
        raise CpiError("request 'context' must be an object")
    if isinstance(api_version, bool) or not isinstance(api_version, int) or api_version < 1:
        raise CpiError(f"request 'api_version' must be an integer >= 1, got {api_version!r}")
    return Request(method, arguments, context, api_version)


def check_arguments(request: Request) -> None:
    """Refuse an unknown method or arguments of the wrong number or kind, up front."""
    if request.method not in METHODS:
        raise MethodNotImplemented(f"Must call implemented method: {request.method!r} is unknown")
    required, kinds = METHODS[request.method]
    count = len(request.arguments)
    if not required <= count <= len(kinds):
        raise CpiError(
            f"{request.method} takes {required}-{len(kinds)} arguments, got {count}"
            if required != len(kinds)
            else f"{request.method} takes {required} arguments, got {count}"
        )
    for position, (value, kind) in enumerate(zip(request.arguments, kinds, strict=False)):
        if not KIND_CHECKS[kind](value):
            raise CpiError(
                f"{request.method}: argument {position + 1} must be {kind}, got {value!r:.80}"
            )


def answer(raw: bytes, config_path: str | None, log: CallLog) -> dict[str, Any]:
    """The response object for one raw request; never raises."""
    try:
        return respond(handle(raw, config_path, log), None, log)
    except CpiError as exc:
        log.error(exc.message)
        return respond(None, exc.as_response_error(), log)
    except Exception as exc:  # a bug: still one well-formed answer, details on stderr
        log.error(traceback.format_exc())
        error = CloudError(f"bakery-cpi internal error: {type(exc).__name__}: {exc}")
        return respond(None, error.as_response_error(), log)


def handle(raw: bytes, config_path: str | None, log: CallLog) -> Any:
    request = parse_request(raw)
    check_arguments(request)
    if not config_path:
        raise CpiError("usage: bakery-cpi /path/to/cpi.json (no cpi.json given)")
    config = load_config(config_path, request.context)
    if request.method == "info":
        return {"api_version": API_VERSION, "stemcell_formats": STEMCELL_FORMATS}
    from .cloud import call  # the HTTP client only for calls that talk to Bakery

    return call(request.method, request.arguments, config, request.api_version, log)


def respond(result: Any, error: dict[str, Any] | None, log: CallLog) -> dict[str, Any]:
    return {"result": result, "error": error, "log": log.text()}
