"""The KL tracker as Prometheus metrics: the gauges an RLHF job serves, fed by a short real PPO run (in one
process), scraped by a real Prometheus; every query of the generated RLHF dashboard returns the run's
latest values."""

from __future__ import annotations

import shutil
import time

from prometheus_client import CollectorRegistry, start_http_server

from llmlab.pipeline import toxicity
from llmlab.platform import dashboards, stack
from llmlab.platform.metrics import RLHF, RLHFMetrics
from llmlab.rlhf import learner, task, train
from tests.conftest import free_port, needs, prometheus_query


def test_rlhf_gauges_and_dashboard_on_a_real_prometheus(tmp_path):
    needs(shutil.which("prometheus") is not None, "prometheus (Debian package prometheus) is not installed")
    cfg = train.RLHFConfig(sft_steps=60, pairs=100, iterations=4, rollout_batch=16, minibatch=8, ppo_epochs=2)
    data, judge = task.load(), toxicity.trained()
    lm, _ = train.sft(cfg, data)
    rm, _ = train.train_reward_model(cfg, lm, train.preference_pairs(cfg, lm, data, judge))
    registry, port, prom_port = CollectorRegistry(), free_port(), free_port()
    tracker = RLHFMetrics(registry, run="test-run", kl_target=cfg.kl_target)
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    proc = stack.start_prometheus(prom_port, {"llmlab-rlhf": port}, tmp_path / "prometheus", interval="1s")
    prom = f"http://127.0.0.1:{prom_port}"
    try:
        _, history = learner.run_local(cfg, lm, rm, data, judge, on_row=tracker.observe)
        last = history[-1]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until a scrape after the last iteration
            got = prometheus_query(prom, RLHF["iteration"])
            if got and float(got[0]["value"][1]) == last["iteration"]:
                break
            time.sleep(0.5)
        for key, name in RLHF.items():
            series = prometheus_query(prom, f'{name}{{run="test-run"}}')
            assert series and abs(float(series[0]["value"][1]) - last[key]) < 1e-9 * max(1, abs(last[key])), key
        for expr in dashboards.queries("rlhf"):
            assert prometheus_query(prom, expr), f"RLHF dashboard: no data for {expr}"
    finally:
        proc.kill()
        proc.wait()
        server.shutdown()
        thread.join(5)
