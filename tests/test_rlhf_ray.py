"""`llmlab rlhf` as a Ray job on the session's Ray head: PPO's rollout workers, reward model and learner run
as Ray actors, the summary comes back as the job's record, and the history, KL tracker plot and policy
land in the output folder; the job serves the KL tracker's gauges while it runs (their content and the
dashboard's queries: tests/test_rlhf_metrics.py). Tiny settings: the mechanics, not the learning
(tests/test_rlhf.py checks the learning in one process; with one rollout worker both draw the same samples)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import free_port

pytestmark = pytest.mark.ray

LLMLAB = str(Path(sys.executable).with_name("llmlab"))


def test_rlhf_verb_runs_ppo_on_ray_actors(ray_address, tmp_path):
    (tmp_path / "tiny.toml").write_text("[rlhf]\nsft_steps = 60\npairs = 100\niterations = 3\nrollout_batch = 16\n"
                                        "minibatch = 8\nppo_epochs = 2\neval_prompts = 32\nrollout_workers = 2\n"
                                        "actor_cpus = 0.25\n")
    out = tmp_path / "run"
    r = subprocess.run([LLMLAB, "rlhf", str(tmp_path / "tiny.toml"), "--out", str(out), "--address", ray_address,
                        "--metrics-port", str(free_port())], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "submitted llmlab-rlhf-" in r.stderr and "PPO" in r.stdout and "held-out pairwise accuracy" in r.stdout
    summary = json.loads((out / "summary.json").read_text())
    history = json.loads((out / "history.json").read_text())
    assert summary["on_ray"] and summary["config"]["rollout_workers"] == 2
    assert [h["iteration"] for h in history] == [0, 1, 2] and history[0]["kl"] == 0 and history[-1]["kl"] > 0
    assert set(summary["evaluation"]) == {"sft", "ppo", "dpo"}
    assert (out / "kl_tracker.png").stat().st_size > 10_000
    weights = torch.load(out / "ppo_policy.pt", weights_only=True)
    assert sum(v.numel() for v in weights.values()) == summary["params"]


@pytest.mark.parametrize("content, message", [("iteratons = 3", "unknown RLHF setting(s): iteratons"),
                                              ("[rlhf]\nrollout_batch = 10\nrollout_workers = 3",
                                               "multiple of rollout_workers")])
def test_rlhf_verb_rejects_bad_configs_before_submitting(tmp_path, content, message):
    (tmp_path / "bad.toml").write_text(content)
    r = subprocess.run([LLMLAB, "rlhf", str(tmp_path / "bad.toml"), "--address", "http://127.0.0.1:9"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and message in r.stderr, r.stderr[-2000:]
