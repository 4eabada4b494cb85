"""The ``ppi`` driver: power through an external executable (a Power Plugin Interface).

Settings: ``{"path": "/abs/exe", "args": [...], "config": "/abs/ppi.json", "id": "...",
"params": {...}}`` — only ``path`` is required.

Invocation, compatible with the original bakery so existing PPIs (bakery-simpleweb-ppi)
keep working::

    <path> [args...] [-c <config>]

stdin is one JSON object holding both vocabularies; a v1 PPI reads the first two keys
and ignores the rest::

    {"piId": "<serial>", "action": "poweron"|"poweroff"|"status",
     "ppi": 2, "op": "on"|"off"|"status", "serial": ..., "mac": ..., "model": ...,
     "device_id": <settings id or null>, "params": <settings params>, "timeout_s": ...}

Reply on stdout, either the v1 word ``ok`` or a structured object
``{"ok": bool, "state": "on|off|unknown", "message": "...",
"error": {"type": "retryable|fatal|auth|connection|setting|unsupported", "message": ...}}``.

Exit codes: 0 success, 2 retryable, 3 fatal, 4 unsupported; any other non-zero code
without a structured error is fatal (a v1 PPI's failure says nothing about retrying).
A ``status`` that a v1 PPI does not understand (no structured reply, exit 0 or 1)
gives state ``unknown`` instead of an error.

stderr is the PPI's log: each line is logged with the Pi's serial and never counts
as a failure (the original treated any stderr output as one). The PPI runs in its own
session; on timeout, or when it leaves children behind, the whole process group is
killed.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
from typing import Any, cast

from bakery.power.base import (
    ERROR_TYPES,
    POWER_STATES,
    PowerDriver,
    PowerError,
    PowerResult,
    PowerTarget,
    register,
    reject_unknown_keys,
)
from bakery.redaction import scrub, secret_values

logger = logging.getLogger(__name__)

EXIT_ERROR_TYPES = {2: "retryable", 3: "fatal", 4: "unsupported"}
V1_ACTIONS = {"on": "poweron", "off": "poweroff", "status": "status"}
#: What a bare ``ok`` means for each operation.
EXPECTED_STATE = {"on": "on", "off": "off", "status": "unknown"}
SETTINGS_KEYS = {"path", "args", "config", "id", "params"}


def _absolute_path(settings: dict[str, Any], field: str) -> str:
    value = settings[field]
    if not isinstance(value, str) or not os.path.isabs(value) or "\0" in value:
        raise ValueError(f"ppi power settings: {field!r} must be an absolute path")
    return os.path.normpath(value)


@register
class PpiDriver(PowerDriver):
    name = "ppi"
    queryable = True

    @classmethod
    def validate_settings(cls, settings: dict[str, Any]) -> dict[str, Any]:
        reject_unknown_keys(settings, SETTINGS_KEYS, cls.name)
        if "path" not in settings:
            raise ValueError("ppi power settings: 'path' is required")
        clean = dict(settings)
        clean["path"] = _absolute_path(settings, "path")
        if not (os.path.isfile(clean["path"]) and os.access(clean["path"], os.X_OK)):
            raise ValueError(f"ppi power settings: 'path' {clean['path']} is not an executable")
        if "config" in settings:
            clean["config"] = _absolute_path(settings, "config")
        args = settings.get("args", [])
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise ValueError("ppi power settings: 'args' must be a list of strings")
        if not isinstance(settings.get("id", ""), str | int):
            raise ValueError("ppi power settings: 'id' must be a string or a number")
        if not isinstance(settings.get("params", {}), dict):
            raise ValueError("ppi power settings: 'params' must be a JSON object")
        return clean

    def device_key(self, target: PowerTarget) -> str:
        """One PPI config file (or executable) drives one set of boards; ``id`` narrows
        it to one board when the PPI says which Pi sits on which."""
        settings = target.settings
        key = f"ppi:{settings.get('config') or settings['path']}"
        return f"{key}#{settings['id']}" if "id" in settings else key

    def on(self, target: PowerTarget) -> PowerResult:
        return self._call(target, "on")

    def off(self, target: PowerTarget) -> PowerResult:
        return self._call(target, "off")

    def status(self, target: PowerTarget) -> PowerResult:
        return self._call(target, "status")

    def _call(self, target: PowerTarget, op: str) -> PowerResult:
        returncode, stdout = self._run(target, self._request(target, op))
        return _interpret(op, returncode, stdout)

    def _request(self, target: PowerTarget, op: str) -> bytes:
        request = {
            "piId": target.serial,
            "action": V1_ACTIONS[op],
            "ppi": 2,
            "op": op,
            "serial": target.serial,
            "mac": target.mac,
            "model": target.model,
            "device_id": target.settings.get("id"),
            "params": target.settings.get("params", {}),
            "timeout_s": self.config.power_timeout,
        }
        return json.dumps(request).encode()

    def _argv(self, settings: dict[str, Any]) -> list[str]:
        argv = [settings["path"], *settings.get("args", [])]
        return argv + ["-c", settings["config"]] if settings.get("config") else argv

    def _run(self, target: PowerTarget, request: bytes) -> tuple[int, str]:
        """Run the PPI once; its process group never outlives the call."""
        try:
            proc = subprocess.Popen(
                self._argv(target.settings),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            raise PowerError("setting", f"cannot run PPI: {exc.strerror}") from None
        try:
            stdout, stderr = proc.communicate(request, timeout=self.config.power_timeout)
        except subprocess.TimeoutExpired:
            raise PowerError(
                "timeout", f"PPI did not answer within {self.config.power_timeout:g} s"
            ) from None
        finally:
            _kill_group(proc)
        _log_stderr(target, stderr)
        return proc.returncode, stdout.decode(errors="replace")


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill whatever is left in the PPI's process group and reap the PPI.

    The group id stays reserved while any member lives, so this cannot hit an
    unrelated process even after the PPI itself has exited."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream:
            stream.close()
    proc.wait()


def _log_stderr(target: PowerTarget, stderr: bytes) -> None:
    secrets = secret_values(target.settings)
    for line in stderr.decode(errors="replace").splitlines():
        if line.strip():
            logger.info("PPI stderr for Pi %s: %s", target.serial, scrub(line, secrets))


def _interpret(op: str, returncode: int, stdout: str) -> PowerResult:
    """Turn a PPI's exit code and stdout into a result, or the right kind of error."""
    text = stdout.strip()
    if returncode == 0 and text == "ok":
        return PowerResult(EXPECTED_STATE[op])
    reply = _structured_reply(text)
    if reply is not None:
        return _structured_result(op, returncode, reply)
    if op == "status" and returncode in (0, 1):
        return PowerResult("unknown", "the PPI does not report status")
    error_type = EXIT_ERROR_TYPES.get(returncode, "fatal")
    raise PowerError(error_type, f"PPI exited {returncode}, answering {_excerpt(text)!r}")


def _structured_reply(text: str) -> dict[str, Any] | None:
    try:
        reply = json.loads(text)
    except ValueError:
        return None
    return reply if isinstance(reply, dict) and "ok" in reply else None


def _structured_result(op: str, returncode: int, reply: dict[str, Any]) -> PowerResult:
    message = str(reply.get("message", ""))
    if reply["ok"] is True and returncode == 0:
        state = reply.get("state", EXPECTED_STATE[op])
        return PowerResult(state if state in POWER_STATES else "unknown", message)
    # the isinstance check makes it a JSON object
    error = (
        cast("dict[str, Any]", reply.get("error")) if isinstance(reply.get("error"), dict) else {}
    )
    error_type = error.get("type")
    if error_type not in ERROR_TYPES:
        error_type = EXIT_ERROR_TYPES.get(returncode, "fatal")
    detail = error.get("message") or message or f"PPI reported failure (exit {returncode})"
    raise PowerError(error_type, str(detail))


def _excerpt(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
