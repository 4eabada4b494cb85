"""A small HTTP client for the Bakery API, used by the CLI.

It turns every failure (refused connection, bad token, API error) into one
``ApiError`` whose message is the line the user should read."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import requests
from urllib3.exceptions import MaxRetryError, ProtocolError

UPLOAD_CHUNK = 1024 * 1024


class ApiError(Exception):
    def __init__(self, message: str, status: int = 0, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class _ProgressReader:
    """A file wrapper requests can stream with a Content-Length, reporting progress."""

    def __init__(self, handle: BinaryIO, size: int, progress: Callable[[int], None]) -> None:
        self.handle = handle
        self.size = size
        self.progress = progress

    def __len__(self) -> int:
        return self.size

    def read(self, n: int = -1) -> bytes:
        chunk = self.handle.read(UPLOAD_CHUNK if n is None or n < 0 else n)
        self.progress(len(chunk))
        return chunk


def connection_failure(exc: requests.ConnectionError) -> str:
    """What went wrong, in the system's words without urllib3's wrappers: a refused
    connection and one closed before the answer are different troubles."""
    cause = exc.args[0] if exc.args else exc
    if isinstance(cause, MaxRetryError) and cause.reason is not None:
        cause = cause.reason
    if isinstance(cause, ProtocolError) and len(cause.args) == 2:
        return f"{str(cause.args[0]).rstrip('.')}: {cause.args[1]}"
    return re.sub(r"^<[^>]*>: ", "", str(cause))


class ApiClient:
    def __init__(self, url: str, token: str | None, timeout: float = 600.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.session = requests.Session()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = kwargs.pop("headers", {})
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            response = self.session.request(
                method, f"{self.url}/api/v1{path}", headers=headers, timeout=self.timeout, **kwargs
            )
        except requests.Timeout:  # a connect timeout is also a ConnectionError
            raise ApiError(f"Bakery at {self.url} did not answer in {self.timeout:.0f} s") from None
        except requests.ConnectionError as exc:
            raise ApiError(
                f"cannot reach Bakery at {self.url} (is it running?): {connection_failure(exc)}"
            ) from None
        if response.status_code == 204:
            return None
        try:
            body = response.json()
        except ValueError:
            raise ApiError(
                f"unexpected answer from {self.url} (HTTP {response.status_code})",
                response.status_code,
            ) from None
        if response.status_code >= 400:
            error = body.get("error", {}) if isinstance(body, dict) else {}
            raise ApiError(
                error.get("message") or f"HTTP {response.status_code}",
                response.status_code,
                error.get("code", ""),
            )
        return body

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, json=body if body is not None else {})

    def patch(self, path: str, body: Any) -> Any:
        return self.request("PATCH", path, json=body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def upload(
        self, path: str, file: Path, *, replace: bool, progress: Callable[[int], None]
    ) -> Any:
        size = file.stat().st_size
        with open(file, "rb") as handle:
            return self.request(
                "PUT",
                path,
                params={"replace": "true"} if replace else None,
                data=_ProgressReader(handle, size, progress),
                headers={"Content-Type": "application/octet-stream"},
            )
