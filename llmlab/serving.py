"""Start one of llmlab's services (``llmlab serve SERVICE ...``) as a separate process on a free loopback port
and wait until it answers, as a user would from a shell; for deliverables, benchmarks and tests that need a
live service (the RAG pipeline, load tests) without the whole local stack of ``llmlab up``."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, timeout: float) -> bool:
    """Poll ``GET url`` until it answers 200 (True), the process exits or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    return False


def start(service: str, *args: str, ready: str = "/health", timeout: float = 120, env: dict | None = None,
          port: int | None = None) -> tuple[subprocess.Popen, str]:
    """(process, base URL) of ``llmlab serve SERVICE ARGS --port P`` (``port``, or a free one) once
    ``GET ready`` answers 200. Its output goes to a temporary file ``proc.log`` (never a pipe, which a chatty
    server could fill and block on); when it exits or does not answer within ``timeout`` seconds, the error
    carries the output's last lines."""
    port = port or free_port()
    log = tempfile.TemporaryFile()
    cmd = [str(Path(sys.executable).with_name("llmlab")), "serve", service, *args, "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env={"OMP_NUM_THREADS": "1", **os.environ, **(env or {})})
    proc.log = log
    base = f"http://127.0.0.1:{port}"
    if wait_ready(base + ready, proc, timeout):
        return proc, base
    why = f"exited with code {proc.returncode}" if proc.poll() is not None else f"did not answer {base}{ready}"
    stop(proc)
    log.seek(0)
    raise RuntimeError(f"`llmlab {' '.join(cmd[1:])}` {why}:\n"
                       f"{log.read().decode(errors='replace')[-3000:]}")


def stop(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def serve(service: str, *args: str, **kwargs):
    """``start`` as a context manager: yields the base URL and stops the process on leaving."""
    proc, base = start(service, *args, **kwargs)
    try:
        yield base
    finally:
        stop(proc)
