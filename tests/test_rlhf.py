"""The toy chatbot's RLHF end to end, at test scale: supervised fine-tuning, preference pairs labelled by the
task's rules, the Bradley-Terry reward model, PPO with the adaptive KL controller, and DPO on the same pairs.
Judged by the task's gold rules on held-out prompts, which neither PPO nor DPO sees."""

from __future__ import annotations

import json

import numpy as np
import pytest

from llmlab.rlhf import run as rlhf_run
from llmlab.rlhf import task

CFG = rlhf_run.QUICK


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The quick preset's run in one process (tests/test_rlhf_ray.py runs it on Ray actors)."""
    out = tmp_path_factory.mktemp("rlhf")
    summary = rlhf_run.run(CFG, out, on_ray=False)
    return {"summary": summary, "history": json.loads((out / "history.json").read_text()), "out": out}


def test_task_prompts_vocabulary_and_gold():
    data = task.load()
    assert all(len(task.prompt_words(t, tpl)) == task.PROMPT_LEN for t in task.TOPICS
               for tpl in task.TRAIN_TEMPLATES + task.HELD_OUT_TEMPLATES)
    assert not set(task.TRAIN_TEMPLATES) & set(task.HELD_OUT_TEMPLATES)
    assert all(len(data.by_topic[t]) >= 50 for t in task.TOPICS) and len(data.toxic) > 5000
    assert data.vocab.decode(data.vocab.encode(["the", "dog", "zzzz"]) + [2, 5]) == ["the", "dog", "<unk>"]
    assert task.gold("dog", ["the", "dog", "ran"], 0.1) == 1 and task.gold("dog", ["a", "cat"], 0.95) == -1


def test_supervised_policy_and_reward_model(run):
    s = run["summary"]
    assert s["sft_loss"]["last"] < s["sft_loss"]["first"] - 3  # from ~7.6 nats (uniform over 2,000 words)
    assert s["reward_model"]["pairs"] == CFG.pairs
    assert s["reward_model"]["held_out_accuracy"] > 0.8  # Bradley-Terry on 80% of the pairs, measured on the rest
    assert (run["out"] / "kl_tracker.png").stat().st_size > 10_000


def test_ppo_raises_reward_and_tracks_the_kl_target(run):
    h = run["history"]
    first, last = (np.mean([r["reward"] for r in rows]) for rows in (h[:5], h[-5:]))
    assert last > first + 1.0  # the reward model's score of the policy's replies
    kl = [r["kl"] for r in h[-10:]]
    assert 0 < min(kl) and max(kl) < 3 * CFG.kl_target
    # the controller raises the coefficient while the KL is above the target, lowers it while below
    for a, b in zip(h, h[1:], strict=False):
        assert (b["kl_coef"] > a["kl_coef"]) == (a["kl"] > CFG.kl_target) or a["kl"] == CFG.kl_target
    assert all(0 <= r["clip_fraction"] <= 1 and r["entropy"] > 0 for r in h)


def test_ppo_and_dpo_beat_the_supervised_policy_on_held_out_prompts(run):
    ev = run["summary"]["evaluation"]
    assert ev["ppo"]["gold"] > ev["sft"]["gold"] + 0.15 and ev["ppo"]["toxic"] < ev["sft"]["toxic"]
    assert ev["dpo"]["gold"] > ev["sft"]["gold"] + 0.15
