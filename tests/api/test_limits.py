"""Request limits: every route holds its body to a size, JSON that would make the parser
raise is the client's 400, and stored labels stay small enough to list."""

from __future__ import annotations

import json
import socket

import pytest

from bakery.api.blueprint import JSON_BODY_LIMIT, MAX_JSON_DEPTH, METADATA_LIMIT

from .conftest import assert_error


def post_json(client, url: str, text: str):
    return client.post(url, data=text, content_type="application/json")


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (nested(100_000), "nested too deeply"),
        ('{"bakeform": "raspios", "metadata": {"n": ' + "9" * 5000 + "}}", "digits"),
        ('{"bakeform": "raspios", "metadata": ' + nested(MAX_JSON_DEPTH) + "}", "deeper than"),
    ],
    ids=["100k-deep", "5000-digit-integer", "past-the-depth-limit"],
)
def test_json_the_parser_would_choke_on_is_a_400(client, bakeform, pis, body, said):
    assert_error(post_json(client, "/api/v1/bakes", body), 400, "invalid_json", said)
    assert client.get("/api/v1/bakes").json == []


def test_json_as_deep_as_the_limit_is_accepted(client, bakeform, pis):
    metadata = {"a": json.loads(nested(MAX_JSON_DEPTH - 2))}  # body, metadata, a: the rest
    made = client.post("/api/v1/bakes", json={"bakeform": "raspios", "metadata": metadata})
    assert made.status_code == 201, made.json


def test_a_body_over_the_routes_limit_is_a_413_and_stores_nothing(client, bakeform, pis):
    bake = client.post("/api/v1/bakes", json={"bakeform": "raspios"}).json
    labels = json.dumps({"label": "x" * METADATA_LIMIT})

    put = client.put(
        f"/api/v1/bakes/{bake['id']}/metadata", data=labels, content_type="application/json"
    )

    assert_error(put, 413, "too_large", f"limit of {METADATA_LIMIT} bytes")
    assert client.get(f"/api/v1/bakes/{bake['id']}").json["metadata"] == {}


def test_labels_too_big_to_list_are_refused_naming_the_field(client, bakeform, pis):
    body = {"bakeform": "raspios", "metadata": {"label": "x" * METADATA_LIMIT}}
    error = assert_error(client.post("/api/v1/bakes", json=body), 422, "validation_error")
    assert "metadata" in error["details"]["json"]
    assert client.get("/api/v1/bakes").json == []


def test_an_upload_is_not_held_to_the_json_limit(client, sd_image_file):
    assert sd_image_file.stat().st_size > JSON_BODY_LIMIT
    with open(sd_image_file, "rb") as image:
        put = client.put(
            "/api/v1/bakeforms/big", data=image, content_type="application/octet-stream"
        )
    assert put.status_code == 201, put.json


def answer_to(server, head: bytes, chunks: list[bytes]) -> tuple[int, dict]:
    """Send ``head`` then ``chunks`` (as far as the server lets us); its status, JSON body."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head)
        try:
            for chunk in chunks:
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before taking it all
        answer = b""
        while data := sock.recv(65536):
            answer += data
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2])


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_150_mb_body_is_refused_before_it_is_read(live_server):
    server = live_server()
    head = (
        f"POST /api/v1/bakes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {150 * 2**20}\r\n\r\n"
    ).encode()

    status, body = answer_to(server, head, [b'{"metadata": "' + b"x" * 65536])

    assert (status, body["error"]["code"]) == (413, "too_large")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_chunked_body_is_cut_off_at_the_limit(live_server):
    server = live_server()
    head = (
        f"POST /api/v1/bakes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.token}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    piece = b"x" * 65536
    chunks = [b'10\r\n{"metadata": "xx\r\n'] + [b"10000\r\n" + piece + b"\r\n"] * 40

    status, body = answer_to(server, head, chunks)

    assert (status, body["error"]["code"]) == (413, "too_large"), body
    assert server.session().get(f"{server.url}/api/v1/bakes").json() == []
