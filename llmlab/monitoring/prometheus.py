"""A real Prometheus on loopback (the Debian package's binary), and its HTTP API: instant and range queries,
firing alerts. For the local platform (``llmlab up``) and for live demonstrations that scrape, record and
alert as a deployment does."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import httpx
import yaml

from llmlab import serving

RULES_DIR = Path(__file__).resolve().parents[2] / "dashboards" / "rules"  # generated rules, in a checkout


def config(targets: dict[str, int], rule_files: list[Path], interval: str = "5s") -> dict:
    """Scrape each job name's port on 127.0.0.1 every ``interval``, evaluating ``rule_files`` as often."""
    return {"global": {"scrape_interval": interval, "evaluation_interval": interval},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [{"job_name": job, "metrics_path": "/metrics",
                                "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
                               for job, port in targets.items()]}


def start(port: int, targets: dict[str, int], data_dir: Path, rule_files: list[Path], interval: str = "5s",
          log_name: str = "prometheus.log", timeout: float = 60, new_session: bool = False) -> subprocess.Popen:
    """Prometheus on 127.0.0.1:``port`` with its config, data and log under ``data_dir``, once ready."""
    binary = shutil.which("prometheus")
    if binary is None:
        raise FileNotFoundError("prometheus is not installed (Debian: apt-get install prometheus)")
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "prometheus.yml"
    path.write_text(yaml.safe_dump(config(targets, rule_files, interval)))
    log = open(data_dir / log_name, "ab")  # noqa: SIM115 - the child keeps it open
    proc = subprocess.Popen([binary, f"--config.file={path}", f"--web.listen-address=127.0.0.1:{port}",
                             f"--storage.tsdb.path={data_dir / 'tsdb'}", "--web.enable-lifecycle"],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=new_session)
    if not serving.wait_ready(f"http://127.0.0.1:{port}/-/ready", proc, timeout):
        proc.kill()
        raise RuntimeError(f"Prometheus did not become ready on port {port}; see {data_dir / log_name}")
    return proc


def query(base: str, expr: str, at: float | None = None) -> list[dict]:
    """An instant query's result vector (raises on a bad query)."""
    r = httpx.get(f"{base}/api/v1/query", params={"query": expr, **({"time": at} if at else {})}, timeout=10)
    body = r.json()
    if r.status_code != 200 or body.get("status") != "success":
        raise ValueError(f"{expr}: {body.get('error', r.text)}")
    return body["data"]["result"]


def query_range(base: str, expr: str, start: float, end: float, step: float) -> list[dict]:
    r = httpx.get(f"{base}/api/v1/query_range", params={"query": expr, "start": start, "end": end, "step": step},
                  timeout=30)
    body = r.json()
    if r.status_code != 200 or body.get("status") != "success":
        raise ValueError(f"{expr}: {body.get('error', r.text)}")
    return body["data"]["result"]


def firing(base: str) -> list[dict]:
    """The alerts in state "firing"."""
    r = httpx.get(f"{base}/api/v1/alerts", timeout=10)
    r.raise_for_status()
    return [a for a in r.json()["data"]["alerts"] if a["state"] == "firing"]
