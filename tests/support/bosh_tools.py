"""Where the tests find the real BOSH tools (../shared/bosh on our machines): the bosh CLI
from ``BOSH_CLI`` or the PATH (``.ci/run`` sets it), the others from their own variable or
else beside the CLI, as ../shared/bosh holds them. A test that needs one that is missing
is skipped, naming it and its variable."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CLI = os.environ.get("BOSH_CLI") or shutil.which("bosh")


def _beside_cli(variable: str, name: str) -> Path | None:
    if value := os.environ.get(variable):
        return Path(value)
    beside = Path(CLI).parent / name if CLI else None
    return beside if beside is not None and beside.exists() else None


#: The real bosh-agent for what a simulated Pi runs (the sim is x86_64), and for real Pis.
AGENT_AMD64 = _beside_cli("BOSH_AGENT_AMD64", "bosh-agent-linux-amd64")
AGENT_ARM64 = _beside_cli("BOSH_AGENT_ARM64", "bosh-agent-linux-arm64")
#: monit 5.2.5's source, which stemcells compile.
MONIT_SOURCE = _beside_cli("BOSH_MONIT_SOURCE", "monit-5.2.5.tar.gz")
#: cloudfoundry/bosh-deployment.
DEPLOYMENT = _beside_cli("BOSH_DEPLOYMENT", "bosh-deployment")

_WHAT = {
    "cli": (CLI, "the bosh CLI (set BOSH_CLI)"),
    "agent_amd64": (AGENT_AMD64, "the amd64 bosh-agent (set BOSH_AGENT_AMD64)"),
    "agent_arm64": (AGENT_ARM64, "the arm64 bosh-agent (set BOSH_AGENT_ARM64)"),
    "monit_source": (MONIT_SOURCE, "monit 5.2.5's source tarball (set BOSH_MONIT_SOURCE)"),
    "deployment": (DEPLOYMENT, "cloudfoundry/bosh-deployment (set BOSH_DEPLOYMENT)"),
}


def needs(*tools: str) -> pytest.MarkDecorator:
    """Skip unless every one of `tools` (keys of ``_WHAT``) was found."""
    missing = [_WHAT[tool][1] for tool in tools if _WHAT[tool][0] is None]
    return pytest.mark.skipif(bool(missing), reason=f"needs {', '.join(missing)}")
