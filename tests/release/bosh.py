"""What the release tests need of BOSH: the release directory read the way ``bosh
create-release`` reads it (specs, file globs over ``src/`` and blobs), packages compiled
the way the agent compiles them, and job templates rendered the way the director renders
them (``erb_render.rb``, with Ruby's ERB)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent
RELEASE = HERE.parents[1]
SRC = RELEASE / "src"
#: What every job template is rendered with: one instance of a deployment.
INSTANCE = {
    "deployment": "bakery",
    "name": "bakery",
    "id": "5a0f7c2e-3b1d-4c4e-9f6a-2d8b7e1c0a11",
    "index": 0,
    "az": "z1",
    "bootstrap": True,
    "address": "10.0.0.10",
    "ip": "10.0.0.10",
    "networks": {"pis": {"ip": "10.0.0.10", "netmask": "255.255.255.0", "default": ["dns"]}},
    "release": {"name": "bakery", "version": "0+dev.1"},
}
VARIABLE = re.compile(r"\(\(([A-Za-z0-9_./-]+)\)\)")
#: The bare PATH packages are compiled and run with here: no virtualenv, no /usr/local.
BARE_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
FETCH_BLOBS = RELEASE / "scripts" / "fetch-blobs"
#: Written once scripts/fetch-blobs succeeded: a fetch cut short is fetched again.
FETCHED_MARK = ".fetched"

needs_ruby = pytest.mark.tools("ruby")


def load_yaml(path: Path) -> Any:
    result = subprocess.run(
        ["ruby", str(HERE / "yaml_to_json.rb"), str(path)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(result.stdout)


def jobs() -> list[str]:
    return sorted(p.name for p in (RELEASE / "jobs").iterdir())


def packages() -> list[str]:
    return sorted(p.name for p in (RELEASE / "packages").iterdir())


def job_spec(job: str) -> dict:
    return load_yaml(RELEASE / "jobs" / job / "spec")


def package_spec(package: str) -> dict:
    return load_yaml(RELEASE / "packages" / package / "spec")


def glob_matches(pattern: str, roots: list[Path]) -> dict[str, Path]:
    """Files ``pattern`` matches under each root (src/, then blobs), by release path:
    what create-release puts into the package at that relative path."""
    matches: dict[str, Path] = {}
    for root in roots:
        for path in sorted(root.glob(pattern)):
            if path.is_file():
                matches.setdefault(path.relative_to(root).as_posix(), path)
    return matches


def stage_package(package: str, compile_dir: Path, blobs_dir: Path) -> list[str]:
    """Lay the package out as the agent unpacks it for ``packaging``: every ``files``
    match at its relative path, plus the packaging script. Returns the staged paths."""
    staged = []
    for pattern in package_spec(package)["files"]:
        matches = glob_matches(pattern, [SRC, blobs_dir])
        assert matches, f"package {package}: no file matches {pattern!r}"
        for relative, source in matches.items():
            (compile_dir / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, compile_dir / relative)
            staged.append(relative)
    shutil.copyfile(RELEASE / "packages" / package / "packaging", compile_dir / "packaging")
    return staged


def fetched_blobs(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    arguments: list[str],
    env: dict[str, str] | None = None,
) -> Path:
    """``scripts/fetch-blobs --dest DIR *arguments``, laid out like blobs/: fetched once and
    kept in pytest's cache (when enabled) under ``name``, which names what was fetched."""
    cache = getattr(request.config, "cache", None)
    blobs = cache.mkdir(name) if cache else tmp_path_factory.mktemp(name)
    if not (blobs / FETCHED_MARK).exists():
        subprocess.run(
            [str(FETCH_BLOBS), "--dest", str(blobs), *arguments],
            env=env,
            check=True,
            capture_output=True,
        )
        (blobs / FETCHED_MARK).touch()
    return blobs


#: What scripts/fetch-blobs fetches from pinned sources (all but Bakery's own wheel).
PINNED_PARTS = ("wheels", "python3", "dnsmasq", "mtools", "nfs-ganesha")


def release_blobs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every blob of the release, laid out like blobs/: the pinned sources, fetched once
    and cached until scripts/fetch-blobs changes, and Bakery's wheel, built now from this
    checkout (so it is the code under test)."""
    digest = hashlib.sha256(FETCH_BLOBS.read_bytes()).hexdigest()[:12]
    env = {**os.environ, "PYTHON": sys.executable}
    pinned = fetched_blobs(
        request, tmp_path_factory, f"bakery-release-{digest}", list(PINNED_PARTS), env
    )
    blobs = tmp_path_factory.mktemp("blobs")
    for part in pinned.iterdir():
        if part.is_dir():
            (blobs / part.name).symlink_to(part)
    subprocess.run(
        [str(FETCH_BLOBS), "--dest", str(blobs), "bakery"], env=env, check=True, capture_output=True
    )
    return blobs


def clean_export(destination: Path) -> Path:
    """The checkout's files as a clone has them: tracked and new ones, nothing ignored
    (no virtualenv, data dir, blobs or dev releases of this working tree)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=RELEASE,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for name in filter(None, (entry.decode() for entry in listed)):
        source = RELEASE / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    return destination


def cli_env(cli: str, home: Path) -> dict[str, str]:
    """What the real bosh CLI runs with here, as an operator's shell would give it: a
    bare PATH with the CLI on it (as ``bosh``, whatever its file is called), its own
    HOME (its caches and installations), and the Python fetch-blobs builds wheels with."""
    bin_dir = home / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    link = bin_dir / "bosh"
    if not link.is_symlink():
        link.symlink_to(Path(cli).resolve())
    return {"PATH": f"{bin_dir}:{BARE_PATH}", "HOME": str(home), "PYTHON": sys.executable}


def run_tool(
    env: dict[str, str], *command: str | Path, cwd: Path, timeout: float = 600, what: str = ""
) -> str:
    """Run `command` (bosh, fetch-blobs, a packaging script) to success; on failure, the
    end of its output, under `what` it is (its program's name by default)."""
    done = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    failed = f"{what or command[0]} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    assert done.returncode == 0, failed
    return done.stdout


def report_line(request: pytest.FixtureRequest, line: str) -> None:
    """A line in the test run's own output, past pytest's capture: what a run of the
    suite shows of a test that passed (compile and deploy times)."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(f"\n{line}", flush=True)


def bakery_release(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, cli: str
) -> tuple[Path, dict[str, str]]:
    """Bakery's release tarball as an operator builds it from a clone: a clean export,
    ``scripts/fetch-blobs --offline`` from the pinned sources (cached), then
    ``bosh create-release --force --tarball``. Returns it and the CLI's environment."""
    cache = release_blobs(request, tmp_path_factory)
    work = tmp_path_factory.mktemp("create-release")
    export = clean_export(work / "bakery")
    env = cli_env(cli, work)
    run_tool(env, export / "scripts" / "fetch-blobs", "--offline", str(cache), cwd=export)
    tarball = work / "bakery.tgz"
    run_tool(env, "bosh", "create-release", "--force", f"--tarball={tarball}", cwd=export)
    return tarball, env


def compile_package(package: str, blobs_dir: Path, root: Path, timeout: float = 300) -> Path:
    """Compile ``package`` as the agent does on a compilation VM: staged in
    ``root/compile/<package>``, ``bash -x packaging`` there with the BOSH_* variables and a
    bare PATH, in a network namespace of its own so nothing can come from the network.
    Dependencies are looked up in ``root/packages``. Returns the installed package."""
    compile_dir = root / "compile" / package
    compile_dir.mkdir(parents=True)
    stage_package(package, compile_dir, blobs_dir)
    packages_dir = root / "packages"
    install_dir = packages_dir / package
    install_dir.mkdir(parents=True)
    env = {
        "PATH": BARE_PATH,
        "BOSH_COMPILE_TARGET": str(compile_dir),
        "BOSH_INSTALL_TARGET": str(install_dir),
        "BOSH_PACKAGES_DIR": str(packages_dir),
        "BOSH_PACKAGE_NAME": package,
        "BOSH_PACKAGE_VERSION": "0+dev.1",
    }
    command = ["unshare", "--net", "bash", "-x", "packaging"]
    run_tool(env, *command, cwd=compile_dir, timeout=timeout, what=f"packaging {package}")
    return install_dir


def run_packaged(
    executable: Path, *args: str, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """A packaged program run as a job runs it: nothing from this machine's environment
    but a bare PATH (and ``env``), so it cannot lean on the test's virtualenv."""
    return subprocess.run(
        [str(executable), *args],
        input=stdin,
        env={"PATH": BARE_PATH, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def interpolate(value: Any, variables: dict[str, Any]) -> Any:
    """Replace ``((name))`` and ``((name.key))`` as the CLI and config server do; a whole
    ``((...))`` value may become a non-string. Unknown variables are an error."""
    if isinstance(value, dict):
        return {key: interpolate(item, variables) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, variables) for item in value]
    if not isinstance(value, str):
        return value
    whole = VARIABLE.fullmatch(value)
    if whole:
        return _variable(whole.group(1), variables)
    return VARIABLE.sub(lambda m: str(_variable(m.group(1), variables)), value)


def _variable(name: str, variables: dict[str, Any]) -> Any:
    head, *keys = name.split(".")
    if head not in variables:
        raise KeyError(f"manifest uses an unknown variable (({name}))")
    value = variables[head]
    for key in keys:
        value = value[key]
    return value


def render(job: str, template: str, properties: dict, instance: dict = INSTANCE) -> str:
    """One template of ``job`` rendered for ``instance`` with manifest ``properties``."""
    context = json.dumps({"properties": properties, "spec": instance})
    result = subprocess.run(
        ["ruby", str(HERE / "erb_render.rb"), str(RELEASE / "jobs" / job), template, "/dev/stdin"],
        input=context,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RenderError(result.stderr.strip())
    return result.stdout


def render_job(job: str, properties: dict, jobs_dir: Path, instance: dict = INSTANCE) -> Path:
    """Every template of ``job`` rendered into ``jobs_dir/<job>/`` as the agent lays a
    job out (``bin/`` executable). Returns the job's directory."""
    job_dir = jobs_dir / job
    for template, destination in job_spec(job)["templates"].items():
        target = job_dir / destination
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(render(job, template, properties, instance))
        if destination.startswith("bin/"):
            target.chmod(0o755)
    return job_dir


class RenderError(RuntimeError):
    """The director would refuse the deployment: a template failed to render."""
