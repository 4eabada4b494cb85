"""A small Bakery API client on the standard library.

The director starts a CPI process for every call (and calls ``info`` before nearly
every operation), so start-up time is the CPI's latency: ``requests`` alone costs
~180 ms to import, ``http.client`` a fraction of that, and ``ssl`` is imported only
for https. One connection per request: calls are few and short-lived.
"""

from __future__ import annotations

import http.client
import json
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import quote, urlencode, urlsplit

from .config import CpiConfig
from .errors import CloudError, CpiError

if TYPE_CHECKING:
    import ssl

#: Bytes per write when streaming a stemcell image to the server.
UPLOAD_BLOCK = 1024 * 1024


class ApiError(Exception):
    """Bakery answered with an error: its HTTP status and stable machine ``code``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"Bakery answered {status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class BakeryClient:
    """Calls ``/api/v1`` of one Bakery with a bearer token."""

    def __init__(self, config: CpiConfig) -> None:
        parts = urlsplit(config.url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port
        self._prefix = parts.path.rstrip("/") + "/api/v1"
        self._url = config.url
        self._token = config.token
        self._timeout = config.timeout
        self._ca_cert = config.ca_cert
        self._ca_file = config.ca_file

    def get(self, path: str, **query: str) -> Any:
        return self.call("GET", path, query=query)

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.call("POST", path, body if body is not None else {})

    def put(self, path: str, body: dict[str, Any]) -> Any:
        return self.call("PUT", path, body)

    def delete(self, path: str) -> Any:
        return self.call("DELETE", path)

    def upload(self, path: str, stream: IO[bytes], length: int, **query: str) -> Any:
        """PUT a file's bytes as they are read, never holding the image in memory."""
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(length)}
        return self._send("PUT", path, query, stream, headers)

    def call(
        self, method: str, path: str, body: Any = None, query: dict[str, str] | None = None
    ) -> Any:
        """One JSON request; the decoded answer, or ApiError for a 4xx/5xx."""
        if body is None:
            return self._send(method, path, query or {}, None, {})
        payload = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "Content-Length": str(len(payload))}
        return self._send(method, path, query or {}, payload, headers)

    def _send(
        self, method: str, path: str, query: dict[str, str], body: Any, headers: dict[str, str]
    ) -> Any:
        target = self._prefix + quote(path) + (f"?{urlencode(query)}" if query else "")
        headers = {**headers, "Authorization": f"Bearer {self._token}"}
        headers["Accept"] = "application/json"
        connection = self._connect()
        try:
            connection.request(method, target, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise CloudError(
                f"cannot reach Bakery at {self._url} ({method} {target}): {_describe(exc)}"
            ) from None
        finally:
            connection.close()
        return _decode(response.status, data)

    def _connect(self) -> http.client.HTTPConnection:
        if not self._https:
            return http.client.HTTPConnection(
                self._host, self._port, timeout=self._timeout, blocksize=UPLOAD_BLOCK
            )
        context = self._tls()
        return http.client.HTTPSConnection(
            self._host, self._port, timeout=self._timeout, context=context, blocksize=UPLOAD_BLOCK
        )

    def _tls(self) -> ssl.SSLContext:
        """Verify Bakery's certificate against the configured CA (or the system's)."""
        import ssl  # only https pays for it

        try:
            return ssl.create_default_context(
                cafile=self._ca_file or None, cadata=self._ca_cert or None
            )
        except (OSError, ValueError) as exc:
            raise CpiError(f"cpi.json: bakery.ca_cert/ca_file is not a usable CA: {exc}") from None


def _decode(status: int, data: bytes) -> Any:
    """The JSON body of a success; for an error, ApiError with Bakery's code and message."""
    try:
        document = json.loads(data) if data else None
    except ValueError:
        document = None
    if status < 400:
        return document
    error = document.get("error") if isinstance(document, dict) else None
    if not isinstance(error, dict):
        text = data[:200].decode(errors="replace").strip()
        raise ApiError(status, "http_error", text or f"HTTP {status}")
    raise ApiError(status, str(error.get("code", "error")), str(error.get("message", "")))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__
