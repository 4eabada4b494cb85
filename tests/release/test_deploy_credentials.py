"""Step 2 of the README's "Deploy with BOSH", read from the README itself and run as
written with the real bosh CLI (``BOSH_CLI``, or ``bosh`` on the PATH) in a directory
holding ``bosh-release/``: the two tokens written with openssl, then ``bosh int
bosh-release/bakery.yml --vars-store bakery-creds.yml -v ...``. The vars store then holds
the tokens and a TLS certificate for ``bakery_ip`` from its own CA; running the
interpolation again keeps every credential; the manifest it yields leaves no variable
unresolved, and its bakery job renders into a config Bakery's loader accepts, with those
tokens and that certificate. The store also has what step 3 reads from it, and step 5's
manifest, ``-l`` and ``-v`` (read from the README too) interpolate to the same manifest."""

from __future__ import annotations

import re
import shlex
import subprocess
from itertools import pairwise
from pathlib import Path

import pytest
import yaml

from tests.support import bosh_tools

from .bosh import BARE_PATH, RELEASE, VARIABLE, needs_ruby, render_job
from .test_templates import settings_from

BOSH = bosh_tools.CLI
pytestmark = [needs_ruby, pytest.mark.tools("bash", "openssl"), bosh_tools.needs("cli")]

README = RELEASE / "README.md"
CREDS = "bakery-creds.yml"
#: The example values the README's step 2 passes with -v.
BAKERY_IP = "10.0.0.10"


def readme_steps() -> dict[int, str]:
    """The numbered steps of the README's "Deploy with BOSH" shell block: each step's
    lines from its ``# N.`` comment to the next, comment lines left out."""
    section = README.read_text().split("\n## Deploy with BOSH\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("\n```sh\n", 1)[1].split("\n```", 1)[0]
    steps: dict[int, list[str]] = {}
    for line in block.splitlines():
        if number := re.match(r"# (\d+)\. ", line):
            steps[int(number[1])] = []
        elif steps and line.strip() and not line.lstrip().startswith("#"):
            steps[max(steps)].append(line)
    return {number: "\n".join(lines) + "\n" for number, lines in steps.items()}


STEP_2 = readme_steps()[2]


def step_command(script: str, start: str) -> list[str]:
    """The step's one command that starts with ``start``, as an argument list (its
    continuation lines joined), its output redirection left out."""
    (line,) = [line for line in script.replace("\\\n", " ").splitlines() if line.startswith(start)]
    return [word for word in shlex.split(line) if not word.startswith(">")]


def options(words: list[str], *flags: str) -> list[str]:
    """The ``flag value`` pairs of ``flags`` in a command, in order."""
    return [word for pair in pairwise(words) if pair[0] in flags for word in pair]


def run(work: Path, *command: str) -> str:
    done = subprocess.run(
        command,
        cwd=work,
        env={"PATH": f"{work / 'bin'}:{BARE_PATH}", "HOME": str(work)},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, f"{command} failed:\n{done.stdout}{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def step_2(tmp_path_factory) -> tuple[Path, str]:
    """Where step 2 ran (a directory with ``bosh-release/``, as a checkout has it, and
    ``bosh`` on the PATH), and the vars store it left."""
    assert BOSH is not None  # the module is skipped otherwise
    work = tmp_path_factory.mktemp("deploy")
    (work / "bin").mkdir()
    (work / "bin" / "bosh").symlink_to(BOSH)
    (work / "bosh-release").symlink_to(RELEASE / "bosh-release")
    run(work, "bash", "-eu", "-o", "pipefail", "-c", STEP_2)
    return work, (work / CREDS).read_text()


@pytest.fixture(scope="module")
def rerun(step_2) -> tuple[dict, str]:
    """Step 2's ``bosh int`` run again: the manifest it prints, and the vars store after."""
    work, _ = step_2
    printed = run(work, *step_command(STEP_2, "bosh int "))
    assert not VARIABLE.search(printed), "variables left unresolved"
    return yaml.safe_load(printed), (work / CREDS).read_text()


def openssl(work: Path, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        ["openssl", *args], cwd=work, input=stdin, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def bakery_job(manifest: dict) -> dict:
    (group,) = manifest["instance_groups"]
    (job,) = [job for job in group["jobs"] if job["name"] == "bakery"]
    return job


def test_step_2_interpolates_the_bakery_manifest_into_the_vars_store():
    command = step_command(STEP_2, "bosh int ")
    assert command[:3] == ["bosh", "int", "bosh-release/bakery.yml"]
    assert command[command.index("--vars-store") + 1] == CREDS


def test_the_vars_store_holds_both_tokens_and_a_certificate_for_bakery_ip(step_2):
    work, text = step_2
    creds = yaml.safe_load(text)
    assert set(creds) == {
        "bakery_director_token",
        "bakery_operator_token",
        "bakery_ca",
        "bakery_tls",
    }
    tokens = [creds["bakery_director_token"], creds["bakery_operator_token"]]
    assert all(re.fullmatch(r"[0-9a-f]{64}", token) for token in tokens)
    assert tokens[0] != tokens[1]

    ca, tls = creds["bakery_ca"], creds["bakery_tls"]
    assert tls["ca"] == ca["certificate"]
    (work / "ca.pem").write_text(ca["certificate"])
    (work / "tls.pem").write_text(tls["certificate"])
    assert openssl(work, "verify", "-CAfile", "ca.pem", "tls.pem").strip() == "tls.pem: OK"
    names = openssl(work, "x509", "-in", "tls.pem", "-noout", "-ext", "subjectAltName")
    assert f"IP Address:{BAKERY_IP}" in names
    # the private key is the certificate's
    public = openssl(work, "x509", "-in", "tls.pem", "-noout", "-pubkey")
    assert openssl(work, "pkey", "-pubout", stdin=tls["private_key"]) == public


def test_interpolating_again_keeps_every_credential(step_2, rerun):
    _, before = step_2
    _, after = rerun
    assert after == before


def test_the_manifest_gives_the_bakery_job_what_it_needs(step_2, rerun, tmp_path):
    manifest, text = rerun
    creds = yaml.safe_load(text)
    (group,) = manifest["instance_groups"]
    assert group["networks"] == [{"name": "pis", "static_ips": [BAKERY_IP]}]
    properties = bakery_job(manifest)["properties"]
    assert properties["netboot"]["pi_interface"] == "eth0"
    assert properties["netboot"]["proxy_range"] == "10.0.0.0"
    tls = creds["bakery_tls"]
    assert properties["tls"] == {
        "certificate": tls["certificate"],
        "private_key": tls["private_key"],
    }

    _, settings = settings_from(render_job("bakery", properties, tmp_path / "jobs"))
    assert settings.api_tokens == {
        "director": creds["bakery_director_token"],
        "operator": {"token": creds["bakery_operator_token"], "role": "admin"},
    }
    # the job's templates write each PEM with a newline after it
    assert Path(settings.tls_cert_file).read_text().strip() == tls["certificate"].strip()
    assert Path(settings.tls_key_file).read_text().strip() == tls["private_key"].strip()
    assert settings.pi_interface == "eth0" and settings.dnsmasq_enabled


def test_the_vars_store_has_what_step_3_reads_from_it(step_2, rerun):
    """Step 3's ops file, with step 3's -l and -v as the README gives them: only
    bosh-deployment's own variables (its vars store generates them) are left."""
    work, _ = step_2
    step_3 = options(step_command(readme_steps()[3], "bosh create-env "), "-l", "-v")
    assert step_3[:2] == ["-l", CREDS]
    printed = run(work, "bosh", "int", "bosh-release/colocate-bakery-cpi.yml", *step_3)
    left = set(VARIABLE.findall(printed))
    assert left == {"internal_ip", "blobstore_agent_password", "blobstore_ca.certificate"}
    (cpi,) = [op["value"] for op in yaml.safe_load(printed) if op["path"].endswith("/jobs/-")]
    creds = yaml.safe_load(rerun[1])
    assert cpi["properties"]["bakery"] == {
        "url": f"https://{BAKERY_IP}:8443",
        "token": creds["bakery_director_token"],
        "ca_cert": creds["bakery_ca"]["certificate"],
    }


def test_step_5_deploys_the_manifest_step_2_interpolated(step_2, rerun):
    """What step 5 gives ``bosh deploy`` (its manifest, -l and -v), interpolated by the
    CLI as deploy does before it sends the manifest: the same manifest, all resolved."""
    work, _ = step_2
    deploy = step_command(readme_steps()[5], "bosh -d bakery deploy ")
    manifest = deploy[4]
    assert manifest == "bosh-release/bakery.yml"
    printed = run(work, "bosh", "int", manifest, *options(deploy, "-l", "-v"))
    assert not VARIABLE.search(printed), "variables left unresolved"
    assert yaml.safe_load(printed) == rerun[0]
