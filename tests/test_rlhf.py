"""The toy chatbot task's data, prompts and gold rules. (The learning itself, SFT, the reward model, PPO and
DPO judged on held-out prompts, is lab m13's quick deliverable: tests/test_labs.py runs it as `make run`
does, PPO on Ray actors; tests/test_rlhf_metrics.py runs PPO in one process.)"""

from __future__ import annotations

from llmlab.rlhf import task


def test_task_prompts_vocabulary_and_gold():
    data = task.load()
    assert all(len(task.prompt_words(t, tpl)) == task.PROMPT_LEN for t in task.TOPICS
               for tpl in task.TRAIN_TEMPLATES + task.HELD_OUT_TEMPLATES)
    assert not set(task.TRAIN_TEMPLATES) & set(task.HELD_OUT_TEMPLATES)
    assert all(len(data.by_topic[t]) >= 50 for t in task.TOPICS) and len(data.toxic) > 5000
    assert data.vocab.decode(data.vocab.encode(["the", "dog", "zzzz"]) + [2, 5]) == ["the", "dog", "<unk>"]
    assert task.gold("dog", ["the", "dog", "ran"], 0.1) == 1 and task.gold("dog", ["a", "cat"], 0.95) == -1
    mix = data.sft_examples(4000, seed=0)
    on_topic = sum(topic in reply for topic, _, reply in mix) / len(mix)
    assert 0.2 < on_topic < 0.35  # one reply in four drawn on the topic (and some by chance)


def test_heads_at_the_reply_positions_only_equal_the_full_logits():
    """The policy, reference and reward model apply the vocabulary's head only where they read it (the positions
    that predict the reply; none for the reward model): the same numbers as the full logits (float64 to 1e-12; the
    log-probabilities are float32, as the learner's)."""
    import torch

    from llmlab.rlhf import models
    from llmlab.transformer import TransformerConfig, TransformerLM

    lm = TransformerLM(TransformerConfig(50, context=32, d_model=32, n_layers=2, n_heads=4), seed=0).double()
    ids, P = torch.randint(0, 50, (3, 20), generator=torch.Generator().manual_seed(0)), 12
    full = torch.log_softmax(lm(ids).float(), -1)[:, P - 1:-1].gather(-1, ids[:, P:, None]).squeeze(-1)
    assert torch.allclose(models.reply_logprobs(lm, ids, P), full, atol=1e-6, rtol=0)
    policy = models.PolicyWithValue(lm).double()
    torch.nn.init.normal_(policy.value_head.weight.data)
    logits, values = policy(ids, P)
    _, residuals = lm(ids, return_residuals=True)
    assert torch.allclose(logits, lm(ids)[:, P - 1:-1], atol=1e-12, rtol=0) and values.shape == (3, 20 - P)
    assert torch.allclose(values, policy.value_head(lm.final_norm(residuals[-1]))[:, P - 1:-1, 0], atol=1e-12, rtol=0)
    rm, mask = models.RewardModel(lm).double(), torch.ones(3, 20 - P)
    mask[0, 5:] = 0
    h = lm.final_norm(residuals[-1])
    assert torch.allclose(rm(ids, mask), rm.score_head(h[torch.arange(3), torch.tensor([P + 4, 19, 19])])[:, 0],
                          atol=1e-12, rtol=0)


def test_the_pipeline_draws_nothing_from_the_global_generators():
    """Every random draw of SFT, the preference pairs, the reward model, PPO and DPO comes from the run's seed:
    two processes whose global torch and NumPy generators start from different seeds train the same weights.
    (The reward model's head and its shuffle once drew from torch's global generator, whose state there differed
    between processes: one seed gave different runs.) Separate processes, because within one process a run after
    the first can differ in the last float bits."""
    import os
    import subprocess
    import sys

    script = """
import hashlib, sys
from dataclasses import replace
import numpy as np, torch
torch.manual_seed(int(sys.argv[1])); np.random.seed(int(sys.argv[1])); torch.rand(int(sys.argv[1]))
from llmlab.pipeline import toxicity
from llmlab.rlhf import learner, task, train
from llmlab.rlhf.run import QUICK
cfg = replace(QUICK, sft_steps=40, pairs=64, iterations=2, rollout_batch=16, minibatch=8, ppo_epochs=1,
              eval_prompts=16, rollout_workers=1)
data, judge = task.load(), toxicity.trained()
sft, _ = train.sft(cfg, data)
pairs = train.preference_pairs(cfg, sft, data, judge)
rm, _ = train.train_reward_model(cfg, sft, pairs)
ppo, _ = learner.run_local(cfg, sft, rm, data, judge)
dpo, _ = train.dpo(cfg, sft, pairs)
for m in (sft, rm, ppo.policy, dpo):
    print(hashlib.sha256(b"".join(t.detach().numpy().tobytes() for t in m.state_dict().values())).hexdigest())
"""
    runs = [subprocess.run([sys.executable, "-c", script, str(seed)], capture_output=True, text=True, timeout=600,
                           env={**os.environ, "OMP_NUM_THREADS": "1"}) for seed in (1, 2)]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr[-2000:] + runs[1].stderr[-2000:]
    assert runs[0].stdout.split() == runs[1].stdout.split() and len(runs[0].stdout.split()) == 4
