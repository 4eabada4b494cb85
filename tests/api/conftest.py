"""Helpers for the API tests: registered Pis and an uploaded bakeform."""

from __future__ import annotations

import pytest


def register(client, serial: str, **fields) -> dict:
    response = client.post("/api/v1/pis", json={"serial": serial, **fields})
    assert response.status_code == 201, response.json
    return response.json


def assert_error(response, status: int, code: str, *words: str) -> dict:
    """The API's one error shape: JSON with a code and a message naming the problem."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json
    error = response.json["error"]
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"]
    for word in words:
        assert word in error["message"], error
    assert "Traceback" not in response.get_data(as_text=True)
    return error


@pytest.fixture
def bakeform(client, sd_image_file) -> dict:
    with open(sd_image_file, "rb") as image:
        response = client.put(
            "/api/v1/bakeforms/raspios", data=image, content_type="application/octet-stream"
        )
    assert response.status_code == 201, response.json
    return response.json


@pytest.fixture
def pis(client) -> list[dict]:
    return [register(client, f"0000000{i}", ip=f"127.0.0.{10 + i}") for i in range(1, 4)]
