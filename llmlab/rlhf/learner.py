"""The PPO learner: given sampled replies and their reward-model scores, one PPO step (per-token KL penalty
against the frozen reference, the score at the reply's end, GAE, whitened advantages, several epochs of
clipped policy and value losses on minibatches) and the adaptive KL controller's update. The same object
runs in one process (``run_local``) and as a Ray actor (``llmlab.rlhf.ray_ppo``)."""

from __future__ import annotations

import copy
import time

import numpy as np
import torch

from llmlab.rlhf import models, ppo, task
from llmlab.rlhf.train import RLHFConfig, draw_prompts, judge_and_gold, prompts_tensor, replies_of
from llmlab.transformer import TransformerLM


class Learner:
    def __init__(self, cfg: RLHFConfig, sft_lm: TransformerLM):
        self.cfg = cfg
        self.policy = models.PolicyWithValue(copy.deepcopy(sft_lm))
        self.ref = copy.deepcopy(sft_lm).eval()
        self.opt = torch.optim.Adam(self.policy.parameters(), lr=cfg.lr, eps=1e-5)
        self.kl = ppo.AdaptiveKLController(cfg.kl_init, cfg.kl_target, cfg.kl_horizon)
        self.iteration = 0

    def weights(self) -> dict:
        """The policy's language-model weights, for the rollout workers."""
        return {k: v.detach().clone() for k, v in self.policy.lm.state_dict().items()}

    def step(self, ids: torch.Tensor, mask: torch.Tensor, scores: torch.Tensor) -> dict:
        cfg, P = self.cfg, task.PROMPT_LEN
        with torch.no_grad():
            logits, old_values = self.policy(ids, P)
            old_logp = models.response_logprobs(logits, ids, P)
            ref_logp = models.reply_logprobs(self.ref, ids, P)
            rewards, kl = ppo.token_rewards(scores, old_logp, ref_logp, mask, self.kl.value, cfg.kl_estimator)
            k3 = ppo.kl_estimate(old_logp, ref_logp, "k3") * mask
            adv, returns = ppo.gae(rewards, old_values, mask, cfg.gamma, cfg.lam)
            adv = ppo.whiten(adv, mask)
        stats = {k: [] for k in ("policy_loss", "value_loss", "clip_fraction", "value_clip_fraction", "entropy",
                                 "approx_kl")}
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + self.iteration)
        for _ in range(cfg.ppo_epochs):
            for b in torch.randperm(len(ids), generator=gen).split(cfg.minibatch):
                logits, values = self.policy(ids[b], P)
                logp = models.response_logprobs(logits, ids[b], P)
                pg, clipfrac = ppo.policy_loss(logp, old_logp[b], adv[b], mask[b], cfg.clip)
                vf, vclip = ppo.value_loss(values, old_values[b], returns[b], mask[b], cfg.clip_value)
                loss = pg + cfg.vf_coef * vf
                self.opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.policy.parameters(), 1.0)
                self.opt.step()
                with torch.no_grad():
                    ent = ppo.masked_mean(ppo.entropy_from_logits(logits.float()), mask[b])
                    approx = 0.5 * ppo.masked_mean((logp - old_logp[b]) ** 2, mask[b])
                for k, v in zip(stats, (pg, vf, clipfrac, vclip, ent, approx), strict=True):
                    stats[k].append(v.item())
        mean_kl = float(kl.sum(1).mean())  # nats per reply, the controller's measure
        row = {"iteration": self.iteration, "reward": float(scores.mean()), "kl": mean_kl,
               "kl_k3": float(k3.sum(1).mean()), "kl_coef": self.kl.value,
               "reply_length": float(mask.sum(1).mean())} | {k: float(np.mean(v)) for k, v in stats.items()}
        self.kl.update(mean_kl, len(ids))
        self.iteration += 1
        return row


@torch.no_grad()
def score(rm: models.RewardModel, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return rm(ids, mask)


def run_local(cfg: RLHFConfig, sft_lm: TransformerLM, rm: models.RewardModel, data: task.ChatData, judge,
              evaluate=None, eval_every: int = 10, on_row=None) -> tuple[Learner, list[dict]]:
    """PPO in one process: sample with the current policy, score, step; every ``eval_every`` iterations the
    held-out gold (``evaluate(lm)``) joins the row."""
    from tqdm.auto import tqdm

    learner, rng = Learner(cfg, sft_lm), np.random.default_rng(cfg.seed + 4)
    gen, eos, history, t0 = torch.Generator().manual_seed(cfg.seed + 4), data.vocab.stoi[task.EOS], [], time.time()
    rm.eval()
    for it in tqdm(range(cfg.iterations), desc="PPO", leave=False, mininterval=5):
        topics, templates = draw_prompts(rng, cfg.rollout_batch)
        ids, mask = models.sample(learner.policy.lm, prompts_tensor(data.vocab, topics, templates), cfg.max_reply,
                                  eos, generator=gen)
        row = learner.step(ids, mask, score(rm, ids, mask))
        _, g = judge_and_gold(judge, topics, replies_of(data.vocab, ids))
        row |= {"gold_train": float(g.mean()), "seconds": time.time() - t0}
        if evaluate is not None and ((it + 1) % eval_every == 0 or it == 0):
            row["gold_held_out"] = evaluate(learner.policy.lm)["gold"]
        history.append(row)
        if on_row:
            on_row(row)
    return learner, history
