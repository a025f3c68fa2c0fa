"""Processes a harness (a benchmark, the e2e stack) starts never outlive it.

A benchmark killed by a timeout once left a transmitter spinning for ten minutes. So
every child started through here:

- runs in a process group of its own (``start_new_session``), so ending it ends what
  it started too;
- is ended, group and all (SIGTERM, then SIGKILL after ``grace_s``), when the harness
  exits in any ordinary way: a return, an exception, ``sys.exit`` (``atexit``), and
  SIGTERM or SIGHUP (turned into ``SystemExit`` here unless the harness handles them
  itself, so ``finally`` blocks run too: ``timeout`` sends SIGTERM);
- gets SIGKILL from the kernel if the harness dies without a chance to clean up
  (SIGKILL, a crash): ``PR_SET_PDEATHSIG``, set only for children started from the main
  thread, since the kernel sends it when the starting *thread* ends.

Use :func:`popen_options` in ``subprocess.Popen`` or ``asyncio.create_subprocess_exec``
and :func:`track` the pid, or :func:`spawn`, which does both; :func:`end` one early.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

_PR_SET_PDEATHSIG = 1
_live: set[int] = set()  # pids, each its own process group's leader


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def popen_options(preexec: Callable[[], None] | None = None) -> dict[str, Any]:
    """Keyword arguments for Popen / create_subprocess_exec (then :func:`track` the pid)."""
    main = threading.current_thread() is threading.main_thread()

    def before_exec() -> None:
        if main:
            _die_with_parent()
        if preexec is not None:
            preexec()

    return {"start_new_session": True, "preexec_fn": before_exec}


def track(pid: int) -> None:
    _live.add(pid)


def spawn(
    args: Sequence[str], *, preexec: Callable[[], None] | None = None, **popen: Any
) -> subprocess.Popen[bytes]:
    proc: subprocess.Popen[bytes] = subprocess.Popen(args, **popen_options(preexec), **popen)
    track(proc.pid)
    return proc


def _signal_group(pid: int, signum: int) -> bool:
    try:
        os.killpg(pid, signum)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _running(pid: int) -> bool:
    """Whether the child still runs (a zombie waiting for its owner to reap it does not).

    Not ``waitpid``: the child's ``Popen`` or asyncio's watcher reaps it and wants its
    status."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def end(pids: int | Sequence[int], grace_s: float = 20.0) -> None:
    """SIGTERM each child's group; SIGKILL the group once the child is gone or
    ``grace_s`` passed (whatever it started and left behind goes with it)."""
    group = [pids] if isinstance(pids, int) else list(pids)
    for pid in group:
        _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    waiting = list(group)
    while waiting and time.monotonic() < deadline:
        waiting = [pid for pid in waiting if _running(pid)]
        if waiting:
            time.sleep(0.05)
    for pid in group:
        _signal_group(pid, signal.SIGKILL)
        _live.discard(pid)


def end_all(grace_s: float = 20.0) -> None:
    if _live:
        end(sorted(_live), grace_s)


def _exit_on(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def _install() -> None:
    atexit.register(end_all)
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) is signal.SIG_DFL:
            signal.signal(signum, _exit_on)


_install()
