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


def start(service: str, *args: str, ready: str = "/health", timeout: float = 120,
          env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """(process, base URL) of ``llmlab serve SERVICE ARGS --port P`` once ``GET ready`` answers 200. Its output
    goes to a temporary file (never a pipe, which a chatty server could fill and block on); when it exits or
    does not answer within ``timeout`` seconds, the error carries the output's last lines."""
    port = free_port()
    log = tempfile.TemporaryFile()
    cmd = [str(Path(sys.executable).with_name("llmlab")), "serve", service, *args, "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env={"OMP_NUM_THREADS": "1", **os.environ, **(env or {})})
    proc.log = log
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(base + ready, timeout=2).status_code == 200:
                return proc, base
        except httpx.TransportError:
            pass
        time.sleep(0.25)
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
