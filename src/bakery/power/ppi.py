"""The ``ppi`` driver: power through an external executable (a Power Plugin Interface).

Settings: ``{"program": "simpleweb", "config": "simpleweb.json", "id": "...",
"params": {...}}`` — only ``program`` is required. ``program`` and ``config`` name files in
the directory the operator configured (setting ``ppi_dir``), never a path: whoever may
register a Pi must not be able to make Bakery run a program of their choosing.

Invocation, compatible with the original bakery so existing PPIs (bakery-simpleweb-ppi)
keep working::

    <ppi_dir>/<program> [-c <ppi_dir>/<config>]

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
session, and its answer is read as soon as it exits, even when a child it left behind
still holds its stdout; then (or at the timeout) its whole process group is killed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import threading
from typing import IO, Any, cast

from bakery import identifiers
from bakery.config import Settings
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
SETTINGS_KEYS = {"program", "config", "id", "params"}
#: Seconds the output of a PPI that has exited may take to be read to its end.
DRAIN_SECONDS = 1.0


@register
class PpiDriver(PowerDriver):
    name = "ppi"
    queryable = True

    @classmethod
    def validate_settings(cls, settings: dict[str, Any], config: Settings) -> dict[str, Any]:
        reject_unknown_keys(settings, SETTINGS_KEYS, cls.name)
        if "program" not in settings:
            raise ValueError("ppi power settings: 'program' is required")
        program = _in_ppi_dir(config, settings, "program")
        if not os.access(program, os.X_OK):
            raise ValueError(f"ppi power settings: 'program' {program} is not executable")
        if "config" in settings:
            _in_ppi_dir(config, settings, "config")
        if not isinstance(settings.get("id", ""), str | int):
            raise ValueError("ppi power settings: 'id' must be a string or a number")
        if not isinstance(settings.get("params", {}), dict):
            raise ValueError("ppi power settings: 'params' must be a JSON object")
        return dict(settings)

    def device_key(self, target: PowerTarget) -> str:
        """One PPI config file (or executable) drives one set of boards; ``id`` narrows
        it to one board when the PPI says which Pi sits on which."""
        settings = target.settings
        key = f"ppi:{settings.get('config') or settings.get('program')}"
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
        """What to run, resolved again inside ``ppi_dir`` (settings stored before it was
        the rule, or a program removed since, fail here with a setting error)."""
        try:
            argv = [_in_ppi_dir(self.config, settings, "program")]
            if settings.get("config"):
                argv += ["-c", _in_ppi_dir(self.config, settings, "config")]
        except ValueError as exc:
            raise PowerError("setting", str(exc)) from None
        return argv

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
        stdout, stderr = _Output(proc.stdout), _Output(proc.stderr)
        try:
            _send(proc, request)
            proc.wait(timeout=self.config.power_timeout)
        except subprocess.TimeoutExpired:
            raise PowerError(
                "timeout", f"PPI did not answer within {self.config.power_timeout:g} s"
            ) from None
        finally:
            _kill_group(proc, (stdout, stderr))
        _log_stderr(target, stderr.text())
        return proc.returncode, stdout.text()


def _in_ppi_dir(config: Settings, settings: dict[str, Any], field: str) -> str:
    """The file of ``ppi_dir`` that ``settings[field]`` names; ValueError if it names none."""
    if not config.ppi_dir:
        raise ValueError("ppi power settings: this Bakery has no ppi_dir setting for programs")
    name = settings[field]
    if not isinstance(name, str) or not identifiers.NAME_RE.fullmatch(name) or ".." in name:
        raise ValueError(f"ppi power settings: {field!r} must name a file in ppi_dir, not a path")
    path = os.path.join(config.ppi_dir, name)
    if not os.path.isfile(path):
        raise ValueError(f"ppi power settings: {field!r}: no file {name} in {config.ppi_dir}")
    return path


class _Output:
    """One of the PPI's output pipes, read to its end by a thread of its own."""

    def __init__(self, stream: IO[bytes] | None) -> None:
        self._stream = stream
        self._data = b""
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        if self._stream is not None:
            with contextlib.suppress(OSError, ValueError):
                self._data = self._stream.read()

    def finish(self) -> None:
        """Wait for the pipe's end (the group was killed, so it comes), but not forever:
        a process that left the group may hold it open."""
        self._thread.join(DRAIN_SECONDS)
        if self._stream is not None:
            self._stream.close()

    def text(self) -> str:
        return self._data.decode(errors="replace")


def _send(proc: subprocess.Popen[bytes], request: bytes) -> None:
    """Write the request and close stdin; a PPI that exits without reading it is fine."""
    stdin = cast(IO[bytes], proc.stdin)
    with contextlib.suppress(BrokenPipeError, OSError):
        stdin.write(request)
    with contextlib.suppress(BrokenPipeError, OSError):
        stdin.close()


def _kill_group(proc: subprocess.Popen[bytes], outputs: tuple[_Output, ...]) -> None:
    """Kill whatever is left in the PPI's process group, read its output to the end and
    reap the PPI.

    The group id stays reserved while any member lives, so this cannot hit an
    unrelated process even after the PPI itself has exited."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for output in outputs:
        output.finish()
    proc.wait()


def _log_stderr(target: PowerTarget, stderr: str) -> None:
    secrets = secret_values(target.settings)
    for line in stderr.splitlines():
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
