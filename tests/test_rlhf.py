"""The toy chatbot's RLHF end to end, at test scale: supervised fine-tuning, preference pairs labelled by the
task's rules, the Bradley-Terry reward model, PPO with the adaptive KL controller, and DPO on the same pairs.
Judged by the task's gold rules on held-out prompts, which neither PPO nor DPO sees."""

from __future__ import annotations

import numpy as np
import pytest

from llmlab.pipeline import toxicity
from llmlab.rlhf import learner, task, train

CFG = train.RLHFConfig(sft_steps=500, pairs=1200, iterations=30, kl_init=0.2, kl_target=6.0, kl_horizon=1000,
                       dpo_epochs=1, dpo_beta=0.3, eval_prompts=256)


@pytest.fixture(scope="module")
def run():
    data = task.load()
    judge = toxicity.trained()
    sft_lm, sft_losses = train.sft(CFG, data)
    pairs = train.preference_pairs(CFG, sft_lm, data, judge)
    rm, rm_stats = train.train_reward_model(CFG, sft_lm, pairs)
    ppo_learner, history = learner.run_local(CFG, sft_lm, rm, data, judge)
    dpo_lm, _ = train.dpo(CFG, sft_lm, pairs)
    ev = {name: train.evaluate(CFG, lm, data, judge) for name, lm in
          (("sft", sft_lm), ("ppo", ppo_learner.policy.lm), ("dpo", dpo_lm))}
    return {"data": data, "sft_losses": sft_losses, "pairs": pairs, "rm": rm_stats, "history": history, "eval": ev}


def test_task_prompts_vocabulary_and_gold():
    data = task.load()
    assert all(len(task.prompt_words(t, tpl)) == task.PROMPT_LEN for t in task.TOPICS
               for tpl in task.TRAIN_TEMPLATES + task.HELD_OUT_TEMPLATES)
    assert not set(task.TRAIN_TEMPLATES) & set(task.HELD_OUT_TEMPLATES)
    assert all(len(data.by_topic[t]) >= 50 for t in task.TOPICS) and len(data.toxic) > 5000
    assert data.vocab.decode(data.vocab.encode(["the", "dog", "zzzz"]) + [2, 5]) == ["the", "dog", "<unk>"]
    assert task.gold("dog", ["the", "dog", "ran"], 0.1) == 1 and task.gold("dog", ["a", "cat"], 0.95) == -1


def test_supervised_policy_and_reward_model(run):
    losses = run["sft_losses"]
    assert np.mean(losses[-50:]) < np.mean(losses[:20]) - 3  # from ~7.6 nats (uniform over 2,000 words)
    pairs = run["pairs"]
    assert len(pairs["chosen"]) == CFG.pairs and pairs["chosen"].shape == pairs["rejected"].shape
    assert run["rm"]["held_out_accuracy"] > 0.8  # Bradley-Terry on 80% of the pairs, measured on the rest


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
    ev = run["eval"]
    assert ev["ppo"]["gold"] > ev["sft"]["gold"] + 0.15 and ev["ppo"]["toxic"] < ev["sft"]["toxic"]
    assert ev["dpo"]["gold"] > ev["sft"]["gold"] + 0.15
