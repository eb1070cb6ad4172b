"""SLOs -> Prometheus rules: checked in as generated, valid for promtool, and each burn-rate alert fires on
a burning series and stays silent on a healthy one (promtool test rules)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llmlab.platform import metrics, slo
from tests.conftest import needs

RULES = Path(__file__).resolve().parents[1] / "dashboards" / "rules"


def test_checked_in_rules_match_the_generator(tmp_path):
    written = slo.write_rules(tmp_path)
    assert written
    for path in written:
        checked_in = RULES / path.name
        assert checked_in.exists(), f"{checked_in} is missing: run `llmlab slo rules`"
        assert yaml.safe_load(checked_in.read_text()) == yaml.safe_load(path.read_text()), (
            f"{checked_in.name} differs from loadtests/slos.yaml: run `llmlab slo rules`")


def test_thresholds_are_bucket_boundaries_and_gate_follows(tmp_path):
    objectives = slo.load()
    assert {o.service for o in objectives} == {"grader", "inference", "retrieval"}
    for o in objectives:
        if o.threshold_seconds is not None:
            assert o.threshold_seconds in metrics.BUCKETS[o.metric]
    gate = slo.locust_gate("grader", objectives)
    assert gate["p95_seconds"]["POST /v1/submissions"] == 0.5 and gate["max_failure_ratio"] == pytest.approx(0.01)
    assert slo.locust_gate("inference", objectives)["p95_seconds"] == {"TTFT /v1/chat/completions": 1}
    assert slo.locust_gate("retrieval", objectives)["p95_seconds"] == {"POST /v1/search": 0.1,
                                                                       "POST /v1/embeddings": 0.25}
    # the TTFT objective reads vLLM's histogram, whose exposition writes le="1.0" (Prometheus 3 writes "1")
    ttft = next(o for o in objectives if o.name == "ttft")
    assert 'vllm:time_to_first_token_seconds_bucket{job="llmlab-inference",le=~"1|1.0"}' in slo.error_ratio(ttft, "5m")
    spec = yaml.safe_load(slo.SLO_FILE.read_text())
    spec["services"]["inference"]["latency"][0]["threshold_seconds"] = 0.75
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(ValueError, match="not a bucket boundary"):
        slo.load(tmp_path / "bad.yaml")


def _promtool(*args: str) -> subprocess.CompletedProcess:
    needs(shutil.which("promtool") is not None, "promtool (Debian package prometheus) is not installed")
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120)


def test_promtool_checks_every_rule_file():
    for path in sorted(RULES.glob("*.rules.yaml")):
        r = _promtool("check", "rules", str(path))
        assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("service", ["grader", "inference", "retrieval"])
def test_burn_rate_alerts_fire_on_bad_series_only(tmp_path, service):
    rules = RULES / f"{service}-slo.rules.yaml"
    objectives = [o for o in slo.load() if o.service == service]
    tests = tmp_path / "slo_test.yaml"
    tests.write_text(yaml.safe_dump(slo.promtool_tests(objectives, str(rules)), sort_keys=False))
    r = _promtool("test", "rules", str(tests))
    assert r.returncode == 0, r.stdout + r.stderr
    # the same tests fail against rules whose page threshold is off: they have teeth
    broken = tmp_path / "broken.rules.yaml"
    broken.write_text(rules.read_text().replace("> 0.144 ", "> 1.44 "))
    assert broken.read_text() != rules.read_text()
    tests.write_text(yaml.safe_dump(slo.promtool_tests(objectives, str(broken)), sort_keys=False))
    assert _promtool("test", "rules", str(tests)).returncode != 0


def test_locust_run_lasts_its_run_time_after_a_slow_start(tmp_path):
    """A real Locust run whose start-up holds the CPU for longer than its ``--run-time`` (what a loaded CI machine
    did to an 8 s load test) still runs for its run time and makes requests: ``gate_locust_run`` refreshes the
    event loop's clock before Locust arms the timer. Without it this run ends at once, after one request."""
    locustfile = tmp_path / "slow_locustfile.py"
    locustfile.write_text(
        "import time\n"
        "from locust import User, constant, events, task\n"
        "from llmlab.platform import slo\n"
        "slo.gate_locust_run(events, 'inference')\n"
        "t = time.monotonic()\n"
        "while time.monotonic() - t < 3: pass  # a slow start-up: 3 s of CPU before the run\n"
        "class Timed(User):\n"
        "    wait_time = constant(0.2)\n"
        "    @task\n"
        "    def ttft(self):\n"
        "        events.request.fire(request_type='TTFT', name='/v1/chat/completions', response_time=1,\n"
        "                            response_length=0, exception=None, context={})\n")
    locust = Path(sys.executable).with_name("locust")
    run = subprocess.run([str(locust), "-f", str(locustfile), "--headless", "-u", "1", "-r", "1", "-t", "2s",
                          "--only-summary"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    made = re.search(r"SLO TTFT /v1/chat/completions: p95 .* over (\d+) requests", run.stderr)
    assert made and int(made[1]) >= 6, run.stderr[-3000:]  # one every 0.2 s for 2 s; a run ended at once makes 1
