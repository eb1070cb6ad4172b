"""llmlab.rlhf's PPO and preference mathematics against Hugging Face TRL 0.11.4, the last release that
ships PPO's pieces as callable functions and methods (later releases inline them in PPOTrainer.train), and
against direct formulas. A test-only dependency."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from llmlab.rlhf import ppo, preference

TOL = 1e-6


def _trl():
    """TRL 0.11.4 under transformers 5: its optional-package probes take transformers' (found, version)
    pairs for booleans (every probe true), and its DPO module imports a mapping that transformers 5
    renamed. Both are set right before TRL is imported; nothing of llmlab depends on them."""
    import transformers.models.auto.modeling_auto as auto

    auto.__dict__.setdefault("MODEL_FOR_VISION_2_SEQ_MAPPING_NAMES", {})
    import trl.import_utils as probes

    for name, value in list(vars(probes).items()):
        if name.startswith("_") and name.endswith("_available") and isinstance(value, tuple):
            setattr(probes, name, value[0])
    import trl.core
    import trl.trainer.ppo_trainer
    from trl import DPOTrainer
    from trl.trainer.utils import AdaptiveKLController

    return SimpleNamespace(core=trl.core, PPOTrainer=trl.trainer.ppo_trainer.PPOTrainer, DPOTrainer=DPOTrainer,
                           AdaptiveKLController=AdaptiveKLController)


@pytest.fixture(scope="module")
def trl():
    return _trl()


def _batch(seed: int, B: int = 6, T: int = 9, V: int = 11):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, T + 1, (B,), generator=g)
    mask = (torch.arange(T)[None] < lengths[:, None]).float()
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    return SimpleNamespace(mask=mask.double(), logprobs=-r(B, T).abs(), old=-r(B, T).abs(), ref=-r(B, T).abs(),
                           values=r(B, T), vpreds=r(B, T), rewards=r(B, T), scores=r(B), logits=r(B, T, V))


@pytest.mark.parametrize("seed", range(5))
def test_gae_whitening_and_losses_equal_trl(trl, seed):
    b = _batch(seed)
    cfg = SimpleNamespace(gamma=0.97, lam=0.9, whiten_rewards=False, cliprange=0.2, cliprange_value=0.3,
                          vf_coef=0.1, ratio_threshold=1e9, kl_penalty="kl")
    stub = SimpleNamespace(config=cfg)
    t_values, t_adv, t_returns = trl.PPOTrainer.compute_advantages(stub, b.values, b.rewards, b.mask)
    adv, returns = ppo.gae(b.rewards, b.values, b.mask, gamma=cfg.gamma, lam=cfg.lam)
    m = b.mask.bool()
    torch.testing.assert_close(returns[m], t_returns[m], atol=TOL, rtol=0)
    torch.testing.assert_close(ppo.whiten(adv, b.mask)[m], t_adv[m], atol=TOL, rtol=0)
    torch.testing.assert_close(ppo.whiten(b.rewards, b.mask, shift_mean=False),
                               trl.core.masked_whiten(b.rewards, b.mask, shift_mean=False), atol=TOL, rtol=0)
    # TRL's loss: policy loss + vf_coef * value loss, with its clip fractions among the stats
    pg, pg_clip = ppo.policy_loss(b.logprobs, b.old, t_adv, b.mask, clip=cfg.cliprange)
    vf, vf_clip = ppo.value_loss(b.vpreds, t_values, t_returns, b.mask, clip=cfg.cliprange_value)
    t_pg, t_vf, stats = trl.PPOTrainer.loss(stub, b.old, t_values, b.logits, b.vpreds, b.logprobs, b.mask, t_adv,
                                            t_returns)
    assert abs(float(pg) - float(t_pg)) < TOL and abs(cfg.vf_coef * float(vf) - float(t_vf)) < TOL
    assert abs(float(pg_clip) - float(stats["policy/clipfrac"])) < TOL
    assert abs(float(vf_clip) - float(stats["val/clipfrac"])) < TOL
    torch.testing.assert_close(ppo.masked_mean(ppo.entropy_from_logits(b.logits), b.mask),
                               trl.core.masked_mean(trl.core.entropy_from_logits(b.logits), b.mask), atol=TOL, rtol=0)


@pytest.mark.parametrize("seed", range(3))
def test_token_rewards_equal_trl(trl, seed):
    """TRL's compute_rewards: -coef * (logp - ref) per token, the score added at the last response token."""
    b = _batch(seed)
    stub = SimpleNamespace(config=SimpleNamespace(kl_penalty="kl"), kl_ctl=SimpleNamespace(value=0.17))
    stub._kl_penalty = lambda lp, ref: trl.PPOTrainer._kl_penalty(stub, lp, ref)
    masks = list(b.mask)
    t_rewards, _, t_kls = trl.PPOTrainer.compute_rewards(stub, list(b.scores), list(b.logprobs), list(b.ref), masks)
    rewards, kl = ppo.token_rewards(b.scores, b.logprobs, b.ref, b.mask, 0.17, "k1")
    for i, mask in enumerate(masks):
        m = mask.bool()
        torch.testing.assert_close(rewards[i][m], (t_rewards[i] * mask)[m], atol=TOL, rtol=0)
        torch.testing.assert_close(kl[i][m], t_kls[i][m], atol=TOL, rtol=0)


def test_adaptive_kl_controller_equals_trl(trl):
    ours, theirs = ppo.AdaptiveKLController(0.2, 6.0, 10000), trl.AdaptiveKLController(0.2, 6.0, 10000)
    for kl, n in ((1.0, 256), (6.0, 256), (9.5, 512), (30.0, 64), (0.0, 1000), (7.0, 128)):
        theirs.update(kl, n)
        assert abs(ours.update(kl, n) - theirs.value) < 1e-12


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_dpo_loss_equals_trl(trl, label_smoothing):
    g = torch.Generator().manual_seed(3)
    pc, pr, rc, rr = (torch.randn(16, generator=g, dtype=torch.float64) * 5 for _ in range(4))
    stub = SimpleNamespace(beta=0.1, label_smoothing=label_smoothing, loss_type="sigmoid", reference_free=False,
                           f_divergence_type="reverse_kl", f_divergence_params={},
                           accelerator=SimpleNamespace(device="cpu"))
    t_losses, t_chosen, t_rejected = trl.DPOTrainer.dpo_loss(stub, pc, pr, rc, rr)
    losses, chosen, rejected = preference.dpo_loss(pc, pr, rc, rr, beta=0.1, label_smoothing=label_smoothing)
    for a, b in ((losses, t_losses), (chosen, t_chosen), (rejected, t_rejected)):
        torch.testing.assert_close(a, b, atol=TOL, rtol=0)


def test_kl_estimators_and_bradley_terry_by_their_formulas():
    """k1 and k3 are unbiased for KL(p || q) on samples from p (checked against the exact KL of two
    categoricals); k3 is never negative; the Bradley-Terry loss is -log sigmoid of the reward margin."""
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(7, generator=g, dtype=torch.float64), 0)
    q = torch.softmax(torch.randn(7, generator=g, dtype=torch.float64), 0)
    exact = float((p * (p.log() - q.log())).sum())
    x = torch.multinomial(p, 400_000, replacement=True, generator=g)
    for kind in ("k1", "k3"):
        est = ppo.kl_estimate(p.log()[x], q.log()[x], kind)
        assert abs(float(est.mean()) - exact) < 4 * float(est.std()) / math.sqrt(len(x)) + 1e-12
    assert float(ppo.kl_estimate(p.log()[x], q.log()[x], "k3").min()) >= 0
    with pytest.raises(ValueError):
        ppo.kl_estimate(p, q, "k4")
    c, r = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([1.0, 0.0, 0.5])
    want = sum(math.log1p(math.exp(-(a - b))) for a, b in zip(c.tolist(), r.tolist(), strict=True)) / 3
    assert abs(float(preference.bradley_terry_loss(c, r)) - want) < 1e-6
    assert preference.pairwise_accuracy(c, r) == pytest.approx(1 / 3)
