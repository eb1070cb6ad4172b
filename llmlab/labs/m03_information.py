"""Lab m03: probability and information theory. Entropy, cross-entropy and KL (checked against SciPy and
the identity H(p,q) = H(p) + KL(p||q)), the LM loss, masked softmax, temperature/top-k/top-p/min-p sampling
(checked against Hugging Face's logits warpers and by a chi-square test), and strided perplexity."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from llmlab import information
from llmlab.evals import perplexity as ppl
from llmlab.labs.base import CheckContext, Lab, LabLimits
from llmlab.plots import figure

LAB = Lab(
    "m03", module=__name__, reference="llmlab.information",
    spec=["entropy", "cross_entropy", "kl_divergence", "nll_from_logits", "masked_softmax", "filtered_probs",
          "sample", "llmlab.evals.perplexity:perplexity"],
    limits=LabLimits(call_timeout_s=60, total_timeout_s=300, memory_mb=2048),
    own_work=("entropy, cross-entropy, KL, log-likelihoods, masked softmax, top-k/top-p filtering and perplexity "
              "from their definitions (drawing from a finished distribution with torch.multinomial is allowed)"),
    forbidden=("torch.nn.functional:cross_entropy", "torch.nn.functional:nll_loss", "torch.nn.functional:kl_div",
               "torch.nn:CrossEntropyLoss", "torch.nn:NLLLoss", "torch.nn:KLDivLoss", "torch.special:entr",
               "torch.distributions:Categorical", "scipy.stats:entropy", "scipy.special:rel_entr",
               "scipy.special:kl_div", "scipy.special:entr", "evaluate"),
)


class ToyCausalLM(torch.nn.Module):
    """One causal attention head over token + position embeddings: small, deterministic from its seed, and
    sensitive to how much context a token gets (so strided evaluation matters)."""

    def __init__(self, vocab: int, d: int = 16, max_len: int = 64, seed: int = 0, dtype=torch.float64):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        init = lambda *shape, scale: torch.nn.Parameter((torch.randn(*shape, generator=g, dtype=torch.float64)
                                                         * scale).to(dtype))
        self.tok = init(vocab, d, scale=1.0)
        self.pos = init(max_len, d, scale=0.5)
        self.qkv = init(d, 3 * d, scale=1 / math.sqrt(d))
        self.head = init(d, vocab, scale=1 / math.sqrt(d))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, V)
        T = ids.shape[-1]
        x = self.tok[ids] + self.pos[:T]
        q, k, v = (x @ self.qkv).chunk(3, dim=-1)
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return (x + y) @ self.head


def probe_perplexity(sub, vocab, seed, ids, context, stride):
    return sub.perplexity(ToyCausalLM(vocab, seed=seed), ids, context, stride)


def probe_sample(sub, logits, n, settings, seed):
    torch.manual_seed(seed)
    return sub.sample(logits, n, generator=torch.Generator().manual_seed(seed), **settings)


def probe_masked_softmax_full_row(sub, logits, mask):
    try:
        sub.masked_softmax(logits, mask)
    except ValueError as e:
        return f"ValueError: {e}"
    return "no error"


def _dists(ctx: CheckContext, batch: int, V: int, zeros: bool = True) -> torch.Tensor:
    p = torch.from_numpy(ctx.rng.dirichlet(np.full(V, 0.7), size=batch))
    if zeros:
        p = p * torch.from_numpy(ctx.rng.random((batch, V)) > 0.3)
        p[:, 0] += 1e-3  # no empty row
        p = p / p.sum(-1, keepdim=True)
    return p


@LAB.check(points=3, grades="KL divergence")
def entropy_cross_entropy_kl(ctx: CheckContext):
    """entropy, cross_entropy and kl_divergence equal scipy.stats.entropy within 1e-10 (zeros included);
    H(p,q) = H(p) + KL(p||q); KL >= 0; inf when q misses p's support."""
    V = ctx.randint(3, 30)
    p, q = _dists(ctx, 6, V), _dists(ctx, 6, V, zeros=False)
    H = ctx.call("entropy", p)
    ctx.close(H, torch.from_numpy(stats.entropy(p.numpy(), axis=-1)), atol=1e-10, what="entropy")
    KL = ctx.call("kl_divergence", p, q)
    ctx.close(KL, torch.from_numpy(stats.entropy(p.numpy(), q.numpy(), axis=-1)), atol=1e-10, what="KL(p||q)")
    CE = ctx.call("cross_entropy", p, q)
    ctx.close(CE, H + KL, atol=1e-10, what="H(p,q) - (H(p) + KL(p||q))")
    ctx.expect(bool((ctx.call("kl_divergence", q, p) >= -1e-12).all()), "KL must be non-negative")
    miss = q.clone()
    miss[:, 0] = 0.0
    miss = miss / miss.sum(-1, keepdim=True)
    ctx.expect(bool(torch.isinf(ctx.call("cross_entropy", p, miss)).all()),
               "cross_entropy must be inf when q is 0 where p is not")


@LAB.check(points=1, grades="cross-entropy")
def stable_lm_loss(ctx: CheckContext):
    """nll_from_logits equals torch's cross_entropy, also for logits of size 1e4 (no overflow)."""
    logits = ctx.randn(5, 7, 11) * 1e4
    targets = torch.from_numpy(ctx.rng.integers(0, 11, size=(5, 7)))
    got = ctx.call("nll_from_logits", logits, targets)
    want = torch.nn.functional.cross_entropy(logits.reshape(-1, 11), targets.reshape(-1))
    ctx.close(got, want, atol=1e-6, rtol=1e-10, what="LM loss at logits ~1e4")


@LAB.check(points=2, grades="temperature sampler and sampling entropy (masked softmax)")
def masked_softmax(ctx: CheckContext):
    """masked_softmax: masked entries exactly 0, rows sum to 1, equals softmax over the kept entries; a fully
    masked row raises ValueError."""
    V = ctx.randint(4, 20)
    logits = ctx.randn(8, V) * 30
    mask = torch.from_numpy(ctx.rng.random((8, V)) < 0.5)
    mask[:, ctx.randint(0, V)] = True
    got = ctx.call("masked_softmax", logits, mask)
    ctx.expect(bool((got[~mask] == 0).all()), "masked entries must have probability exactly 0")
    want = torch.stack([torch.zeros(V, dtype=torch.float64).masked_scatter(m, row[m].softmax(-1))
                        for row, m in zip(logits, mask, strict=True)])
    ctx.close(got, want, atol=1e-12, what="masked softmax")
    mask[3] = False
    verdict = ctx.run(probe_masked_softmax_full_row, logits, mask)
    ctx.expect(verdict.startswith("ValueError"), f"a fully masked row must raise ValueError, got: {verdict}")


def _hf_probs(logits: torch.Tensor, temperature, top_k, top_p, min_p) -> torch.Tensor:
    """Hugging Face's logits warpers, in their order: the independent reference for filtered_probs."""
    from transformers.generation import logits_process as lp

    scores = logits.clone()
    warpers = [lp.TemperatureLogitsWarper(temperature)]
    if top_k is not None:
        warpers.append(lp.TopKLogitsWarper(top_k))
    if top_p is not None:
        warpers.append(lp.TopPLogitsWarper(top_p))
    if min_p is not None:
        warpers.append(lp.MinPLogitsWarper(min_p))
    for w in warpers:
        scores = w(None, scores)
    return scores.softmax(-1)


_SETTINGS = [dict(temperature=0.7), dict(temperature=1.3, top_k=5), dict(temperature=1.0, top_p=0.8),
             dict(temperature=0.9, min_p=0.1), dict(temperature=1.5, top_k=12, top_p=0.9, min_p=0.05)]


def _full(settings: dict) -> tuple:
    return tuple(settings.get(k) for k in ("temperature", "top_k", "top_p", "min_p"))


@LAB.check(points=3, grades="temperature sampler and sampling entropy (masked softmax)")
def sampling_filters(ctx: CheckContext):
    """filtered_probs equals Hugging Face's Temperature/TopK/TopP/MinP warpers within 1e-10; temperature 0
    is greedy (one-hot on the argmax)."""
    V = ctx.randint(20, 60)
    logits = ctx.randn(4, V) * 2
    for settings in _SETTINGS:
        got = ctx.call("filtered_probs", logits, **settings)
        ctx.close(got, _hf_probs(logits, *_full(settings)), atol=1e-10, what=f"filtered_probs {settings}")
    greedy = ctx.call("filtered_probs", logits, temperature=0.0)
    ctx.close(greedy, torch.nn.functional.one_hot(logits.argmax(-1), V).double(), atol=0, what="temperature 0")


@LAB.check(points=2, grades="temperature sampler and sampling entropy (masked softmax)")
def sampler_distribution(ctx: CheckContext):
    """sample draws from the filtered distribution: a chi-square goodness-of-fit test on 20,000 draws per
    setting (p-value >= 1e-4), and never a filtered-out token."""
    V, n = 12, 20_000
    logits = ctx.randn(V) * 1.5
    for settings in _SETTINGS[:4]:
        draws = ctx.run(probe_sample, logits, n, settings, ctx.randint(0, 2**31))
        draws = ctx.tensor(draws, f"sample(..., {settings})", dtype=torch.int64).reshape(-1)
        ctx.expect(draws.numel() == n, f"sample returned {draws.numel()} draws, asked for {n}")
        expected = _hf_probs(logits.unsqueeze(0), *_full(settings))[0]
        ctx.expect(bool((expected[draws] > 0).all()), f"{settings}: drew a token the filters removed")
        counts = torch.bincount(draws, minlength=V).double()
        keep = expected * n >= 5
        obs = torch.cat([counts[keep], counts[~keep].sum(0, keepdim=True)]).numpy()
        exp = torch.cat([expected[keep] * n, (expected[~keep] * n).sum(0, keepdim=True)]).numpy()
        obs, exp = obs[exp > 0], exp[exp > 0]
        p_value = float(stats.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue) if len(obs) > 1 else 1.0
        ctx.expect(p_value >= 1e-4, f"{settings}: samples do not follow the filtered distribution "
                                    f"(chi-square p = {p_value:.2e})")


def _brute_perplexity(model, ids: torch.Tensor, context: int, stride: int) -> float:
    """One model call per scored token, on exactly the context its window gives it."""
    nll, count = 0.0, 0
    with torch.no_grad():
        for begin, end, first in ppl.windows(len(ids), context, stride):
            for t in range(first, end):
                logp = torch.log_softmax(model(ids[begin:t].unsqueeze(0))[0, -1], -1)
                nll -= float(logp[ids[t]])
                count += 1
    return math.exp(nll / count)


@LAB.check(points=3, grades="perplexity on WikiText-2")
def strided_perplexity(ctx: CheckContext):
    """perplexity with sliding windows (context, stride) equals a token-by-token evaluation within 1e-8
    (relative), for overlapping, disjoint and one-window settings."""
    vocab, seed = ctx.randint(10, 40), ctx.randint(0, 2**31)
    model = ToyCausalLM(vocab, seed=seed)
    ids = torch.from_numpy(ctx.rng.integers(0, vocab, size=ctx.randint(40, 60)))
    for context, stride in ((16, 4), (16, 16), (12, 1), (64, 32)):
        got = ctx.number(ctx.run(probe_perplexity, vocab, seed, ids, context, stride), "perplexity")
        ctx.close(got, _brute_perplexity(model, ids, context, stride), atol=0, rtol=1e-8,
                  what=f"perplexity (context {context}, stride {stride})")


# ---------------------------------------------------------------- seeded bugs
def entropy_log2(p):
    return information.entropy(p) / math.log(2)


def kl_reversed(p, q):
    return information.kl_divergence(q, p)


def nll_naive(logits, targets):
    p = torch.exp(logits) / torch.exp(logits).sum(-1, keepdim=True)
    return -torch.log(p.gather(-1, targets.unsqueeze(-1))).mean()


def masked_softmax_large_negative(logits, mask):
    return torch.softmax(logits.masked_fill(~mask, -1e4), -1)


def filtered_top_p_excludes_crossing(logits, temperature=1.0, top_k=None, top_p=None, min_p=None):
    if top_p is not None and top_p < 1.0:
        z = logits / temperature
        sorted_z, order = z.sort(dim=-1, descending=True)
        drop_sorted = sorted_z.softmax(-1).cumsum(-1) > top_p
        drop_sorted[..., 0] = False
        z = z.masked_fill(drop_sorted.scatter(-1, order, drop_sorted), float("-inf"))
        return information.filtered_probs(z * temperature, temperature, top_k, None, min_p)
    return information.filtered_probs(logits, temperature, top_k, top_p, min_p)


def sample_ignores_temperature(logits, num_samples=1, temperature=1.0, top_k=None, top_p=None, min_p=None,
                               generator=None):
    return information.sample(logits, num_samples, 1.0, top_k, top_p, min_p, generator)


def perplexity_disjoint(model, ids, context, stride=None):
    return ppl.perplexity(model, ids, context, context)


LAB.bug("entropy_in_bits", entropy=entropy_log2)
LAB.bug("kl_reversed", kl_divergence=kl_reversed)
LAB.bug("nll_overflows", nll_from_logits=nll_naive)
LAB.bug("mask_by_large_negative", masked_softmax=masked_softmax_large_negative)
LAB.bug("top_p_drops_crossing_token", filtered_probs=filtered_top_p_excludes_crossing)
LAB.bug("sample_ignores_temperature", sample=sample_ignores_temperature)
LAB.bug("perplexity_ignores_stride", perplexity=perplexity_disjoint)


# ---------------------------------------------------------------- deliverable
def _train_toy_lm(ids: torch.Tensor, vocab: int, steps: int, context: int = 32) -> ToyCausalLM:
    from tqdm import tqdm

    model = ToyCausalLM(vocab, d=64, max_len=context, seed=0, dtype=torch.float32)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in tqdm(range(steps), desc="m03: training a toy causal LM", leave=False):
        starts = torch.randint(0, len(ids) - context - 1, (32,), generator=g)
        x = torch.stack([ids[s: s + context] for s in starts])
        y = torch.stack([ids[s + 1: s + context + 1] for s in starts])
        loss = information.nll_from_logits(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def run(profile: str, out: Path) -> tuple[dict, str]:
    from llmlab.data import wikitext
    from llmlab.ngram import NGramLM

    big = profile == "full"
    train, test = wikitext.load_words("valid"), wikitext.load_words("test")
    cut = int(0.9 * len(train))
    ngram_rows = []
    for n in (1, 2, 3):
        t0 = time.perf_counter()
        m = NGramLM(n).fit(train[:cut]).tune(train[cut:] if big else train[cut:cut + 8000])  # quick: 8k words
        m.fit(train)
        ngram_rows.append({"n": n, "smoothing": "interpolated", "test_ppl": m.perplexity(test),
                           "seconds": time.perf_counter() - t0})
        addk = NGramLM(n, "add-k", k=0.01).fit(train)
        ngram_rows.append({"n": n, "smoothing": "add-0.01", "test_ppl": addk.perplexity(test), "seconds": None})
    with figure(out / "ngram_perplexity.png", "WikiText-2 test perplexity of word n-gram LMs") as ax:
        for smoothing, offset in (("interpolated", -0.2), ("add-0.01", 0.2)):
            rows = [r for r in ngram_rows if r["smoothing"] == smoothing]
            ax.bar([r["n"] + offset for r in rows], [r["test_ppl"] for r in rows], width=0.4, label=smoothing)
        ax.set_yscale("log")
        ax.set_xticks([1, 2, 3])
        ax.set_xlabel("order n (trained on WikiText-2 valid)")
        ax.set_ylabel("test perplexity")
        ax.legend()

    # a small causal LM on WikiText-2 word ids, evaluated with several strides
    counts: dict[str, int] = {}
    for w in train:
        counts[w] = counts.get(w, 0) + 1
    itos = sorted(counts, key=counts.get, reverse=True)[:4999] + ["<rare>"]
    stoi = {w: i for i, w in enumerate(itos)}
    encode = lambda words: torch.tensor([stoi.get(w, len(itos) - 1) for w in words])
    model = _train_toy_lm(encode(train), len(itos), steps=1500 if big else 150)
    eval_ids = encode(test[: 20_000 if big else 2_000])
    strides = [32, 16, 8, 4, 2] if big else [32, 16, 8]
    ppl_by_stride = [ppl.perplexity(lambda x: model(x), eval_ids, context=32, stride=s) for s in strides]
    with figure(out / "perplexity_vs_stride.png", "Strided perplexity, context 32 (toy causal LM)") as ax:
        ax.plot(strides, ppl_by_stride, "o-")
        ax.invert_xaxis()
        ax.set_xlabel("stride (smaller: every token sees more context)")
        ax.set_ylabel("perplexity")

    # sampling entropy against temperature, on WikiText-2's real unigram distribution
    logits = torch.log(torch.tensor([counts[w] for w in itos[:-1]], dtype=torch.float64))
    temps = np.logspace(-1.5, 1, 40)
    curves = {name: [float(information.entropy(information.filtered_probs(logits, t, **kw))) for t in temps]
              for name, kw in (("no filter", {}), ("top_k=50", {"top_k": 50}), ("top_p=0.9", {"top_p": 0.9}),
                               ("min_p=0.05", {"min_p": 0.05}))}
    with figure(out / "entropy_vs_temperature.png", "Sampling entropy vs temperature (WikiText-2 unigrams)") as ax:
        for name, ys in curves.items():
            ax.semilogx(temps, ys, label=name)
        ax.axhline(math.log(len(itos) - 1), color="k", ls=":", label="log V (uniform)")
        ax.set_xlabel("temperature")
        ax.set_ylabel("entropy (nats)")
        ax.legend()
    metrics = {"ngram": ngram_rows, "toy_lm_ppl_by_stride": dict(zip(map(str, strides), ppl_by_stride, strict=True)),
               "entropy_at_T1": curves["no filter"][int(np.argmin(np.abs(temps - 1)))]}
    table = "\n".join(f"| {r['n']} | {r['smoothing']} | {r['test_ppl']:.1f} |" for r in ngram_rows)
    report = f"""
## Cross-entropy from likelihood
A model q assigns a sequence x_1..x_N the likelihood prod_t q(x_t | x_<t). Maximising it is minimising the
average negative log-likelihood -1/N sum_t log q(x_t | x_<t), which is the cross-entropy H(p, q) between the
data distribution p and the model, estimated on the sample. Since H(p, q) = H(p) + KL(p || q) and KL >= 0,
the loss is bounded below by the data's entropy and the gap is exactly the KL. Perplexity is exp of it.

## n-gram perplexity on WikiText-2 test (trained on valid: the shared copy has no train split)
| n | smoothing | test perplexity |
|---|---|---|
{table}

## Strided evaluation
Toy causal LM (one attention head, {len(itos)} word types), context 32: perplexity by stride
{", ".join(f"{s}: {v:.1f}" for s, v in zip(strides, ppl_by_stride, strict=True))}. Smaller strides give each
scored token more context (and cost more model calls); how much that lowers perplexity depends on how much
of the longer context the model can use.

![ngram](ngram_perplexity.png)
![stride](perplexity_vs_stride.png)
![entropy](entropy_vs_temperature.png)
"""
    return metrics, report
