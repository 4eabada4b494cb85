"""Every job template renders as the director would render it, with the spec defaults and
with the example deployment in bosh-release/, and what it renders is what the programs
accept: Bakery's own loader reads config/bakery.json, and the rendered bin/cpi answers
the director against a live Bakery started from the rendered bakery job."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest

from bakery.config import Settings, load_settings
from bakery.datadir import claim_data_dir
from bakery.sim.server import BakeryProcess as LiveServer

from .bosh import (
    INSTANCE,
    RELEASE,
    RenderError,
    interpolate,
    job_spec,
    jobs,
    load_yaml,
    needs_ruby,
    render,
    render_job,
)

pytestmark = needs_ruby
VCAP_JOBS = "/var/vcap/jobs"
VCAP_PACKAGES = "/var/vcap/packages/"
DIRECTOR_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
TOKEN = "bky_release-test-token-0123456789abcdef"
OPERATOR_TOKEN = "o" * 40
#: The properties a job has no default for and cannot run without.
REQUIRED = {
    "bakery": {},
    "bakery_cpi": {
        "bakery": {"url": "https://10.0.0.10:8443", "token": TOKEN},
        "agent": {"mbus": "nats://10.0.0.6:4222"},
    },
}
#: Job properties whose defaults deliberately differ from the service's own: on a BOSH
#: VM, data lives on the persistent disk, the API faces the network, exports are real.
DELIBERATE = {
    "root",
    "bind",
    "nfs_backend",
    "nfs_server",
    "host_id",
    "dnsmasq_binary",
    # the job runs its own nfs-ganesha, which answers MOUNT on a fixed port
    "ganesha_binary",
    "nfs_mount_port",
}


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> dict:
    """A self-signed certificate for 127.0.0.1, shaped like a BOSH certificate variable."""
    directory = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
         "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(directory / "key.pem"), "-out", str(directory / "cert.pem")],
        check=True,
        capture_output=True,
    )  # fmt: skip
    cert = (directory / "cert.pem").read_text()
    return {"certificate": cert, "private_key": (directory / "key.pem").read_text(), "ca": cert}


@pytest.fixture(scope="module")
def example_variables(certificate) -> dict:
    """Values for every ``((variable))`` the example manifests use."""
    return {
        "bakery_ip": "10.0.0.10",
        "pi_interface": "eth0",
        "pi_network": "10.0.0.0",
        "bakery_director_token": TOKEN,
        "bakery_operator_token": OPERATOR_TOKEN,
        "bakery_tls": certificate,
        "bakery_release": "/tmp/bakery.tgz",
        "internal_ip": "10.0.0.6",
        "blobstore_agent_password": "agent-password",
        "blobstore_ca": {"certificate": certificate["ca"]},
    }


@pytest.fixture(scope="module")
def example_properties(example_variables) -> dict:
    """Each job's properties in the example deployment: bakery from bakery.yml, bakery_cpi
    from the ops file that colocates it with a director."""
    manifest = interpolate(load_yaml(RELEASE / "bosh-release" / "bakery.yml"), example_variables)
    bakery = next(
        job
        for group in manifest["instance_groups"]
        for job in group["jobs"]
        if job["name"] == "bakery"
    )
    ops = interpolate(
        load_yaml(RELEASE / "bosh-release" / "colocate-bakery-cpi.yml"), example_variables
    )
    cpi = next(op["value"] for op in ops if op["path"].endswith("/jobs/-"))
    return {"bakery": bakery["properties"], "bakery_cpi": cpi["properties"]}


def job_templates() -> list[tuple[str, str]]:
    return [(job, template) for job in jobs() for template in job_spec(job)["templates"]]


def on_this_machine(value, jobs_dir: Path):
    """A rendered value with /var/vcap/jobs paths moved to where the test rendered them."""
    if isinstance(value, dict):
        return {key: on_this_machine(item, jobs_dir) for key, item in value.items()}
    if isinstance(value, str) and value.startswith(VCAP_JOBS + "/"):
        return str(jobs_dir) + value[len(VCAP_JOBS) :]
    return value


def settings_from(job_dir: Path) -> tuple[dict, Settings]:
    """The rendered bakery.json as written, and as Bakery's loader reads it on this host."""
    rendered = json.loads((job_dir / "config" / "bakery.json").read_text())
    mapped = job_dir.parent / "bakery-mapped.json"
    mapped.write_text(json.dumps(on_this_machine(rendered, job_dir.parent)))
    return rendered, load_settings(mapped, environ={})


@pytest.mark.parametrize(("job", "template"), job_templates())
def test_every_template_renders_with_the_spec_defaults(job, template):
    assert render(job, template, REQUIRED[job]) is not None


@pytest.mark.parametrize(("job", "template"), job_templates())
def test_every_template_renders_with_the_example_deployment(job, template, example_properties):
    assert render(job, template, example_properties[job]) is not None


@pytest.mark.parametrize("job", jobs())
def test_example_deployment_sets_only_properties_the_job_declares(job, example_properties):
    """The director ignores an undeclared property silently: a misspelt one is lost."""
    declared = set(job_spec(job)["properties"])
    assert not set(_dotted(example_properties[job])) - declared


def test_cpi_refuses_to_render_without_bakery_url_and_token():
    with pytest.raises(RenderError, match="bakery.url"):
        render("bakery_cpi", "cpi.json.erb", {"agent": {"mbus": "nats://10.0.0.6:4222"}})


def test_bakery_config_from_defaults_is_accepted_by_bakery(tmp_path):
    job_dir = render_job("bakery", REQUIRED["bakery"], tmp_path)
    rendered, settings = settings_from(job_dir)
    assert settings.root == Path("/var/vcap/store/bakery")
    assert settings.nfs_server == INSTANCE["ip"]
    assert settings.host_id == INSTANCE["id"]
    assert settings.dnsmasq_binary == "/var/vcap/packages/dnsmasq/sbin/dnsmasq"
    assert "tls_cert_file" not in rendered


def test_job_defaults_are_the_services_defaults_unless_bosh_needs_otherwise(tmp_path):
    rendered, _ = settings_from(render_job("bakery", REQUIRED["bakery"], tmp_path))
    defaults = {f.name: _default(f) for f in dataclasses.fields(Settings)}
    differing = {key for key, value in rendered.items() if defaults[key] != value}
    assert differing == DELIBERATE


def test_example_deployment_config_is_accepted_by_bakery(tmp_path, example_properties):
    job_dir = render_job("bakery", example_properties["bakery"], tmp_path)
    rendered, settings = settings_from(job_dir)
    templates = job_spec("bakery")["templates"]
    assert rendered["tls_cert_file"] == f"{VCAP_JOBS}/bakery/{templates['tls.crt.erb']}"
    assert rendered["tls_key_file"] == f"{VCAP_JOBS}/bakery/{templates['tls.key.erb']}"
    assert Path(settings.tls_cert_file).read_text().startswith("-----BEGIN CERTIFICATE")
    assert settings.api_tokens == {
        "director": TOKEN,
        "operator": {"token": OPERATOR_TOKEN, "role": "admin"},
    }
    assert settings.dnsmasq_enabled and settings.pi_interface == "eth0"


def test_bpm_runs_bakery_serve_on_the_rendered_config(tmp_path):
    config_path = f"{VCAP_JOBS}/bakery/{job_spec('bakery')['templates']['bakery.json.erb']}"
    (process,) = _bpm({}, tmp_path)["processes"]
    assert process["executable"] == "/var/vcap/packages/bakery/bin/bakery"
    assert process["args"] == ["serve", "--config", config_path]
    assert process["persistent_disk"] is True


def test_bpm_finds_the_mtools_package_before_the_system_tools(tmp_path):
    """Bakeform import runs mdir and mcopy, which stemcells lack."""
    (process,) = _bpm({}, tmp_path)["processes"]
    path = process["env"]["PATH"].split(":")
    assert path == ["/var/vcap/packages/mtools/bin", *DIRECTOR_PATH.split(":")]


def test_every_package_the_bakery_process_runs_from_is_installed_with_the_job(tmp_path):
    """The agent installs only the packages a job lists: any other is missing on the VM."""
    job_dir = render_job("bakery", REQUIRED["bakery"], tmp_path)
    (process,) = load_yaml(job_dir / job_spec("bakery")["templates"]["bpm.yml.erb"])["processes"]
    rendered, _ = settings_from(job_dir)
    paths = [process["executable"], rendered["dnsmasq_binary"], *process["env"]["PATH"].split(":")]
    used = {PurePosixPath(path).parts[4] for path in paths if path.startswith(VCAP_PACKAGES)}
    used.add(PurePosixPath(rendered["ganesha_binary"]).parts[4])
    assert used == {"bakery", "dnsmasq", "mtools", "nfs-ganesha"}
    assert used <= set(job_spec("bakery")["packages"])


def test_bpm_mounts_a_data_dir_outside_the_persistent_disk(tmp_path):
    (process,) = _bpm({"data_dir": "/srv/bakery"}, tmp_path)["processes"]
    assert {"path": "/srv/bakery", "writable": True} in process["additional_volumes"]


def test_rendered_cpi_answers_the_director_against_a_live_bakery(tmp_path):
    """The whole path a director takes: bin/cpi with a bare environment and the rendered
    cpi.json, against Bakery started from the rendered bakery job, which accepts the
    token the manifest gave it."""
    jobs_dir = tmp_path / "jobs"
    bakery = render_job("bakery", _live_properties(tmp_path), jobs_dir)
    rendered = json.loads((bakery / "config" / "bakery.json").read_text())
    server = LiveServer(on_this_machine(rendered, jobs_dir), tmp_path)
    try:
        server.start()
        cpi_properties = {
            "bakery": {"url": server.url, "token": TOKEN},
            "agent": {"mbus": "nats://10.0.0.6:4222"},
        }
        cpi = render_job("bakery_cpi", cpi_properties, jobs_dir)
        info = _call(cpi / "bin" / "cpi", jobs_dir, "info", [])
        has_vm = _call(cpi / "bin" / "cpi", jobs_dir, "has_vm", ["0" * 32])
    finally:
        server.stop()
    assert info["error"] is None
    assert info["result"]["api_version"] == 2
    assert "pi-raw" in info["result"]["stemcell_formats"]
    assert has_vm["error"] is None
    assert has_vm["result"] is False


def _live_properties(tmp_path: Path) -> dict:
    return {
        "data_dir": str(tmp_path / "data"),
        "log_level": "WARNING",
        "nfs": {"server": "127.0.0.1", "backend": "none"},
        "netboot": {"tftp": {"enabled": False}},
        "power": {"on_gap": 0},
        "api_tokens": {"director": TOKEN},
    }


def _call(cpi: Path, jobs_dir: Path, method: str, arguments: list) -> dict:
    """Run bin/cpi as the director does: only PATH in the environment, the request on
    stdin; the package directory is this checkout's virtualenv."""
    packages_dir = jobs_dir.parent / "packages"
    packages_dir.mkdir(exist_ok=True)
    if not (packages_dir / "bakery").exists():
        (packages_dir / "bakery").symlink_to(Path(sys.executable).parent.parent)
    request = {"method": method, "arguments": arguments, "context": {"director_uuid": "x"}}
    env = {"PATH": DIRECTOR_PATH, "BOSH_PACKAGES_DIR": str(packages_dir)}
    env["BOSH_JOBS_DIR"] = str(jobs_dir)
    result = subprocess.run(
        [str(cpi)], input=json.dumps(request), capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _bpm(properties: dict, tmp_path: Path) -> dict:
    job_dir = render_job("bakery", properties, tmp_path)
    return load_yaml(job_dir / job_spec("bakery")["templates"]["bpm.yml.erb"])


def _default(field: dataclasses.Field):
    value = field.default_factory() if callable(field.default_factory) else field.default
    return str(value) if isinstance(value, Path) else value


def _dotted(properties: dict, prefix: str = "") -> list[str]:
    """Manifest properties as the dotted names a spec declares (a hash value is a leaf
    when the spec declares it whole, like api_tokens or agent.blobstore)."""
    names = []
    for key, value in properties.items():
        name = prefix + key
        if isinstance(value, dict) and value and not _declared_whole(name):
            names.extend(_dotted(value, name + "."))
        else:
            names.append(name)
    return names


def _declared_whole(name: str) -> bool:
    return any(name in job_spec(job)["properties"] for job in jobs())


@pytest.mark.root
def test_pre_start_makes_the_data_dir_bakerys_alone_before_it_starts(tmp_path):
    data_dir = tmp_path / "store" / "bakery"
    data_dir.mkdir(parents=True, mode=0o755)
    os.chown(data_dir, 1000, 1000)  # as a careless operator or an older release left it
    job_dir = render_job("bakery", {"data_dir": str(data_dir)}, tmp_path / "jobs")

    subprocess.run([str(job_dir / "bin/pre-start")], check=True)

    info = data_dir.stat()
    assert (stat.S_IMODE(info.st_mode), info.st_uid) == (0o700, 0)
    claim_data_dir(data_dir)  # what Bakery checks at every start


def test_pre_start_refuses_a_data_dir_a_shell_would_read_as_more_than_a_path(tmp_path):
    with pytest.raises(RenderError, match="data_dir must be an absolute path"):
        render("bakery", "pre-start.erb", {"data_dir": "/srv/x; rm -rf /"})


def test_the_job_runs_its_own_nfs_server_unless_told_otherwise(tmp_path):
    own, settings = settings_from(render_job("bakery", REQUIRED["bakery"], tmp_path / "own"))
    assert own["nfs_backend"] == "ganesha"
    assert own["ganesha_binary"] == "/var/vcap/packages/nfs-ganesha/bin/ganesha.nfsd"
    assert settings.nfs_mount_port == 20048
    external = REQUIRED["bakery"] | {"nfs": {"ganesha": {"run": False}, "ganesha_pid_file": "/x"}}
    theirs, _ = settings_from(render_job("bakery", external, tmp_path / "theirs"))
    kernel = REQUIRED["bakery"] | {"nfs": {"backend": "kernel"}}
    exportfs, _ = settings_from(render_job("bakery", kernel, tmp_path / "kernel"))
    assert "ganesha_binary" not in theirs and "ganesha_binary" not in exportfs
    assert theirs["ganesha_pid_file"] == "/x"


def test_a_host_sharing_a_database_says_where_the_others_reach_it(tmp_path):
    shared = REQUIRED["bakery"] | {
        "database_url": "postgresql://bakery@db.lab/bakery",
        "host_url": "https://rack-2.lab:8443",
    }
    _, settings = settings_from(render_job("bakery", shared, tmp_path / "shared"))
    alone, _ = settings_from(render_job("bakery", REQUIRED["bakery"], tmp_path / "alone"))
    assert settings.url_for_hosts == "https://rack-2.lab:8443"
    assert "host_url" not in alone
