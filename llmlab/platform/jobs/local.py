"""A local Ray head for the embedded default: started on demand, reused, loopback only."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_DASHBOARD_PORT = 8265
DEFAULT_GCS_PORT = 6379


def default_address() -> str:
    return os.environ.get("LLMLAB_RAY_ADDRESS") or f"http://127.0.0.1:{DEFAULT_DASHBOARD_PORT}"


def is_up(address: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{address.rstrip('/')}/api/version", timeout=timeout) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _ray_env() -> dict[str, str]:
    env = dict(os.environ)
    # Ray binds every interface unless told otherwise; the embedded default is loopback only
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    # A loopback-only head needs no token; with ~/.ray/auth_token present (any earlier `ray.init()` of a
    # local instance writes one) Ray would otherwise turn token authentication on and answer 401
    env["RAY_AUTH_MODE"] = "disabled"
    # torch.distributed's gloo (Ray Train workers, lab m12) rendezvouses on the same loopback interface
    env["GLOO_SOCKET_IFNAME"] = "lo"
    # job drivers run `python ...`: make that the interpreter llmlab runs in, even without an activated venv
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env


def ray_executable() -> str:
    exe = Path(sys.executable).with_name("ray")
    return str(exe) if exe.exists() else (shutil.which("ray") or "ray")


def start_head(dashboard_port: int = DEFAULT_DASHBOARD_PORT, gcs_port: int = DEFAULT_GCS_PORT,
               num_cpus: int | None = None, temp_dir: str | None = None, timeout: float = 120) -> str:
    """Start a Ray head on 127.0.0.1 (unless one answers already) and return its dashboard address."""
    address = f"http://127.0.0.1:{dashboard_port}"
    if is_up(address):
        return address
    cmd = [ray_executable(), "start", "--head", "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
           f"--dashboard-port={dashboard_port}", f"--port={gcs_port}", "--include-dashboard=true",
           "--disable-usage-stats", f"--num-cpus={num_cpus or os.cpu_count() or 2}"]
    if temp_dir:
        cmd.append(f"--temp-dir={temp_dir}")
    log.info("starting a local Ray head: %s", " ".join(cmd))
    proc = subprocess.run(cmd, env=_ray_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"`ray start` failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    deadline = time.monotonic() + timeout
    while not is_up(address):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the Ray dashboard did not answer at {address} within {timeout:g}s")
        time.sleep(0.5)
    return address


def stop_head() -> None:
    subprocess.run([ray_executable(), "stop", "--force"], env=_ray_env(), capture_output=True)


def ensure(address: str | None) -> str:
    """The address to use: an explicit one as given; else the default, starting a local head if needed."""
    if address:
        return address
    address = default_address()
    if is_up(address):
        return address
    if address != f"http://127.0.0.1:{DEFAULT_DASHBOARD_PORT}":
        raise RuntimeError(f"no Ray cluster answers at {address} (LLMLAB_RAY_ADDRESS)")
    return start_head()
