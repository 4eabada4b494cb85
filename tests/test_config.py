"""Settings: one validated object from a JSON file and BAKERY_* variables."""

from __future__ import annotations

import json

import pytest

from bakery.config import ConfigError, load_settings


def test_defaults_use_sqlite_in_the_data_dir(tmp_path):
    settings = load_settings(environ={}, root=tmp_path)
    assert settings.database == f"sqlite:///{tmp_path}/bakery.db"
    assert settings.nfs_backend == "none"


def test_environment_overrides_the_file(tmp_path):
    config = tmp_path / "bakery.json"
    config.write_text(json.dumps({"workers": 3, "nfs_server": "10.0.0.1"}))
    env = {"BAKERY_CONFIG": str(config), "BAKERY_WORKERS": "5", "BAKERY_POWER_ON_GAP": "0.5"}
    settings = load_settings(environ=env)
    assert (settings.workers, settings.nfs_server, settings.power_on_gap) == (5, "10.0.0.1", 0.5)


@pytest.mark.parametrize(
    ("values", "word"),
    [
        ({"nfs_backend": "samba"}, "nfs_backend"),
        ({"nfs_server": "pi-server.local"}, "nfs_server"),
        ({"workers": 0}, "workers"),
        ({"workers": "many"}, "workers"),
        ({"database_url": "mysql://x"}, "database_url"),
        ({"export_options": "rw) *(rw"}, "export_options"),
        ({"power_on_gap": -1}, "power_on_gap"),
        ({"wrokers": 2}, "wrokers"),
        ({"http_boot_bind": "bakery.lab:80"}, "http_boot_bind"),
        ({"http_boot_bind": "10.0.0.1:99999"}, "http_boot_bind"),
        ({"http_boot_key_file": "keys/boot.pem"}, "http_boot_key_file"),
        ({"netconsole_bind": "10.0.0.1"}, "netconsole_bind"),
        ({"metrics_bind": "monitoring:9100"}, "metrics_bind"),
        ({"metrics_bind": "10.0.0.1:0"}, "metrics_bind"),
        ({"pi_api_url": "ftp://10.0.0.1"}, "pi_api_url"),
        ({"pi_api_url": "http://10.0.0.1:8080/$(reboot)"}, "pi_api_url"),
        ({"pi_api_url": "http://a b"}, "pi_api_url"),
        ({"host_url": "http://10.0.0.1:8080/$(reboot)"}, "host_url"),
        ({"boot_deadline": 0}, "boot_deadline"),
        ({"nfs_mount_port": 70000}, "nfs_mount_port"),
        ({"nfs_mount_port": "mountd"}, "nfs_mount_port"),
    ],
)
def test_a_bad_setting_is_one_clear_error(tmp_path, values, word):
    config = tmp_path / "bakery.json"
    config.write_text(json.dumps(values))
    with pytest.raises(ConfigError, match=word):
        load_settings(config, environ={})


def test_unreadable_or_malformed_file(tmp_path):
    with pytest.raises(ConfigError, match="No such file"):
        load_settings(tmp_path / "missing.json", environ={})
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_settings(bad, environ={})


@pytest.mark.parametrize(
    ("tokens", "word"),
    [
        ({"director": "short"}, "32-128"),
        ({"bad name": "x" * 40}, "token name"),
        ({"director": "spaces are not allowed in tokens, no"}, "printable"),
        ({"director": {"token": "x" * 40, "role": "root"}}, "role must be one of"),
        ({"director": {"token": "x" * 40, "owner": "../etc"}}, "owner"),
        ({"director": {"token": "x" * 40, "rights": "all"}}, "unknown field"),
        ({"director": {"role": "cpi"}}, "32-128"),
    ],
)
def test_configured_tokens_are_validated(tmp_path, tokens, word):
    with pytest.raises(ConfigError, match=word):
        load_settings(environ={}, root=tmp_path, api_tokens=tokens)


def test_tls_needs_both_files(tmp_path):
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    with pytest.raises(ConfigError, match="go together"):
        load_settings(environ={}, root=tmp_path, tls_cert_file=str(cert))
    with pytest.raises(ConfigError, match="no such file"):
        load_settings(
            environ={},
            root=tmp_path,
            tls_cert_file=str(cert),
            tls_key_file=str(tmp_path / "missing.pem"),
        )


def test_the_url_pis_report_to_follows_the_api_unless_set(tmp_path):
    served = load_settings(environ={}, nfs_server="10.0.0.1", bind="0.0.0.0:8443")
    set_ = load_settings(environ={}, pi_api_url="https://bakery.lab:8443/")
    assert served.api_url_for_pis == "http://10.0.0.1:8443"
    assert set_.api_url_for_pis == "https://bakery.lab:8443"


def test_the_metrics_listener_is_off_unless_given_an_address(tmp_path):
    assert load_settings(environ={}, root=tmp_path).metrics_address is None
    given = load_settings(environ={"BAKERY_METRICS_BIND": "10.1.0.1:9100"}, root=tmp_path)
    assert given.metrics_address == ("10.1.0.1", 9100)
