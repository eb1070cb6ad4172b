"""PPO on Ray: rollout workers, the reward model and the learner as Ray actors, on a local head or any Ray
cluster (KubeRay included). Each iteration the learner's current weights go to every rollout worker
(through Ray's object store, once), each worker samples its share of the batch, the reward actor scores
each share, and the learner takes the PPO step on all of it (``llmlab.rlhf.learner.Learner.step``).

With one rollout worker the prompts and samples are drawn exactly as ``learner.run_local`` draws them."""

from __future__ import annotations

import time

import numpy as np
import torch

from llmlab.rlhf import models, task
from llmlab.rlhf.learner import Learner, score
from llmlab.rlhf.train import RLHFConfig, draw_prompts, judge_and_gold, prompts_tensor, replies_of
from llmlab.transformer import TransformerLM


class RolloutWorker:
    """Samples replies with the weights it is sent; worker ``rank`` draws its own prompts and samples."""

    def __init__(self, cfg: RLHFConfig, lm: TransformerLM, vocab: task.WordVocab, rank: int):
        torch.set_num_threads(1)
        self.cfg, self.lm, self.vocab = cfg, lm.eval(), vocab
        self.rng = np.random.default_rng(cfg.seed + 4 + 1000 * rank)
        self.gen = torch.Generator().manual_seed(cfg.seed + 4 + 1000 * rank)

    def sample(self, weights: dict, n: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        self.lm.load_state_dict(weights)
        topics, templates = draw_prompts(self.rng, n)
        ids, mask = models.sample(self.lm, prompts_tensor(self.vocab, topics, templates), self.cfg.max_reply,
                                  self.vocab.stoi[task.EOS], generator=self.gen)
        return ids, mask, topics


class RewardActor:
    def __init__(self, rm: models.RewardModel):
        torch.set_num_threads(1)
        self.rm = rm.eval()

    def score(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return score(self.rm, ids, mask)


class LearnerActor(Learner):
    def __init__(self, cfg: RLHFConfig, sft_lm: TransformerLM):
        torch.set_num_threads(1)  # as every actor: a reused Ray worker process keeps no other thread count
        super().__init__(cfg, sft_lm)

    def step_on(self, *shares) -> dict:
        """``shares``: ids, mask and scores of each rollout worker, in that order (Ray resolves them)."""
        k = len(shares) // 3
        ids, mask, scores = (torch.cat(shares[i * k:(i + 1) * k]) for i in range(3))
        return self.step(ids, mask, scores)


def run(cfg: RLHFConfig, sft_lm: TransformerLM, rm: models.RewardModel, data: task.ChatData, judge,
        on_row=None) -> tuple[dict, list[dict]]:
    """PPO with ``cfg.rollout_workers`` rollout actors, a reward actor and a learner actor on the Ray cluster
    this process is connected to (``ray.init`` first). Returns the final policy weights and the history
    (each row with the gold score of that iteration's replies, computed here with ``judge``)."""
    import ray

    opts = {"num_cpus": cfg.actor_cpus}
    learner = ray.remote(**opts)(LearnerActor).remote(cfg, sft_lm)
    reward = ray.remote(**opts)(RewardActor).remote(rm)
    workers = [ray.remote(**opts)(RolloutWorker).remote(cfg, sft_lm, data.vocab, rank)
               for rank in range(cfg.rollout_workers)]
    share, history, t0 = cfg.rollout_batch // cfg.rollout_workers, [], time.time()
    for _ in range(cfg.iterations):
        weights = learner.weights.remote()
        samples = [w.sample.options(num_returns=3).remote(weights, share) for w in workers]
        scores = [reward.score.remote(ids, mask) for ids, mask, _ in samples]
        row = ray.get(learner.step_on.remote(*(s[0] for s in samples), *(s[1] for s in samples), *scores))
        ids, topics = ray.get([s[0] for s in samples]), sum(ray.get([s[2] for s in samples]), [])
        _, g = judge_and_gold(judge, topics, replies_of(data.vocab, torch.cat(ids)))
        row |= {"gold_train": float(g.mean()), "seconds": time.time() - t0}
        history.append(row)
        if on_row:
            on_row(row)
    return ray.get(learner.weights.remote()), history
