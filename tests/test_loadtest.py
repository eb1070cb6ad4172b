"""The Locust gate against a real grading service on loopback: passes within the SLOs, and fails (non-zero
exit) when an SLO cannot be met."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import free_port, serve_grader

pytestmark = pytest.mark.ray
REPO = Path(__file__).resolve().parents[1]


def test_locust_gate(ray_address, tmp_path):
    db = f"sqlite:///{tmp_path / 'g.sqlite'}"
    env = {**os.environ, "LLMLAB_GRADER_DATABASE_URL": db, "LLMLAB_GRADER_FILES_DIR": str(tmp_path / "files"),
           "LLMLAB_GRADER_RAY_ADDRESS": ray_address}
    port = free_port()
    proc = serve_grader(port, env)
    try:
        run = lambda extra_env: subprocess.run(
            [sys.executable, str(REPO / "loadtests" / "run.py"), "--host", f"http://127.0.0.1:{port}", "--users", "3",
             "--duration", "12s", "--out", str(tmp_path / "out"), "--db", db],
            env={**env, **extra_env}, capture_output=True, text=True, timeout=300)
        # the gate's mechanism, not this machine's speed (that is `make loadtest`'s job): a lenient
        # SLO file (30 s, the largest bucket: met however loaded the machine is) must pass and an impossible
        # one must fail
        def slo_file(name: str, threshold: float) -> str:
            spec = yaml.safe_load((REPO / "loadtests" / "slos.yaml").read_text())
            for objective in spec["services"]["grader"]["latency"]:
                objective["threshold_seconds"] = threshold  # both are bucket boundaries
            (tmp_path / name).write_text(yaml.safe_dump(spec))
            return str(tmp_path / name)

        ok = run({"LLMLAB_SLO_FILE": slo_file("lenient.yaml", 30)})
        assert ok.returncode == 0, ok.stdout[-3000:] + ok.stderr[-3000:]
        assert "SLO gate passed" in ok.stderr
        assert (tmp_path / "out" / "grader_stats.csv").exists() and (tmp_path / "out" / "grader.html").exists()
        missed = run({"LLMLAB_SLO_FILE": slo_file("strict.yaml", 0.005)})
        assert missed.returncode != 0 and "SLO gate failed" in missed.stderr and "/v1/gradebook" in missed.stderr
    finally:
        proc.kill()
        proc.wait()
