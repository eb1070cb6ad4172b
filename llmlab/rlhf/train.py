"""RLHF on the toy chatbot task (``llmlab.rlhf.task``), in one process: supervised fine-tuning, preference
pairs labelled by the task's rules, the Bradley-Terry reward model, PPO with the adaptive KL controller, and
DPO on the same pairs. ``llmlab.rlhf.ray_ppo`` runs the PPO part as Ray actors over the same functions."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from llmlab import settings
from llmlab.rlhf import models, ppo, preference, task
from llmlab.transformer import TransformerConfig, TransformerLM


@dataclass(frozen=True)
class RLHFConfig:
    seed: int = 0
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    max_reply: int = 16
    # supervised fine-tuning
    sft_examples: int = 20_000
    sft_steps: int = 600
    sft_batch: int = 64
    sft_lr: float = 3e-3
    # preference pairs (two sampled replies per prompt, ties dropped) and the reward model
    pairs: int = 3000
    rm_epochs: int = 2
    rm_lr: float = 1e-3
    # PPO
    iterations: int = 60
    rollout_batch: int = 64
    ppo_epochs: int = 4
    minibatch: int = 16
    lr: float = 5e-4
    gamma: float = 1.0
    lam: float = 0.95
    clip: float = 0.2
    clip_value: float = 0.2
    vf_coef: float = 0.1
    kl_init: float = 0.1
    kl_target: float = 2.0  # nats per reply
    kl_horizon: float = 10_000
    kl_estimator: str = "k1"
    rollout_workers: int = 2  # Ray actors sampling replies (llmlab.rlhf.ray_ppo)
    actor_cpus: float = 0.5  # CPUs each Ray actor reserves
    # DPO
    dpo_beta: float = 0.1
    dpo_epochs: int = 2
    dpo_lr: float = 5e-4
    eval_prompts: int = 256

    def __post_init__(self):
        if self.rollout_batch % self.rollout_workers:
            raise ValueError("rollout_batch must be a multiple of rollout_workers")
        if self.kl_estimator not in ppo.KL_ESTIMATORS:
            raise ValueError(f"kl_estimator must be one of {ppo.KL_ESTIMATORS}")
        for name in ("sft_steps", "pairs", "iterations", "rollout_batch", "minibatch", "ppo_epochs", "max_reply"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")

    @classmethod
    def from_dict(cls, d: dict) -> RLHFConfig:
        settings.reject_unknown(cls, d, "RLHF")
        return cls(**d)

    @classmethod
    def from_file(cls, path) -> RLHFConfig:
        """A TOML, YAML or JSON file of settings (an ``[rlhf]`` table or the top level)."""
        return cls.from_dict(settings.read_file(path, "rlhf"))


# --- data to tensors ------------------------------------------------------------------------------------------
def prompts_tensor(vocab: task.WordVocab, topics: list[str], templates: list[str]) -> torch.Tensor:
    return torch.tensor([vocab.encode(task.prompt_words(t, tpl)) for t, tpl in zip(topics, templates, strict=True)])


def draw_prompts(rng: np.random.Generator, n: int, templates=task.TRAIN_TEMPLATES) -> tuple[list[str], list[str]]:
    return ([task.TOPICS[i] for i in rng.integers(len(task.TOPICS), size=n)],
            [templates[i] for i in rng.integers(len(templates), size=n)])


def sequences(vocab: task.WordVocab, prompts: list[list[str]], replies: list[list[str]], max_reply: int):
    """(ids (B, P + max_reply), reply mask (B, max_reply)): prompt, reply, end-of-reply, padding."""
    width = task.PROMPT_LEN + max_reply
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros(len(prompts), max_reply)
    for i, (p, r) in enumerate(zip(prompts, replies, strict=True)):
        reply = vocab.encode(r[:max_reply - 1]) + [vocab.stoi[task.EOS]]
        ids[i, :task.PROMPT_LEN] = torch.tensor(vocab.encode(p))
        ids[i, task.PROMPT_LEN:task.PROMPT_LEN + len(reply)] = torch.tensor(reply)
        mask[i, :len(reply)] = 1
    return ids, mask


# --- the stages -------------------------------------------------------------------------------------------------
def new_policy(cfg: RLHFConfig, vocab_size: int) -> TransformerLM:
    return TransformerLM(TransformerConfig(vocab_size, context=task.PROMPT_LEN + cfg.max_reply, d_model=cfg.d_model,
                                           n_layers=cfg.n_layers, n_heads=cfg.n_heads), seed=cfg.seed)


def sft(cfg: RLHFConfig, data: task.ChatData) -> tuple[TransformerLM, list[float]]:
    """Supervised fine-tuning on the task's mix, the loss on reply tokens only."""
    examples = data.sft_examples(cfg.sft_examples, cfg.seed)
    ids, mask = sequences(data.vocab, [e[1] for e in examples], [e[2] for e in examples], cfg.max_reply)
    lm = new_policy(cfg, len(data.vocab))
    opt = torch.optim.AdamW(lm.parameters(), lr=cfg.sft_lr, weight_decay=0.0)
    gen, losses = torch.Generator().manual_seed(cfg.seed), []
    for step in tqdm(range(cfg.sft_steps), desc="SFT", leave=False, mininterval=5):
        for g in opt.param_groups:
            g["lr"] = cfg.sft_lr * min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * step / cfg.sft_steps))
        b = torch.randint(len(ids), (cfg.sft_batch,), generator=gen)
        logp = models.reply_logprobs(lm, ids[b], task.PROMPT_LEN)
        loss = -(logp * mask[b]).sum() / mask[b].sum()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(lm.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    return lm, losses


def replies_of(vocab: task.WordVocab, ids: torch.Tensor) -> list[list[str]]:
    return [vocab.decode(row[task.PROMPT_LEN:]) for row in ids]


def judge_and_gold(judge, topics: list[str], replies: list[list[str]]) -> tuple[np.ndarray, np.ndarray]:
    """(toxicity scores, gold scores) of replies."""
    tox = judge.score([" ".join(r) for r in replies])
    return tox, np.array([task.gold(t, r, p) for t, r, p in zip(topics, replies, tox, strict=True)])


def _order(judge, topics: list[str], a: tuple, b: tuple, replies_a: list, replies_b: list) -> tuple[list, list]:
    """(chosen, rejected) lists of (ids, mask) from two candidate replies per prompt (``a`` and ``b``:
    (ids, masks)), the one with the higher gold chosen; ties dropped."""
    _, ga = judge_and_gold(judge, topics, replies_a)
    _, gb = judge_and_gold(judge, topics, replies_b)
    chosen, rejected = [], []
    for i in np.flatnonzero(ga != gb):
        win, lose = ((a[0][i], a[1][i]), (b[0][i], b[1][i]))
        chosen.append(win if ga[i] > gb[i] else lose)
        rejected.append(lose if ga[i] > gb[i] else win)
    return chosen, rejected


def written_pairs(data: task.ChatData, n: int, seed: int, judge, max_reply: int) -> tuple[list, list]:
    """Comparisons of written replies to the same prompt, as a labelled dataset offers them: two of a
    sentence on the asked topic, one on another topic, any sentence and an offensive tweet, the better by
    gold chosen (ties dropped). Returns (chosen, rejected) lists of (ids, mask)."""
    rng = np.random.default_rng(seed)
    prompts, a, b, topics = [], [], [], []
    for _ in range(2 * n):
        topic = task.TOPICS[rng.integers(len(task.TOPICS))]
        other = task.TOPICS[rng.integers(len(task.TOPICS))]
        pools = (data.by_topic[topic], data.by_topic[other], None, "toxic")
        picks = []
        for k in rng.choice(4, size=2, replace=False):
            pool = pools[k]
            if pool == "toxic":
                picks.append(data.toxic[rng.integers(len(data.toxic))])
            else:
                picks.append(data.sentences[pool[rng.integers(len(pool))] if pool is not None
                                            else rng.integers(len(data.sentences))])
        template = task.TRAIN_TEMPLATES[len(prompts) % len(task.TRAIN_TEMPLATES)]
        prompts.append(task.prompt_words(topic, template))
        topics.append(topic)
        a.append(picks[0])
        b.append(picks[1])
    chosen, rejected = _order(judge, topics, sequences(data.vocab, prompts, a, max_reply),
                              sequences(data.vocab, prompts, b, max_reply), a, b)
    return chosen[:n], rejected[:n]


def preference_pairs(cfg: RLHFConfig, policy: TransformerLM, data: task.ChatData, judge) -> dict:
    """Half the pairs are two sampled replies of the supervised policy to a training prompt, half written
    replies (``written_pairs``); the better by gold is chosen, ties dropped."""
    rng, gen = np.random.default_rng(cfg.seed + 1), torch.Generator().manual_seed(cfg.seed + 1)
    eos = data.vocab.stoi[task.EOS]
    chosen, rejected = written_pairs(data, cfg.pairs // 2, cfg.seed + 5, judge, cfg.max_reply)
    while len(chosen) < cfg.pairs:
        topics, templates = draw_prompts(rng, 256)
        p = prompts_tensor(data.vocab, topics, templates)
        a = models.sample(policy, p, cfg.max_reply, eos, generator=gen)
        b = models.sample(policy, p, cfg.max_reply, eos, generator=gen)
        c, r = _order(judge, topics, a, b, replies_of(data.vocab, a[0]), replies_of(data.vocab, b[0]))
        chosen += c
        rejected += r
    n = cfg.pairs
    stack = lambda xs, k: torch.stack([x[k] for x in xs[:n]])  # noqa: E731
    return {"chosen": stack(chosen, 0), "chosen_mask": stack(chosen, 1), "rejected": stack(rejected, 0),
            "rejected_mask": stack(rejected, 1)}


def train_reward_model(cfg: RLHFConfig, policy: TransformerLM, pairs: dict) -> tuple[models.RewardModel, dict]:
    """Bradley-Terry on 80% of the pairs; pairwise accuracy on the other 20%."""
    n = len(pairs["chosen"])
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed + 2))
    train, test = perm[: int(0.8 * n)], perm[int(0.8 * n):]
    rm = models.RewardModel(policy, seed=cfg.seed + 6)
    opt = torch.optim.AdamW(rm.parameters(), lr=cfg.rm_lr, weight_decay=0.0)
    shuffle = torch.Generator().manual_seed(cfg.seed + 7)

    def scores(idx):
        return (rm(pairs["chosen"][idx], pairs["chosen_mask"][idx]),
                rm(pairs["rejected"][idx], pairs["rejected_mask"][idx]))

    losses = []
    for _ in range(cfg.rm_epochs):
        for b in train[torch.randperm(len(train), generator=shuffle)].split(64):
            loss = preference.bradley_terry_loss(*scores(b))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    rm.eval()
    with torch.no_grad():
        acc_test, acc_train = (preference.pairwise_accuracy(*scores(i)) for i in (test, train))
    return rm, {"pairs": n, "train_accuracy": acc_train, "held_out_accuracy": acc_test, "losses": losses}


def evaluate(cfg: RLHFConfig, lm: TransformerLM, data: task.ChatData, judge, seed: int = 12345) -> dict:
    """Held-out prompts (templates never trained on): mean gold, on-topic and toxic rates of sampled replies."""
    rng, gen = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    topics, templates = draw_prompts(rng, cfg.eval_prompts, task.HELD_OUT_TEMPLATES)
    ids, _ = models.sample(lm, prompts_tensor(data.vocab, topics, templates), cfg.max_reply,
                           data.vocab.stoi[task.EOS], generator=gen)
    replies = replies_of(data.vocab, ids)
    tox, g = judge_and_gold(judge, topics, replies)
    return {"gold": float(g.mean()), "on_topic": float(np.mean([t in r for t, r in zip(topics, replies, strict=True)])),
            "toxic": float((tox >= task.TOXIC).mean()), "examples": [f"{t}: {' '.join(r)}" for t, r in
                                                               zip(topics[:6], replies[:6], strict=True)]}


def dpo(cfg: RLHFConfig, sft_lm: TransformerLM, pairs: dict) -> tuple[TransformerLM, list[float]]:
    """DPO from the supervised policy (also the reference) on the reward model's pairs."""
    policy, ref = copy.deepcopy(sft_lm), copy.deepcopy(sft_lm).eval()
    opt = torch.optim.AdamW(policy.parameters(), lr=cfg.dpo_lr, weight_decay=0.0)

    def seq_logp(lm, ids, mask):
        return (models.reply_logprobs(lm, ids, task.PROMPT_LEN) * mask).sum(1)

    losses, n = [], len(pairs["chosen"])
    for _ in range(cfg.dpo_epochs):
        for b in torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed + 3)).split(64):
            c, cm, r, rmask = (pairs[k][b] for k in ("chosen", "chosen_mask", "rejected", "rejected_mask"))
            with torch.no_grad():
                rc, rr = seq_logp(ref, c, cm), seq_logp(ref, r, rmask)
            loss, _, _ = preference.dpo_loss(seq_logp(policy, c, cm), seq_logp(policy, r, rmask), rc, rr, cfg.dpo_beta)
            loss = loss.mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    return policy, losses
