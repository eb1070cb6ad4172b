"""Lab m13: RL from human feedback. GAE, masked whitening, the KL estimators and the per-token KL penalty,
PPO's clipped policy and value losses, Ziegler et al.'s adaptive KL controller, the Bradley-Terry loss and
DPO; the deliverable fine-tunes the toy chatbot (``llmlab.rlhf.task``) with PPO, its rollout workers,
reward model and learner as Ray actors, plots the KL tracker and compares PPO with DPO on held-out prompts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from llmlab.labs.base import CheckContext, Lab, LabLimits
from llmlab.plots import figure
from llmlab.rlhf import ppo, preference

LAB = Lab("m13", module=__name__, reference="llmlab.rlhf.ppo",
          spec=["gae", "whiten", "kl_estimate", "token_rewards", "policy_loss", "value_loss", "AdaptiveKLController",
                "llmlab.rlhf.preference:bradley_terry_loss", "llmlab.rlhf.preference:dpo_loss"],
          limits=LabLimits(call_timeout_s=30, total_timeout_s=180, memory_mb=2048),
          own_work="GAE, masked means and whitening, the KL estimators, the clipped losses, the KL controller, the "
                   "Bradley-Terry and DPO losses, from tensor arithmetic",
          forbidden=("trl", "torch.nn.functional:logsigmoid", "torch.nn:LogSigmoid", "torch.nn.functional:softplus",
                     "torch.nn.functional:binary_cross_entropy_with_logits"),
          ray_workload=True)


def _episodes(ctx: CheckContext, B: int = 5):
    """Right-padded responses: lengths from 1 to T (one full row), rewards, values and a mask."""
    T = ctx.randint(6, 13)
    lengths = [1, T] + [ctx.randint(1, T + 1) for _ in range(B - 2)]
    mask = (torch.arange(T)[None] < torch.tensor(lengths)[:, None]).double()
    return T, lengths, mask, ctx.randn(B, T), ctx.randn(B, T)


def _gae_reference(rewards, values, lengths, gamma, lam):
    """The recursion on each row's own steps, V = 0 after the last one (numpy, float64)."""
    adv = np.zeros(rewards.shape)
    for i, n in enumerate(lengths):
        last = 0.0
        for t in reversed(range(n)):
            nxt = values[i, t + 1] if t + 1 < n else 0.0
            last = rewards[i, t] + gamma * nxt - values[i, t] + gamma * lam * last
            adv[i, t] = last
    return adv


@LAB.check(points=3, grades="KL-regularized PPO")
def gae_follows_the_recursion(ctx: CheckContext):
    """gae(rewards, values, mask, gamma, lam) returns (advantages, returns = advantages + values) equal to
    the GAE recursion run on each response's own tokens (1e-9), with V = 0 after the response's end: values
    and rewards written into the padding change nothing. With lam = 1 the returns are the discounted sums of
    the rewards (Monte Carlo)."""
    T, lengths, mask, rewards, values = _episodes(ctx)
    gamma, lam = ctx.rng.uniform(0.8, 1.0), ctx.rng.uniform(0.5, 1.0)
    noisy_r, noisy_v = rewards + 100 * (1 - mask), values - 100 * (1 - mask)  # garbage in the padding
    adv, ret = ctx.call("gae", noisy_r, noisy_v, mask, gamma, lam)
    want = torch.from_numpy(_gae_reference(rewards.numpy(), values.numpy(), lengths, gamma, lam))
    m = mask.bool()
    ctx.close(ctx.tensor(adv, "advantages", dtype=torch.float64, shape=(len(lengths), T))[m], want[m], atol=1e-9,
              what="advantages on the response tokens")
    ctx.close(ctx.tensor(ret, "returns", dtype=torch.float64, shape=(len(lengths), T))[m], (want + values)[m],
              atol=1e-9, what="returns (advantages + values)")
    _, ret = ctx.call("gae", rewards * mask, values * mask, mask, gamma, 1.0)
    mc = torch.zeros_like(rewards)
    for i, n in enumerate(lengths):
        acc = 0.0
        for t in reversed(range(n)):
            acc = float(rewards[i, t]) + gamma * acc
            mc[i, t] = acc
    ctx.close(ctx.tensor(ret, "returns")[m], mc[m], atol=1e-9, what="returns with lam = 1 (discounted reward sums)")


@LAB.check(points=1, grades="KL-regularized PPO")
def whitening_uses_the_response_tokens_only(ctx: CheckContext):
    """whiten(x, mask, shift_mean) is (x - mean) / sqrt(var + 1e-8) with the mean and the unbiased variance
    over the masked positions (1e-9), the mean added back when shift_mean is False; the padding's values
    change nothing on the response tokens."""
    _, _, mask, x, _ = _episodes(ctx)
    m = mask.bool()
    mean, var = x[m].mean(), x[m].var(unbiased=True)
    for shift in (True, False):
        got = ctx.tensor(ctx.call("whiten", x + 1e3 * (1 - mask), mask, shift), "whitened", dtype=torch.float64)
        want = (x - mean) / torch.sqrt(var + 1e-8) + (0 if shift else mean)
        ctx.close(got[m], want[m], atol=1e-9, what=f"whitened values (shift_mean={shift})")


@LAB.check(points=2, grades="KL-regularized PPO")
def kl_estimators(ctx: CheckContext):
    """kl_estimate(logprobs, ref_logprobs, kind) per token, with log r = ref - logprobs: k1 = -log r,
    k2 = (log r)^2 / 2, k3 = (r - 1) - log r (1e-12); on 200,000 samples from a policy p, the means of k1 and
    k3 are within 4 standard errors of the exact KL(p || ref), and k3 is never negative."""
    lp, ref = -ctx.randn(4, 7).abs(), -ctx.randn(4, 7).abs()
    log_r = ref - lp
    for kind, want in (("k1", -log_r), ("k2", 0.5 * log_r**2), ("k3", torch.expm1(log_r) - log_r)):
        ctx.close(ctx.call("kl_estimate", lp, ref, kind), want, atol=1e-12, what=kind)
    p = torch.softmax(ctx.randn(9), 0)
    q = torch.softmax(ctx.randn(9), 0)
    exact = float((p * (p.log() - q.log())).sum())
    x = torch.multinomial(p, 200_000, replacement=True, generator=ctx.gen)
    for kind in ("k1", "k3"):
        est = ctx.tensor(ctx.call("kl_estimate", p.log()[x], q.log()[x], kind), kind, dtype=torch.float64)
        se = float(est.std()) / math.sqrt(len(x))
        ctx.expect(abs(float(est.mean()) - exact) < 4 * se + 1e-12,
                   f"{kind}: mean {float(est.mean()):.5f} over samples of p, exact KL {exact:.5f}: not unbiased")
        if kind == "k3":
            ctx.expect(float(est.min()) >= 0, "k3 is negative somewhere: it never is")


@LAB.check(points=2, grades="a toy chatbot fine-tuned with PPO")
def reward_is_the_kl_penalty_plus_the_score_at_the_end(ctx: CheckContext):
    """token_rewards(scores, logprobs, ref_logprobs, mask, kl_coef, kind) returns (rewards, kl): kl is the
    per-token estimate times the mask; rewards is -kl_coef * kl plus each response's score at its last
    token (1e-12), for responses of one token and of the full width."""
    T, lengths, mask, _, _ = _episodes(ctx)
    lp, ref, scores = -ctx.randn(len(lengths), T).abs(), -ctx.randn(len(lengths), T).abs(), ctx.randn(len(lengths))
    coef, kind = ctx.rng.uniform(0.01, 0.5), ctx.choice(["k1", "k3"])
    rewards, kl = ctx.call("token_rewards", scores, lp, ref, mask, coef, kind)
    log_r = ref - lp
    want_kl = (-log_r if kind == "k1" else torch.expm1(log_r) - log_r) * mask
    want = -coef * want_kl
    for i, n in enumerate(lengths):
        want[i, n - 1] += scores[i]
    ctx.close(kl, want_kl, atol=1e-12, what=f"per-token KL ({kind}), zero in the padding")
    ctx.close(rewards, want, atol=1e-12, what="per-token rewards")


def _policy_grad(sub, logprobs, old, adv, mask, clip):
    """(loss, clip fraction, d loss / d logprobs) of the submission's policy loss."""
    logprobs = logprobs.clone().requires_grad_(True)
    loss, frac = sub.policy_loss(logprobs, old, adv, mask, clip)
    loss.backward()
    return loss.detach(), frac, logprobs.grad


@LAB.check(points=2, grades="KL-regularized PPO")
def clipped_surrogate(ctx: CheckContext):
    """policy_loss(logprobs, old_logprobs, advantages, mask, clip) returns (the token mean of
    max(-A r, -A clip(r, 1 - clip, 1 + clip)), the fraction of tokens where the clipped term is larger)
    with r = exp(logprobs - old_logprobs), ratios well inside and outside the clip range; its gradient is
    autograd's of that formula (zero on clipped tokens)."""
    T, lengths, mask, adv, _ = _episodes(ctx)
    old = -ctx.randn(len(lengths), T).abs()
    logprobs = old + 0.6 * ctx.randn(len(lengths), T)
    clip = ctx.choice([0.1, 0.2, 0.3])
    loss, frac, grad = ctx.run(_policy_grad, logprobs, old, adv, mask, clip)
    x = logprobs.clone().requires_grad_(True)
    ratio = torch.exp(x - old)
    a, b = -adv * ratio, -adv * torch.clamp(ratio, 1 - clip, 1 + clip)
    want = (torch.maximum(a, b) * mask).sum() / mask.sum()
    want.backward()
    ctx.close(ctx.number(loss, "loss"), want.item(), atol=1e-12, what="policy loss")
    ctx.close(ctx.number(frac, "clip fraction"), float(((b > a).double() * mask).sum() / mask.sum()), atol=1e-12,
              what="clip fraction")
    ctx.close(grad, x.grad, atol=1e-12, what="gradient of the policy loss")


@LAB.check(points=1, grades="KL-regularized PPO")
def clipped_value_loss(ctx: CheckContext):
    """value_loss(values, old_values, returns, mask, clip) returns (0.5 * the token mean of
    max((V - R)^2, (V_old + clip(V - V_old, -clip, clip) - R)^2), the fraction where the clipped term is
    larger) (1e-12)."""
    T, lengths, mask, values, old = _episodes(ctx)
    returns, clip = ctx.randn(len(lengths), T), ctx.choice([0.1, 0.2, 0.5])
    loss, frac = ctx.call("value_loss", values, old, returns, mask, clip)
    a = (values - returns) ** 2
    b = (old + torch.clamp(values - old, -clip, clip) - returns) ** 2
    ctx.close(ctx.number(loss, "loss"), float(0.5 * (torch.maximum(a, b) * mask).sum() / mask.sum()), atol=1e-12,
              what="value loss")
    ctx.close(ctx.number(frac, "clip fraction"), float(((b > a).double() * mask).sum() / mask.sum()), atol=1e-12,
              what="value clip fraction")


def _controller(sub, init, target, horizon, steps):
    c = sub.AdaptiveKLController(init, target, horizon)
    return [float(c.update(kl, n)) for kl, n in steps] + [float(c.value)]


@LAB.check(points=2, grades="KL divergence and reward per epoch (KL tracker)")
def adaptive_kl_controller(ctx: CheckContext):
    """AdaptiveKLController(value, target, horizon).update(kl, n_steps) multiplies the coefficient by
    1 + clip(kl / target - 1, -0.2, 0.2) * n_steps / horizon and returns it (1e-12), over KLs far below, near
    and far above the target; .value is the current coefficient."""
    init, target, horizon = ctx.rng.uniform(0.05, 0.5), ctx.rng.uniform(2, 8), ctx.choice([1000, 10_000])
    steps = [(float(target * f), ctx.randint(16, 512)) for f in (0.0, 0.9, 1.05, 3.0, 30.0, 0.5, 1.0)]
    got = ctx.run(_controller, init, target, horizon, steps)
    value, want = init, []
    for kl, n in steps:
        value *= 1 + min(max(kl / target - 1, -0.2), 0.2) * n / horizon
        want.append(value)
    ctx.close(got, want + [value], atol=1e-12, what="coefficients after each update")


def _softplus(x):
    """log(1 + e^x), exact in float64 everywhere (torch's softplus returns x itself above its threshold 20,
    off by e^-20 = 2e-9 there)."""
    return x.clamp(min=0) + torch.log1p(torch.exp(-x.abs()))


@LAB.check(points=2, grades="reward models")
def preference_losses(ctx: CheckContext):
    """bradley_terry_loss(chosen, rejected) is the mean of -log sigmoid(r_c - r_r), finite for margins of
    +-800 (1e-10); dpo_loss(pi_c, pi_r, ref_c, ref_r, beta, label_smoothing) returns (per-pair losses
    -(1 - eps) log sigmoid(h) - eps log sigmoid(-h), h = beta * ((pi_c - ref_c) - (pi_r - ref_r)), and the
    implicit rewards beta * (pi - ref) of chosen and rejected) (1e-10)."""
    c, r = ctx.randn(12) * 3, ctx.randn(12) * 3
    c[0], r[0], c[1], r[1] = 800.0, 0.0, -800.0, 0.0  # float64's sigmoid(-800) is 0: log(sigmoid) is -inf
    want = _softplus(-(c - r)).mean()
    ctx.close(ctx.call("bradley_terry_loss", c, r), want, atol=1e-10, what="Bradley-Terry loss")
    pc, pr, rc, rr = (ctx.randn(10) * 4 for _ in range(4))
    beta, eps = ctx.choice([0.1, 0.3, 1.0]), ctx.choice([0.0, 0.1])
    losses, chosen, rejected = ctx.call("dpo_loss", pc, pr, rc, rr, beta, eps)
    h = beta * ((pc - rc) - (pr - rr))
    ctx.close(losses, (1 - eps) * _softplus(-h) + eps * _softplus(h), atol=1e-10, what="DPO losses")
    ctx.close(chosen, beta * (pc - rc), atol=1e-10, what="implicit rewards of the chosen responses")
    ctx.close(rejected, beta * (pr - rr), atol=1e-10, what="implicit rewards of the rejected responses")


# --- seeded bugs --------------------------------------------------------------------------------------
def gae_without_lambda(rewards, values, mask, gamma=1.0, lam=0.95):
    return ppo.gae(rewards, values, mask, gamma, 1.0)


def gae_bootstraps_from_padding(rewards, values, mask, gamma=1.0, lam=0.95):
    adv, _ = ppo.gae(rewards * mask, values, torch.ones_like(mask), gamma, lam)
    return adv * mask, adv * mask + values * mask


def whiten_over_padding(x, mask, shift_mean=True, eps=1e-8):
    return ppo.whiten(x, torch.ones_like(mask), shift_mean, eps)


def k3_with_the_ratio_inverted(logprobs, ref_logprobs, kind="k1"):
    return ppo.kl_estimate(ref_logprobs, logprobs, kind) if kind == "k3" else ppo.kl_estimate(logprobs, ref_logprobs,
                                                                                            kind)


def score_at_the_first_token(scores, logprobs, ref_logprobs, mask, kl_coef, kind="k1"):
    kl = ppo.kl_estimate(logprobs, ref_logprobs, kind) * mask
    rewards = -kl_coef * kl
    rewards[:, 0] += scores
    return rewards, kl


def policy_loss_takes_the_min(logprobs, old_logprobs, advantages, mask, clip=0.2):
    ratio = torch.exp(logprobs - old_logprobs)
    a, b = -advantages * ratio, -advantages * torch.clamp(ratio, 1 - clip, 1 + clip)
    return ppo.masked_mean(torch.minimum(a, b), mask), ppo.masked_mean((b > a).double(), mask)


def value_loss_unclipped(values, old_values, returns, mask, clip=0.2):
    loss, frac = ppo.value_loss(values, old_values, returns, mask, clip)
    return 0.5 * ppo.masked_mean((values - returns) ** 2, mask), frac


class ControllerWithoutClipping(ppo.AdaptiveKLController):
    def update(self, current_kl: float, n_steps: int) -> float:
        self.value *= 1 + (current_kl / self.target - 1) * n_steps / self.horizon
        return self.value


def bradley_terry_naive(chosen, rejected):
    return -torch.log(torch.sigmoid(chosen - rejected)).mean()


def dpo_without_the_reference(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta=0.1,
                              label_smoothing=0.0):
    zeros = torch.zeros_like(ref_chosen)
    return preference.dpo_loss(policy_chosen, policy_rejected, zeros, zeros, beta, label_smoothing)


class ControllerThatNeverMoves(ppo.AdaptiveKLController):
    def update(self, current_kl: float, n_steps: int) -> float:
        return self.value


class ControllerOfNaN(ppo.AdaptiveKLController):
    def update(self, current_kl: float, n_steps: int) -> float:
        self.value = float("nan")
        return self.value


LAB.cheat("constant", AdaptiveKLController=ControllerThatNeverMoves)
LAB.cheat("nan", AdaptiveKLController=ControllerOfNaN)
LAB.bug("gae_without_lambda", gae=gae_without_lambda)
LAB.bug("gae_bootstraps_from_padding", gae=gae_bootstraps_from_padding)
LAB.bug("whiten_over_padding", whiten=whiten_over_padding)
LAB.bug("k3_ratio_inverted", kl_estimate=k3_with_the_ratio_inverted)
LAB.bug("score_at_first_token", token_rewards=score_at_the_first_token)
LAB.bug("policy_loss_min", policy_loss=policy_loss_takes_the_min)
LAB.bug("value_loss_unclipped", value_loss=value_loss_unclipped)
LAB.bug("kl_controller_unclipped", AdaptiveKLController=ControllerWithoutClipping)
LAB.bug("bradley_terry_overflows", bradley_terry_loss=bradley_terry_naive)
LAB.bug("dpo_without_reference", dpo_loss=dpo_without_the_reference)


# --- deliverable ---------------------------------------------------------------------------------------------
def run(profile: str, out: Path) -> tuple[dict, str]:
    """The toy chatbot's RLHF run (``llmlab.rlhf.run``), PPO on Ray actors."""
    from llmlab.rlhf import run as rlhf_run

    cfg = rlhf_run.FULL if profile == "full" else rlhf_run.QUICK
    s = rlhf_run.run(cfg, out, on_ray=True)
    history = json.loads((out / "history.json").read_text())
    ev = s["evaluation"]
    names = list(ev)
    with figure(out / "policies.png", "Held-out prompts: supervised, PPO and DPO policies", ncols=3) as axes:
        for ax, key, label in zip(axes, ("gold", "on_topic", "toxic"),
                                  ("gold score (on topic - toxic)", "replies on the asked topic",
                                   "toxic replies (judge >= 0.9)"), strict=True):
            ax.bar([n.upper() for n in names], [ev[n][key] for n in names], color=["gray", "tab:blue", "tab:orange"])
            ax.set_title(label, fontsize=9)
    first, last = history[0], history[-1]
    rows = "\n".join(f"| {n.upper()} | {ev[n]['gold']:+.3f} | {ev[n]['on_topic']:.1%} | {ev[n]['toxic']:.1%} |"
                     for n in names)
    examples = "\n".join(f"    {e}" for e in ev["ppo"]["examples"])
    metrics = {k: s[k] for k in ("vocab", "params", "sft_loss", "reward_model", "dpo_loss", "evaluation", "seconds")}
    metrics |= {"reward_first": first["reward"], "reward_last": last["reward"], "kl_last": last["kl"],
                "kl_target": cfg.kl_target, "kl_coef_first": first["kl_coef"], "kl_coef_last": last["kl_coef"],
                "history": history, "rollout_workers": cfg.rollout_workers}
    report = f"""
## The toy chatbot (``llmlab.rlhf.task``)
A user asks about one of 16 things; a reply is better when it mentions the thing asked about and is not
toxic (the Davidson-trained judge at 0.9). Word vocabulary of {s['vocab']:,}; policy of {s['params']:,}
parameters; supervised loss {s['sft_loss']['first']:.2f} -> {s['sft_loss']['last']:.2f} nats per token.

Reward model (Bradley-Terry on {s['reward_model']['pairs']:,} pairs): held-out pairwise accuracy
**{s['reward_model']['held_out_accuracy']:.3f}** (training {s['reward_model']['train_accuracy']:.3f}).

## PPO on Ray ({cfg.rollout_workers} rollout actors, a reward actor, a learner actor; {cfg.iterations} iterations)
Reward-model score {first['reward']:.2f} -> {last['reward']:.2f}; KL to the reference {last['kl']:.2f} nats per
reply (target {cfg.kl_target:g}); KL coefficient {first['kl_coef']:.3f} -> {last['kl_coef']:.3f}.

| policy | gold (held out) | on topic | toxic |
|---|---|---|---|
{rows}

PPO's replies to held-out prompts:
{examples}

![tracker](kl_tracker.png)
![policies](policies.png)
"""
    return metrics, report
