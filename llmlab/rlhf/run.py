"""The whole of lab m13's RLHF run, as ``llmlab rlhf`` and the lab's deliverable run it: supervised
fine-tuning, preference pairs, the reward model, PPO (on Ray actors, or in one process), DPO on the same
pairs, and the held-out evaluation of all three policies. Writes ``history.json``, ``summary.json``, the
KL tracker's plots and the PPO policy's weights into the output folder."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import torch

from llmlab.plots import figure
from llmlab.rlhf import learner, ray_ppo, task, train
from llmlab.rlhf.train import RLHFConfig

# quick: the four actors reserve one CPU together (the slot `make run` gives each job, like m12's and m20's Ray
# Train workers); at 0.5 each, two waited for the job beside them to end, a core idle meanwhile
QUICK = RLHFConfig(sft_steps=300, pairs=1200, iterations=30, kl_init=0.2, kl_target=6.0, kl_horizon=1000,
                   dpo_epochs=1, dpo_beta=0.3, eval_prompts=512, actor_cpus=0.25)
FULL = RLHFConfig(d_model=128, n_layers=4, sft_steps=4000, pairs=8000, rm_epochs=3, iterations=400,
                  rollout_batch=256, minibatch=64, kl_init=0.2, kl_target=6.0, kl_horizon=10_000, dpo_epochs=2,
                  dpo_beta=0.3, eval_prompts=1024, rollout_workers=4)
TRACKED = (("reward", "reward-model score"), ("kl", "KL to the reference (nats/reply)"), ("kl_coef", "KL coefficient"),
           ("entropy", "entropy (nats/token)"), ("clip_fraction", "clip fraction"), ("value_loss", "value loss"))


def plot_tracker(history: list[dict], cfg: RLHFConfig, path: Path) -> None:
    """The KL tracker: reward, KL (with the target), KL coefficient, entropy, clip fraction and value loss
    per PPO iteration."""
    with figure(path, "PPO: the KL tracker", ncols=len(TRACKED), size=(3.2 * len(TRACKED), 3.2)) as axes:
        x = [r["iteration"] for r in history]
        for ax, (key, label) in zip(axes, TRACKED, strict=True):
            ax.plot(x, [r[key] for r in history], lw=1.2)
            if key == "kl":
                ax.axhline(cfg.kl_target, color="gray", ls="--", lw=1, label="target")
                ax.plot(x, [r["kl_k3"] for r in history], lw=1, alpha=0.6, label="k3 estimate")
                ax.legend(fontsize=7)
            ax.set_title(label, fontsize=9)
            ax.set_xlabel("iteration")


def run(cfg: RLHFConfig, out: Path, on_ray: bool = True, on_row=None) -> dict:
    """Everything; PPO on the Ray cluster this process is connected to (or a new local one) when ``on_ray``."""
    from llmlab.pipeline import toxicity

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0, seconds = time.time(), {}
    data, judge = task.load(), toxicity.trained()
    sft_lm, sft_losses = train.sft(cfg, data)
    pairs = train.preference_pairs(cfg, sft_lm, data, judge)
    rm, rm_stats = train.train_reward_model(cfg, sft_lm, pairs)
    seconds["sft_pairs_reward_model"] = time.time() - t0
    if on_ray:
        import ray

        if not ray.is_initialized():
            ray.init(log_to_driver=False)
        weights, history = ray_ppo.run(cfg, sft_lm, rm, data, judge, on_row=on_row)
        ppo_lm = train.new_policy(cfg, len(data.vocab))
        ppo_lm.load_state_dict(weights)
    else:
        ppo_learner, history = learner.run_local(cfg, sft_lm, rm, data, judge, on_row=on_row)
        ppo_lm = ppo_learner.policy.lm
    seconds["ppo"] = time.time() - t0 - sum(seconds.values())
    dpo_lm, dpo_losses = train.dpo(cfg, sft_lm, pairs)
    seconds["dpo"] = time.time() - t0 - sum(seconds.values())
    evaluation = {name: train.evaluate(cfg, lm, data, judge) for name, lm in
                  (("sft", sft_lm), ("ppo", ppo_lm), ("dpo", dpo_lm))}
    plot_tracker(history, cfg, out / "kl_tracker.png")
    torch.save(ppo_lm.state_dict(), out / "ppo_policy.pt")
    (out / "history.json").write_text(json.dumps(history, indent=1))
    summary = {"config": asdict(cfg), "on_ray": on_ray, "vocab": len(data.vocab),
               "params": sum(p.numel() for p in ppo_lm.parameters()),
               "sft_loss": {"first": sft_losses[0], "last": sum(sft_losses[-50:]) / min(50, len(sft_losses))},
               "reward_model": {k: v for k, v in rm_stats.items() if k != "losses"},
               "dpo_loss": {"first": dpo_losses[0], "last": dpo_losses[-1]},
               "ppo": {"first": history[0], "last": history[-1]}, "evaluation": evaluation,
               "seconds": seconds | {"total": time.time() - t0}}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary
