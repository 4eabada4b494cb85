"""``bosh create-env`` as an operator runs it, onto a simulated Pi: the real bosh CLI
installs the CPI from this repository's release (compiling its packages here), uploads
a stemcell ``bakery stemcell build`` made of a Debian root with the real amd64
bosh-agent, and deploys a small release (``writer-release/``: a job that runs a process
writing to its persistent disk) with ``bosh-release/create-env-on-a-pi.yml``, as the
README says. The simulated Pi boots the bake's own systemd, whose agent answers the CLI.
A reboot, ``--recreate`` and a bigger disk keep the data; ``bosh delete-env`` leaves no
bake, disk, export or loop device.

Each phase's time is printed, as the CLI measured it; the compile of the CPI's packages
(CPython among them, minutes on two cores) is reported apart from the deploy."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bakery.sim.network import NETNS_TOOLS, NetnsNetwork
from bakery.sim.runner import SimulatedSite
from bakery.sim.userspace import Userspace
from bakery.sim.wait import wait_until
from tests.support import bosh_tools, debian
from tests.support.sites import agent_stemcell, host_loops, one_pi_site

from .bosh import HERE, RELEASE, bakery_release, cli_env, needs_ruby, report_line, run_tool

pytestmark = [
    pytest.mark.slow,
    pytest.mark.root,
    pytest.mark.timeout(3600),  # the CPI's CPython compiles in the test: minutes
    # the CPI's packages compile here, as on an operator's machine
    pytest.mark.tools(*NETNS_TOOLS, *debian.TOOLS, "debugfs", "pigz", "gcc", "make", "tclsh"),
    needs_ruby,
    bosh_tools.needs("cli", "agent_amd64", "monit_source"),
]

STORE = "/var/vcap/store/writer"
WRITER_MANIFEST = HERE / "writer-release" / "writer.yml"
ON_A_PI = RELEASE / "bosh-release" / "create-env-on-a-pi.yml"
#: A stage of the CLI's output: "Started installing CPI" ... "Finished installing CPI (...)"
STAGE = re.compile(r"^(?P<edge>Started|Finished) (?P<stage>\w[\w ]*?)(?: \(.*\))?$")
#: A step: "  Creating VM for instance 'writer/0' from stemcell '...'... Finished (00:00:02)"
STEP = re.compile(r"^\s*(?P<step>.+?)\.\.\. (?:Finished|Skipped.*?) \((\d+):(\d\d):(\d\d)\)$")
#: The phases the test reports: the stage they are in (None: any) and how their steps begin.
PHASES: dict[str, tuple[str | None, str | tuple[str, ...]]] = {
    "CPI compile": ("installing CPI", "Compiling package"),
    "CPI install": ("installing CPI", ("Installing", "Rendering")),
    "stemcell upload": (None, "Uploading stemcell"),
    "stop jobs": (None, ("Running the pre-stop", "Draining", "Stopping jobs")),
    "delete_vm": (None, ("Unmounting disk", "Deleting VM")),
    "create_vm": (None, "Creating VM"),
    "agent ready": (None, "Waiting for the agent on VM '"),
    "disk": (None, ("Creating disk", "Attaching disk")),
    "disk migration": (None, ("Migrating disk", "Detaching disk", "Deleting disk")),
    "compile on the Pi": ("deploying", "Compiling package"),
    "apply": (None, "Updating instance"),
    "start": (None, "Waiting for instance"),
    "stemcell delete": (None, "Deleting stemcell"),
}


@dataclass
class CliSteps:
    """The steps one CLI command printed, each with its stage and the seconds it took."""

    steps: list[tuple[str, str, int]] = field(default_factory=list)
    output: list[str] = field(default_factory=list)
    stage: str = ""
    seconds: float = 0.0

    def take_line(self, line: str) -> None:
        self.output.append(line)
        if edge := STAGE.match(line):
            self.stage = edge["stage"] if edge["edge"] == "Started" else ""
        elif step := STEP.match(line):
            hours, minutes, seconds = (int(part) for part in step.groups()[1:])
            self.steps.append((self.stage, step["step"], hours * 3600 + minutes * 60 + seconds))

    def phase(self, stage: str | None, starts: str | tuple[str, ...]) -> int:
        return sum(
            seconds
            for at, step, seconds in self.steps
            if stage in (None, at) and step.startswith(starts)
        )


@pytest.fixture(scope="module")
def releases(request, tmp_path_factory) -> tuple[Path, Path]:
    """Bakery's release and the writer release, as tarballs."""
    assert bosh_tools.CLI is not None  # the module is skipped otherwise
    bakery, env = bakery_release(request, tmp_path_factory, bosh_tools.CLI)
    source = tmp_path_factory.mktemp("writer") / "writer-release"
    shutil.copytree(HERE / "writer-release", source)
    writer = source.parent / "writer.tgz"
    run_tool(env, "bosh", "create-release", "--force", f"--tarball={writer}", cwd=source)
    return bakery, writer


@pytest.fixture(scope="module")
def stemcell(tmp_path_factory) -> Path:
    return agent_stemcell(tmp_path_factory.mktemp("stemcell"))


@pytest.fixture
def site(tmp_path: Path) -> Iterator[SimulatedSite]:
    with one_pi_site(tmp_path) as running:
        yield running


def deployment_variables(
    site: SimulatedSite, bakery: Path, writer: Path, stemcell: Path
) -> dict[str, Any]:
    """What the README's create-env onto a Pi is given (its ``-v`` and ``-l``, here in one
    vars file): the site's one Pi, its LAN, and the site's Bakery (plain http: no CA)."""
    pi = site.pis[0]
    network = site.network
    assert isinstance(network, NetnsNetwork)
    return {
        "bakery_release": str(bakery),
        "writer_release": str(writer),
        "stemcell": str(stemcell),
        "bakery_url": site.server.url,
        "bakery_director_token": site.server.token,
        "bakery_tls": {"ca": ""},
        "pi_serial": pi.serial,
        "pi_ip": pi.address,
        "pi_cidr": str(network.subnet),
        "pi_gateway": network.server_ip,
    }


def bosh(env: dict[str, str], work: Path, *arguments: str) -> CliSteps:
    """Run the CLI non-interactively in `work`, collecting its steps (``--tty``: without a
    terminal it prints none). A CLI cut short (the test's timeout) is killed, not left
    driving a site that is being torn down."""
    run = CliSteps()
    started = time.monotonic()
    command = ["bosh", "--non-interactive", "--tty", *arguments]
    stdout = subprocess.PIPE
    with subprocess.Popen(
        command, cwd=work, env=env, stdout=stdout, stderr=subprocess.STDOUT, text=True
    ) as cli:
        try:
            assert cli.stdout is not None
            for line in cli.stdout:
                run.take_line(line.rstrip())
            cli.wait(timeout=60)
        finally:
            cli.kill()
    run.seconds = time.monotonic() - started
    assert cli.returncode == 0, "\n".join(run.output[-80:])
    return run


def report(request: pytest.FixtureRequest, name: str, run: CliSteps) -> None:
    """Print the command's time, less the CPI compile, and each phase that took any."""
    phases = {phase: run.phase(*where) for phase, where in PHASES.items()}
    times = ", ".join(f"{phase} {seconds} s" for phase, seconds in phases.items() if seconds)
    after = run.seconds - phases["CPI compile"]
    report_line(
        request, f"{name}: {run.seconds:.0f} s, {after:.0f} s after the CPI compile ({times})"
    )


def userspace_of(site: SimulatedSite) -> Userspace | None:
    assert site.simulator is not None
    return site.simulator.userspace(site.pis[0].serial)


def on_pi(userspace: Userspace, script: str) -> str:
    """Run `script` inside the Pi (its network, mount and PID namespaces)."""
    done = userspace.run("sh", "-c", script)
    assert done.returncode == 0, done.stderr
    return done.stdout


def beats(userspace: Userspace) -> int:
    return int(on_pi(userspace, f"wc -l < {STORE}/beats"))


def assert_job_running(site: SimulatedSite, disk: str, messages: list[str]) -> Userspace:
    """The writer job started (once more: each start adds its message) and runs on the
    Pi, writing to the persistent disk, which the agent mounted from the partition the
    disk agent gave it."""
    userspace = userspace_of(site)
    assert userspace is not None, "the Pi is not running its bake"
    expected = "".join(f"{message}\n" for message in messages)
    started = f"cat {STORE}/messages 2>/dev/null || true"
    wait_until(lambda: on_pi(userspace, started) == expected, 60, what="the job's start")
    mounted = on_pi(userspace, "findmnt --noheadings --output SOURCE /var/vcap/store")
    assert mounted.strip() == f"/dev/bakery/{disk}1"
    written = beats(userspace)
    wait_until(lambda: beats(userspace) > written, 30, what="the job writing to its disk")
    on_pi(userspace, 'kill -0 "$(cat /var/vcap/sys/run/writer/writer.pid)"')
    return userspace


def live_bakes(site: SimulatedSite) -> list[dict[str, Any]]:
    return [bake for bake in site.api.get("/bakes") if bake["state"] != "unbaked"]


def test_create_env_deploys_onto_a_simulated_pi_keeps_its_data_and_deletes_cleanly(
    request, site: SimulatedSite, releases, stemcell: Path, tmp_path: Path
):
    bakery, writer = releases
    loops_before = host_loops()
    work = tmp_path / "deploy"
    work.mkdir()
    assert bosh_tools.CLI is not None
    env = cli_env(bosh_tools.CLI, work)  # a HOME of its own: the CPI is installed anew
    variables = work / "writer-vars.yml"  # JSON is YAML: the disk size stays a number
    command = [str(WRITER_MANIFEST), "--ops-file", str(ON_A_PI), "--vars-file", str(variables)]
    command += ["--state", str(work / "state.json"), "--vars-store", str(work / "creds.yml")]
    given = deployment_variables(site, bakery, writer, stemcell)

    def create_env(name: str, message: str, disk_mib: int, *flags: str) -> None:
        variables.write_text(json.dumps(given | {"message": message, "disk_mib": disk_mib}))
        report(request, name, bosh(env, work, "create-env", *command, *flags))

    create_env("create-env", "first", 1024)
    (bake,) = live_bakes(site)
    (disk,) = site.api.get("/disks")
    assert disk["bake_id"] == bake["id"]
    first_boot = assert_job_running(site, disk["id"], ["first"])

    # a reboot (a power cycle through Bakery): the agent mounts the disk again as it
    # boots, and monit starts the job again
    site.api.post(f"/bakes/{bake['id']}/power", {"action": "cycle"})
    wait_until(lambda: userspace_of(site) not in (None, first_boot), 120, what="the reboot")
    assert_job_running(site, disk["id"], ["first", "first"])

    # the same manifest, --recreate: delete_vm, create_vm, attach_disk of the same disk
    create_env("create-env --recreate", "first", 1024, "--recreate")
    (new_bake,) = live_bakes(site)
    assert new_bake["id"] != bake["id"]
    (same_disk,) = site.api.get("/disks")
    assert (same_disk["id"], same_disk["bake_id"]) == (disk["id"], new_bake["id"])
    assert_job_running(site, disk["id"], ["first", "first", "first"])  # the data kept

    # a property change and a bigger disk: a new VM (create-env makes one for any change),
    # a new disk the agent copies the data to, and the old disk deleted
    create_env("create-env (a property, disk 2 GiB)", "second", 2048)
    (third_bake,) = live_bakes(site)
    (bigger,) = site.api.get("/disks")
    assert bigger["id"] != disk["id"] and bigger["size_mib"] == 2048
    assert bigger["bake_id"] == third_bake["id"] != new_bake["id"]
    assert_job_running(site, bigger["id"], ["first", "first", "first", "second"])

    report(request, "delete-env", bosh(env, work, "delete-env", *command))
    assert live_bakes(site) == []
    assert site.api.get("/disks") == []
    assert site.api.get("/bakeforms") == []
    wait_until(lambda: userspace_of(site) is None, 30, what="the Pi's power-off")
    exports = site.ganesha.exports_file.read_text()
    assert f"{site.options.root}/" not in exports
    assert host_loops() == loops_before
