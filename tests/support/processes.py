"""One recipe for real processes in tests: free port, poll until healthy, stop in finally.

The process's output goes to a log file that is printed when the process fails to come up and
kept under ``test-artifacts/`` for the test run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
VENV_BIN = str(Path(sys.executable).parent)


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_env(extra: dict | None = None) -> dict:
    """The environment for child processes: the venv's bin first on PATH (uvicorn, mlflow)."""
    env = dict(os.environ)
    env["PATH"] = VENV_BIN + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    extra = {k: str(v) for k, v in (extra or {}).items()}
    # mlflow.set_registry_uri() exports MLFLOW_REGISTRY_URI: a child told to use another
    # tracking store must not keep the parent's registry
    if "MLFLOW_TRACKING_URI" in extra and "MLFLOW_REGISTRY_URI" not in extra:
        env.pop("MLFLOW_REGISTRY_URI", None)
    env.update(extra)
    return env


def wait_healthy(url: str, proc: subprocess.Popen | None, timeout: float, log: Path | None):
    """Poll ``url`` until it answers 2xx; fail with the process log if it dies or times out."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(
                f"process exited with {proc.returncode} before {url} answered:\n{_tail(log)}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if 200 <= resp.status < 300:
                    return
        except (urllib.error.URLError, ConnectionError, OSError) as exc:
            last = exc
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer in {timeout:.0f}s ({last}):\n{_tail(log)}")


def _tail(log: Path | None, lines: int = 60) -> str:
    if log is None or not log.exists():
        return ""
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def stop(proc: subprocess.Popen, timeout: float = 15):
    """SIGTERM the process group, then SIGKILL what is left."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


@contextlib.contextmanager
def running(
    cmd: list[str],
    health_url: str,
    name: str,
    env: dict | None = None,
    cwd: str | Path | None = None,
    timeout: float = 90,
) -> Iterator[subprocess.Popen]:
    """Start ``cmd`` in its own process group, wait for ``health_url``, stop it afterwards."""
    ARTIFACTS.mkdir(exist_ok=True)
    log = ARTIFACTS / f"{name}-{os.getpid()}-{time.time_ns()}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=child_env(env),
            cwd=cwd,
            start_new_session=True,
        )
    try:
        wait_healthy(health_url, proc, timeout, log)
        proc.log_path = log  # type: ignore[attr-defined]
        yield proc
    finally:
        stop(proc)
