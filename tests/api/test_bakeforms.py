"""/api/v1/bakeforms: streamed upload, validation, conflicts, deletion."""

from __future__ import annotations

import gzip
import lzma
import os

from .conftest import assert_error


def upload(client, name, data, replace=False):
    url = f"/api/v1/bakeforms/{name}" + ("?replace=true" if replace else "")
    return client.put(url, data=data, content_type="application/octet-stream")


def test_upload_raw_image_extracts_boot_and_root(client, bakeform, settings):
    assert bakeform["name"] == "raspios"
    assert bakeform["compression"] == "none"
    assert len(bakeform["sha256"]) == 64
    assert "root=PARTUUID" in bakeform["cmdline"]
    base = settings.path("bakeforms", "raspios")
    assert (base / "boot" / "start4.elf").is_file()
    assert (base / "root" / "etc" / "hostname").read_text().strip() == "raspberrypi"
    assert client.get("/api/v1/bakeforms").json[0]["name"] == "raspios"
    assert client.get("/api/v1/bakeforms/raspios").json["sha256"] == bakeform["sha256"]


def test_upload_xz_and_gz(client, sd_image_file):
    raw = sd_image_file.read_bytes()
    xz = upload(client, "xz", lzma.compress(raw, preset=0))
    gz = upload(client, "gz", gzip.compress(raw, compresslevel=1))
    assert (xz.status_code, gz.status_code) == (201, 201), (xz.json, gz.json)
    assert (xz.json["compression"], gz.json["compression"]) == ("xz", "gz")
    assert xz.json["image_size"] == gz.json["image_size"] == len(raw)


def test_existing_name_is_a_conflict_unless_replacing(client, bakeform, sd_image_file):
    with open(sd_image_file, "rb") as image:
        assert_error(upload(client, "raspios", image), 409, "conflict", "replace")
    with open(sd_image_file, "rb") as image:
        replaced = upload(client, "raspios", image, replace=True)
    assert replaced.status_code == 201
    assert len(client.get("/api/v1/bakeforms").json) == 1


def leftovers(settings):
    base = settings.path("bakeforms")
    return sorted(p.name for p in base.iterdir()) if base.exists() else []


def test_bad_uploads_get_a_precise_422_and_leave_nothing(client, settings, sd_image_file):
    raw = sd_image_file.read_bytes()
    cases = {
        "empty": b"",
        "text": b"hello, I am not an image\n" * 100,
        "truncated": raw[: len(raw) // 2],
        "random": os.urandom(1 << 20),
        "corrupt-xz": lzma.compress(raw, preset=0)[:5000],
        "corrupt-gz": gzip.compress(raw, compresslevel=1)[:5000],
    }
    for name, data in cases.items():
        response = upload(client, name, data)
        error = assert_error(response, 422, response.json["error"]["code"])
        assert error["code"] != "validation_error" or "name" in error["message"]
        assert leftovers(settings) == [], name
    assert client.get("/api/v1/bakeforms").json == []


def test_bad_bakeform_names_are_refused(client):
    for bad in ["..", ".hidden", "a b", "x" * 65, "a;b"]:
        response = upload(client, bad, b"x")
        assert response.status_code in (404, 422), bad
        assert response.is_json


def test_too_large_upload_is_a_413(client, settings, sd_image_file, monkeypatch):
    import dataclasses

    fleet = client.application.extensions["bakery.fleet"]
    monkeypatch.setattr(fleet.context, "settings", dataclasses.replace(settings, max_upload_mib=1))
    with open(sd_image_file, "rb") as image:
        assert_error(upload(client, "big", image), 413, "too_large")
    assert leftovers(settings) == []


def test_delete_bakeform(client, bakeform, settings):
    assert client.delete("/api/v1/bakeforms/raspios").status_code == 204
    assert client.get("/api/v1/bakeforms").json == []
    assert leftovers(settings) == []
    assert_error(client.delete("/api/v1/bakeforms/raspios"), 404, "bakeform_not_found")
    assert_error(client.get("/api/v1/bakeforms/raspios"), 404, "bakeform_not_found")


def test_delete_is_refused_while_a_bake_uses_it(client, bakeform, pis):
    bake = client.post("/api/v1/bakes", json={"bakeform": "raspios"}).json
    assert_error(client.delete("/api/v1/bakeforms/raspios"), 409, "conflict", bake["id"])
    client.delete(f"/api/v1/bakes/{bake['id']}")
    assert client.delete("/api/v1/bakeforms/raspios").status_code == 204
