"""The container path's tools: podman and friends (installed by deploy/containers/tools.sh,
as root) and Go (for the compose-go loader and kustomize). Missing tools fail the tests
in CI and skip them elsewhere, like a missing server."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import NoReturn

import pytest

from tests.support import servers_required

ROOT = Path(__file__).resolve().parents[2]
CONTAINERS = ROOT / "deploy/containers"
# Written by deploy/containers/lib.sh: runc, and limits within this machine's.
CONTAINERS_CONF = ROOT / "var/containers/containers.conf"


def missing(what: str) -> NoReturn:
    if servers_required():
        pytest.fail(what)
    pytest.skip(what)


@pytest.fixture(scope="session")
def container_tools() -> dict[str, str]:
    """Installs what is missing (as deploy/containers/build does); the environment for
    podman commands run from tests."""
    if os.geteuid() != 0:
        missing("the container tests run as root (podman as root, apt installs)")
    result = subprocess.run(
        ["bash", str(CONTAINERS / "tools.sh")], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        missing(f"deploy/containers/tools.sh failed:\n{result.stdout}{result.stderr}")
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}


def tool(name: str, *fallbacks: str) -> str:
    found = shutil.which(name) or next((f for f in fallbacks if Path(f).is_file()), None)
    if found is None:
        missing(f"{name} is not installed (deploy/containers/tools.sh installs it)")
    return found
