"""The embedded platform on one machine: ``llmlab up | down | status``.

``up`` starts (or reuses) the local Ray head, the grading service, the inference service when a model
folder is given, and Prometheus when its binary is installed (scraping the services, with the generated
SLO rules), all on 127.0.0.1; it records what it started in a state file so that ``down`` stops exactly
that and nothing else.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from llmlab import serving
from llmlab.monitoring import prometheus
from llmlab.platform.jobs import local


def state_dir() -> Path:
    from platformdirs import user_data_dir

    return Path(os.environ.get("LLMLAB_STACK_DIR") or Path(user_data_dir("llmlab")) / "stack")


def _state_file() -> Path:
    return state_dir() / "state.json"


def _load() -> dict:
    try:
        return json.loads(_state_file().read_text())
    except FileNotFoundError:
        return {}


def _save(state: dict) -> None:
    _state_file().parent.mkdir(parents=True, exist_ok=True)
    _state_file().write_text(json.dumps(state, indent=2))


def _healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status == 200
    except OSError:
        return False


def _wait(url: str, proc: subprocess.Popen, what: str, timeout: float = 60) -> None:
    if not serving.wait_ready(url, proc, timeout):
        proc.kill()
        raise RuntimeError(f"{what} did not become healthy at {url}; see its log in {state_dir()}")


def _spawn(cmd: list[str], log_path: Path, env: dict | None = None) -> subprocess.Popen:
    log = open(log_path, "ab")  # noqa: SIM115 - the child keeps it open
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, env=env)


def start_prometheus(port: int, targets: dict[str, int], data_dir: Path, log_name: str = "prometheus.log",
                     interval: str = "5s") -> subprocess.Popen:
    """Prometheus on 127.0.0.1:``port`` scraping ``targets`` (job name -> port), with the SLO rules."""
    rules = sorted(prometheus.RULES_DIR.glob("*.rules.yaml"))
    return prometheus.start(port, targets, data_dir, rules, interval, log_name, new_session=True)


@dataclass
class Part:
    name: str
    url: str
    healthy: bool
    started_by_up: bool


def up(grader_port: int = 8000, prometheus_port: int = 9090, model: Path | None = None,
       inference_port: int = 8001, retrieval: bool = False, retrieval_port: int = 8002) -> list[Part]:
    state = _load()
    state_dir().mkdir(parents=True, exist_ok=True)
    ray_was_up = local.is_up(local.default_address())
    address = local.ensure(None)
    state.setdefault("ray", {"address": address, "started": not ray_was_up})
    grader_url = f"http://127.0.0.1:{grader_port}"
    if not _healthy(f"{grader_url}/health"):
        proc = _spawn([str(Path(sys.executable).with_name("llmlab")), "serve", "grader", "--port", str(grader_port)],
                      state_dir() / "grader.log")
        _wait(f"{grader_url}/health", proc, "the grading service")
        state["grader"] = {"pid": proc.pid, "url": grader_url}
    inference_url = f"http://127.0.0.1:{inference_port}"
    if model is not None and not _healthy(f"{inference_url}/health"):
        proc = _spawn([str(Path(sys.executable).with_name("llmlab")), "serve", "inference", "--model", str(model),
                       "--port", str(inference_port)], state_dir() / "inference.log")
        _wait(f"{inference_url}/health", proc, "the inference service", timeout=180)
        state["inference"] = {"pid": proc.pid, "url": inference_url}
    retrieval_url = f"http://127.0.0.1:{retrieval_port}"
    if retrieval and not _healthy(f"{retrieval_url}/ready"):
        proc = _spawn([str(Path(sys.executable).with_name("llmlab")), "serve", "retrieval", "--data",
                       str(state_dir() / "retrieval"), "--port", str(retrieval_port)], state_dir() / "retrieval.log")
        _wait(f"{retrieval_url}/ready", proc, "the retrieval service", timeout=180)
        state["retrieval"] = {"pid": proc.pid, "url": retrieval_url}
    prom_url = f"http://127.0.0.1:{prometheus_port}"
    if shutil.which("prometheus") and not _healthy(f"{prom_url}/-/ready"):
        targets = ({"llmlab-grader": grader_port} | ({"llmlab-inference": inference_port} if model is not None else {})
                   | ({"llmlab-retrieval": retrieval_port} if retrieval else {}))
        proc = start_prometheus(prometheus_port, targets, state_dir() / "prometheus")
        state["prometheus"] = {"pid": proc.pid, "url": prom_url}
    _save(state)
    return status()


def status() -> list[Part]:
    state = _load()
    address = state.get("ray", {}).get("address", local.default_address())
    parts = [Part("ray", address, local.is_up(address), state.get("ray", {}).get("started", False))]
    grader = state.get("grader", {}).get("url", "http://127.0.0.1:8000")
    parts.append(Part("grader", grader, _healthy(f"{grader}/health"), "grader" in state))
    for name in ("inference", "retrieval"):
        if name in state:
            url = state[name]["url"]
            parts.append(Part(name, url, _healthy(f"{url}/health"), True))
    prom = state.get("prometheus", {}).get("url", "http://127.0.0.1:9090")
    parts.append(Part("prometheus", prom, _healthy(f"{prom}/-/ready"), "prometheus" in state))
    return parts


def _ours(pid: int, needle: str) -> bool:
    try:
        return needle in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def down() -> list[str]:
    """Stop what ``up`` started (and only that)."""
    state, stopped = _load(), []
    for name, needle in (("prometheus", "prometheus"), ("inference", "serve"), ("retrieval", "serve"),
                         ("grader", "serve")):
        pid = state.get(name, {}).get("pid")
        if pid and _ours(pid, needle):  # a recycled pid is not ours to kill
            os.killpg(pid, signal.SIGTERM)
            for _ in range(50):
                if not _ours(pid, needle):
                    break
                time.sleep(0.1)
            else:
                os.killpg(pid, signal.SIGKILL)
            stopped.append(name)
    if state.get("ray", {}).get("started"):
        local.stop_head()
        stopped.append("ray")
    _state_file().unlink(missing_ok=True)
    return stopped
