"""A harness's children (and theirs) end with it: on SIGTERM, an exception, SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

HARNESS = textwrap.dedent(
    """
    import subprocess, sys, time
    from tests import children

    # A child that starts a grandchild, as a service stack would.
    child = children.spawn(
        [sys.executable, "-c",
         "import subprocess, sys, time;"
         "p = subprocess.Popen(['sleep', '300']); print(p.pid, flush=True); time.sleep(300)"],
        stdout=subprocess.PIPE,
    )
    grandchild = int(child.stdout.readline())
    print(child.pid, grandchild, flush=True)
    if sys.argv[1] == "raise":
        raise RuntimeError("the benchmark failed")
    time.sleep(300)
    """
)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def _gone(*pids: int, within_s: float = 10) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not any(_alive(pid) for pid in pids):
            return True
        time.sleep(0.05)
    return False


def _harness(how: str) -> tuple[subprocess.Popen[bytes], int, int]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HARNESS, how],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    child, grandchild = map(int, proc.stdout.readline().split())
    return proc, child, grandchild


@pytest.mark.parametrize("how", ["sigterm", "raise"])
def test_children_and_theirs_end_when_the_harness_ends(how: str) -> None:
    proc, child, grandchild = _harness(how)
    try:
        if how == "sigterm":  # what `timeout` does to a benchmark
            proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        assert _gone(child, grandchild)
    finally:
        for pid in (proc.pid, child, grandchild):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_child_dies_with_a_harness_killed_outright() -> None:
    proc, child, grandchild = _harness("sigkill")
    try:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        assert _gone(child)
    finally:
        for pid in (child, grandchild):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
