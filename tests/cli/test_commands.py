"""The ``bakery`` CLI against a real server: tables for people, --json for scripts,
one-line errors with a non-zero exit."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from bakery.cli import main
from bakery.sim.server import BakeryProcess as LiveServer
from bakery.sim.server import free_port, free_udp_port, udp_bound
from bakery.sim.wait import wait_until


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    config = {
        "root": str(tmp / "data"),
        "power_on_gap": 0,
        "log_level": "WARNING",
        "http_boot_bind": f"127.0.0.1:{free_port()}",
        "netconsole_bind": f"127.0.0.1:{free_udp_port()}",
    }
    live = LiveServer(config, tmp).start()
    yield live
    live.stop()


@pytest.fixture
def bakery(server, monkeypatch):
    monkeypatch.setenv("BAKERY_URL", server.url)
    monkeypatch.setenv("BAKERY_TOKEN", server.token)
    runner = CliRunner()

    def run(*args: str, ok: bool = True):
        result = runner.invoke(main, list(args), catch_exceptions=False)
        assert (result.exit_code == 0) == ok, (args, result.output)
        return result

    return run


def test_pi_lifecycle_in_tables_and_json(bakery, server, sd_image_file):
    bakery(
        "pi",
        "register",
        "00c0ffee",
        "--mac",
        "dc:a6:32:aa:bb:cc",
        "--model",
        "4B",
        "--ip",
        "127.0.0.40",
        "--label",
        "rack1",
    )
    listing = bakery("pi", "list").output
    assert listing.splitlines()[0].split()[:3] == ["SERIAL", "MODEL", "STATE"]
    assert "00c0ffee" in listing and "available" in listing
    assert json.loads(bakery("--json", "fridge").output)[0]["serial"] == "00c0ffee"

    upload = bakery("bakeform", "upload", "raspios", str(sd_image_file))
    assert "sha256" in upload.output
    assert "raspios" in bakery("bakeform", "list").output

    made = json.loads(bakery("bake", "raspios", "--label", "rack1", "--json").output)
    assert made["serial"] == "00c0ffee" and made["state"] == "baked"
    assert made["id"] in bakery("oven").output
    assert "(no available Pis)" in bakery("fridge").output

    disk = json.loads(bakery("disk", "create", "64", "--bake", made["id"], "--json").output)
    assert disk["bake_id"] == made["id"]
    bakery("disk", "detach", disk["id"])
    bakery("disk", "delete", disk["id"])
    for_bosh = json.loads(bakery("disk", "create", "64", "--partitioned", "--json").output)
    table = subprocess.run(
        ["sfdisk", "--dump", str(server.root / "disks" / for_bosh["id"] / "disk.img")],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "start=        2048, size=      129024, type=83" in table
    bakery("disk", "delete", for_bosh["id"])

    shown = bakery("pi", "show", "00c0ffee").output
    assert "root seasoned" in shown and "claimed for a bake" in shown
    assert "unbaked" in bakery("unbake", made["id"]).output
    assert "00c0ffee" in bakery("fridge").output


def test_errors_are_one_line_and_exit_non_zero(bakery):
    result = bakery("pi", "show", "0badf00d", ok=False)
    assert result.output.strip() == "Error: no Pi with serial 0badf00d"
    result = bakery("pi", "register", "not-hex", ok=False)
    assert "serial" in result.output and len(result.output.strip().splitlines()) == 1
    result = bakery("bake", "nothing-here", ok=False)
    assert "no bakeform named 'nothing-here'" in result.output
    result = bakery("pi", "register", "00000077", "--power-settings", "{oops", ok=False)
    assert "--power-settings" in result.output


def test_wrong_token_and_unreachable_server(server, monkeypatch):
    runner = CliRunner()
    result = runner.invoke(main, ["--url", server.url, "--token", "bky_wrong", "pi", "list"])
    assert result.exit_code == 1 and "invalid or revoked token" in result.output
    result = runner.invoke(main, ["--url", "http://127.0.0.1:9", "--token", "x", "fridge"])
    assert result.exit_code == 1 and "cannot reach Bakery" in result.output


def test_tokens(bakery):
    created = json.loads(bakery("token", "create", "director", "--json").output)
    assert created["token"].startswith("bky_")
    assert "director" in bakery("token", "list").output
    bakery("token", "revoke", "director")
    assert "director" not in bakery("token", "list").output


@pytest.mark.parametrize(
    "args",
    [
        ["serve", "--config", "/nonexistent/bakery.json"],
        ["tftp", "--bind", "not-an-address"],
        ["netboot", "--config", "/nonexistent/bakery.json"],
        ["dnsmasq-config", "--config", "/nonexistent/bakery.json"],
        ["restore-power", "--config", "/nonexistent/bakery.json"],
    ],
)
def test_service_commands_refuse_bad_settings_in_one_line(args, tmp_path, monkeypatch):
    monkeypatch.setenv("BAKERY_ROOT", str(tmp_path))
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ")


def test_restore_power_refuses_a_start_time_that_is_not_one(tmp_path, monkeypatch):
    monkeypatch.setenv("BAKERY_ROOT", str(tmp_path))
    result = CliRunner().invoke(main, ["restore-power", "--registered-before", "yesterday"])
    assert result.exit_code == 2
    assert "--registered-before" in result.output and "yesterday" in result.output


def test_bake_takes_cloud_init_user_data_from_a_file(bakery, server, sd_image_file, tmp_path):
    bakery("pi", "register", "00c1d000", "--ip", "127.0.0.41", "--label", "cloud")
    bakery("bakeform", "upload", "cloudy", str(sd_image_file))
    broken = tmp_path / "broken.yaml"
    broken.write_text("#cloud-config\nruncmd: [\n")
    user_data = tmp_path / "user-data.yaml"
    user_data.write_text("#cloud-config\nhostname: from-user-data\n")

    refused = bakery("bake", "cloudy", "--label", "cloud", "--user-data", str(broken), ok=False)
    made = json.loads(
        bakery("bake", "cloudy", "--label", "cloud", "--user-data", str(user_data), "--json").output
    )

    assert len(refused.output.strip().splitlines()) == 1
    assert "user_data" in refused.output and "line 3" in refused.output
    seed = server.root / "bakes" / made["id"] / "root/var/lib/cloud/seed/nocloud/user-data"
    assert seed.read_text() == user_data.read_text()
    bakery("unbake", made["id"])


@pytest.mark.tools("mkfs.ext4")
def test_a_k3s_disk_made_mounted_and_baked_with_the_pi(bakery, server, sd_image_file):
    bakery("pi", "register", "00c1d001", "--ip", "127.0.0.42", "--label", "k3s")
    bakery("bakeform", "upload", "k3s-node", str(sd_image_file))
    disk = json.loads(
        bakery(
            "disk",
            "create",
            "2048",
            "--filesystem",
            "ext4",
            "--mount-point",
            "/var/lib/rancher",
            "--json",
        ).output
    )
    refused = bakery("disk", "create", "64", "--mount-point", "/etc", ok=False)

    made = json.loads(
        bakery("bake", "k3s-node", "--label", "k3s", "--disk", disk["id"], "--json").output
    )

    assert len(refused.output.strip().splitlines()) == 1 and "mount_point" in refused.output
    assert made["disks"] == [disk["id"]]
    listing = server.root / "bakes" / made["id"] / "root/var/lib/bakery/disks"
    assert listing.read_text().split()[2:] == ["ext4", "/var/lib/rancher"]
    table = bakery("disk", "list").output
    assert "/var/lib/rancher" in table and "ext4" in table
    bakery("unbake", made["id"])
    bakery("disk", "delete", disk["id"])


@pytest.mark.tools("openssl")
def test_http_boot_key_prints_the_public_key_for_the_eeproms(tmp_path, monkeypatch):
    monkeypatch.delenv("BAKERY_CONFIG", raising=False)
    runner = CliRunner()

    first = runner.invoke(main, ["http-boot-key", "--root", str(tmp_path / "data")])
    again = runner.invoke(main, ["http-boot-key", "--root", str(tmp_path / "data")])

    assert first.exit_code == 0, first.output
    assert first.output.startswith("-----BEGIN PUBLIC KEY-----")
    assert again.output == first.output, "the key is made once and kept"
    key = tmp_path / "data/http-boot-key.pem"
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    assert "PRIVATE" not in first.output


def test_a_pi_is_registered_to_boot_over_http(bakery):
    shown = json.loads(
        bakery("pi", "register", "00c1d002", "--boot-protocol", "http", "--json").output
    )
    refused = bakery("pi", "register", "00c1d003", "--boot-protocol", "pxe", ok=False)

    assert shown["boot_protocol"] == "http"
    assert "pxe" in refused.output
    bakery("pi", "delete", "00c1d002")


def test_without_a_token_the_error_says_where_one_comes_from(server, tmp_path, monkeypatch):
    monkeypatch.delenv("BAKERY_TOKEN", raising=False)
    monkeypatch.setenv("BAKERY_ROOT", str(tmp_path / "not-the-data-dir"))

    result = CliRunner().invoke(main, ["--url", server.url, "pi", "list"])

    assert result.exit_code == 1
    assert len(result.output.strip().splitlines()) == 1
    for where in ("--token", "BAKERY_TOKEN", "BAKERY_ROOT", "admin-token"):
        assert where in result.output


def test_an_upload_over_an_existing_name_says_to_add_replace(bakery, sd_image_file):
    bakery("bakeform", "upload", "clash", str(sd_image_file))

    refused = bakery("bakeform", "upload", "clash", str(sd_image_file), ok=False)
    replaced = bakery("bakeform", "upload", "clash", str(sd_image_file), "--replace")

    assert "exists" in refused.output and "--replace" in refused.output
    assert f"uploaded {sd_image_file.name}; the server is extracting it" in replaced.stderr
    bakery("bakeform", "delete", "clash")


def test_pi_show_and_watch_tell_a_boot_in_seconds_since_its_power_on(bakery, server, sd_image_file):
    bakery("pi", "register", "00c1d004", "--ip", "127.0.0.44", "--label", "watch")
    bakery("bakeform", "upload", "watched", str(sd_image_file))
    made = json.loads(bakery("bake", "watched", "--label", "watch", "--json").output)

    shown = bakery("pi", "show", "00c1d004").output
    watched = bakery("pi", "watch", "00c1d004", "--until", "baked", "--timeout", "10").output
    gave_up = bakery(
        "pi", "watch", "00c1d004", "--until", "never said", "--timeout", "0.3", ok=False
    )

    assert re.search(r"^\+\d+\.\d\d s +state +.*baked", shown, re.M), shown
    assert re.search(r"^ +\+\d+\.\d\d s  state +.*baked", watched, re.M), watched
    assert watched.strip().splitlines()[-1].endswith("baked")
    assert "no event with 'never said' in 0.3 s" in gave_up.output
    bakery("unbake", made["id"])


def test_host_list_shows_this_host_live_with_its_pis(bakery):
    bakery("pi", "register", "0000ab01")

    (host,) = json.loads(bakery("--json", "host", "list").output)
    table = bakery("host", "list").output

    assert host["live"] is True and host["pis"] >= 1
    assert host["name"] in table and "live" in table and "GiB" in table
    assert json.loads(bakery("--json", "pi", "show", "0000ab01").output)["host"] == host["name"]
    refused = bakery("pi", "update", "0000ab01", "--host", "rack-9", ok=False)
    assert "no Bakery host named 'rack-9'" in refused.output


def test_a_second_bakery_under_a_live_hosts_name_is_refused_in_one_line(server, monkeypatch):
    """Its recovery would roll back the first one's live bakes."""
    monkeypatch.delenv("BAKERY_ROOT", raising=False)
    bind = f"127.0.0.1:{free_port()}"
    result = CliRunner().invoke(main, ["serve", "--root", str(server.root), "--bind", bind])

    assert result.exit_code == 1
    assert "another Bakery serves as host" in result.output
    assert result.output.count("\n") == 1
    assert server.session().get(f"{server.url}/api/v1/health").ok


def test_pi_watch_follows_new_events_live_until_stopped(bakery, server):
    bakery("pi", "register", "00c1d005")
    env = {**os.environ, "BAKERY_URL": server.url, "BAKERY_TOKEN": server.token}
    command = [str(Path(sys.executable).with_name("bakery")), "pi", "watch", "00c1d005"]
    watch = subprocess.Popen(
        [*command, "--interval", "0.1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    printed: list[str] = []
    reader = threading.Thread(target=lambda: printed.extend(watch.stdout or ()), daemon=True)
    reader.start()
    power = re.compile(r"^ +\+0\.\d\d s  power +power cycle via manual \(attempt 1/\d\): ok")
    try:
        wait_until(lambda: any("registered" in line for line in printed), 30, what="its backlog")
        assert not any(power.match(line) for line in printed)

        bakery("pi", "power", "00c1d005", "cycle")

        wait_until(lambda: any(power.match(line) for line in printed), 30, what="the power line")
        assert watch.poll() is None, "it follows until stopped"
    finally:
        watch.send_signal(signal.SIGINT)  # Ctrl-C
        watch.wait(timeout=30)
        reader.join(timeout=30)
    assert len([line for line in printed if power.match(line)]) == 1, printed
    bakery("pi", "delete", "00c1d005")


def test_pi_console_prints_the_pis_bootloader_log(bakery, server):
    bakery("pi", "register", "00c1d006", "--ip", "127.0.0.46")
    bakery("pi", "register", "00c1d007", "--ip", "127.0.0.47")
    sent = ["RPi: BOOTLOADER release VERSION:8ba17717", "Read start4.elf bytes  2228800"]
    port = int(json.loads(server.config_file.read_text())["netconsole_bind"].rsplit(":", 1)[1])
    wait_until(lambda: udp_bound(port), 30, what="the bootloader log listener")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as bootloader:
        bootloader.bind(("127.0.0.46", 0))  # it sends from the address its Pi boots from
        bootloader.sendto("".join(f"{line}\r\n" for line in sent).encode(), ("127.0.0.1", port))
    api = server.session()
    wait_until(
        lambda: api.get(f"{server.url}/api/v1/pis/00c1d006/console").json(), 30, what="its log"
    )

    printed = bakery("pi", "console", "00c1d006").output.splitlines()
    other = bakery("pi", "console", "00c1d007").output

    assert all(re.match(r"^\d\d:\d\d:\d\d\.\d{3}  ", line) for line in printed), printed
    assert [line.split("  ", 1)[1] for line in printed] == sent
    assert other.startswith("(no bootloader log: set NETCONSOLE in its EEPROM")
    for serial in ("00c1d006", "00c1d007"):
        bakery("pi", "delete", serial)
