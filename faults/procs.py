"""Every process the suite starts: each in its own process group, with its output in a log file, and all of
them stopped however the suite ends (normal exit, an exception, Ctrl-C, SIGTERM, SIGHUP), by pid only."""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parent.parent

_children: list[subprocess.Popen[bytes]] = []
# The signal that stops a child cleanly, where it is not SIGTERM (PostgreSQL: SIGINT, its fast shutdown;
# SIGTERM would wait for every client to disconnect).
_stop_signal: dict[int, int] = {}
_lock = threading.Lock()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn(
    argv: list[str],
    env: dict[str, str],
    log: Path,
    *,
    user: str | None = None,
    cwd: Path = ROOT,
    stop_signal: int = signal.SIGTERM,
) -> subprocess.Popen[bytes]:
    """Start argv in a new session (its own process group), appending its output to `log`."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, user=user,
        )  # fmt: skip
    with _lock:
        _children.append(proc)
        _stop_signal[proc.pid] = stop_signal
    return proc


def kill(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    """Send `sig` to the child's whole process group (gunicorn's workers, too) and, for SIGKILL, reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
    if sig == signal.SIGKILL:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        forget(proc)


def stop(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """Its stop signal to the group, SIGKILL after the grace period; a group whose leader is gone is SIGKILLed."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, _stop_signal.get(proc.pid, signal.SIGTERM))
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    kill(proc)


def forget(proc: subprocess.Popen[bytes]) -> None:
    with _lock:
        if proc in _children:
            _children.remove(proc)
        _stop_signal.pop(proc.pid, None)


def stop_all(grace: float = 5.0) -> None:
    """Stop every child still registered, newest first: its stop signal to each, then SIGKILL what is left."""
    with _lock:
        live = [(proc, _stop_signal.get(proc.pid, signal.SIGTERM)) for proc in reversed(_children)]
    for proc, sig in live:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
    deadline = time.monotonic() + grace
    for proc, _sig in live:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.05, deadline - time.monotonic()))
        kill(proc)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    # Out through the main thread's finally blocks and atexit, which stop the children.
    raise SystemExit(128 + signum)


def install_cleanup() -> None:
    """Stop every child at exit, and turn SIGTERM and SIGHUP into an orderly exit like Ctrl-C's."""
    atexit.register(stop_all)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
