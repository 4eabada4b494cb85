"""The API client's one-line errors say what went wrong with the connection: nothing
listening is not the same trouble as a server that closed the connection unanswered."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from bakery.client import ApiClient, ApiError
from bakery.sim.server import free_port


@pytest.fixture
def hangs_up() -> Iterator[str]:
    """A server that reads each request and closes the connection without an answer, as a
    worker killed mid-request does."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            with connection:
                connection.recv(65536)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    listener.shutdown(socket.SHUT_RDWR)  # wakes the accept()
    listener.close()
    thread.join(timeout=5)


def test_nothing_listening_is_a_refused_connection():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ApiError) as error:
        ApiClient(url, "bky_x").get("/pis")
    assert str(error.value).startswith(f"cannot reach Bakery at {url} (is it running?): ")
    assert str(error.value).endswith("Connection refused")
    assert "object at 0x" not in str(error.value)


def test_a_connection_closed_unanswered_says_so(hangs_up: str):
    with pytest.raises(ApiError) as error:
        ApiClient(hangs_up, "bky_x").get("/pis")
    assert str(error.value) == (
        f"cannot reach Bakery at {hangs_up} (is it running?): "
        "Connection aborted: Remote end closed connection without response"
    )
