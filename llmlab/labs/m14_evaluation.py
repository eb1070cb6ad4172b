"""Lab m14: evaluation and safety math. MMLU's prompt and the log-likelihood scoring of multiple choice as
lm-evaluation-harness runs them, the Renyi DP of the subsampled Gaussian mechanism and its conversion to
(epsilon, delta), and per-example gradient clipping; the deliverable scores the m11 zoo on MMLU against
its perplexity, checks MMLU for 13-gram contamination, and trains a small classifier with DP-SGD at
several noise levels (the privacy/utility curve)."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from scipy import special

from llmlab.evals import harness, mmlu
from llmlab.labs.base import CheckContext, Lab, LabLimits
from llmlab.plots import figure
from llmlab.privacy import accountant

LAB = Lab("m14", module=__name__, reference="llmlab.privacy.accountant",
          spec=["llmlab.evals.mmlu:prompt", "llmlab.evals.harness:continuation_logprob", "rdp_step", "rdp_to_dp",
                "llmlab.privacy.dpsgd:clip_per_sample"],
          limits=LabLimits(call_timeout_s=30, total_timeout_s=180, memory_mb=2048),
          own_work="the MMLU prompt, log-softmax scoring, the subsampled Gaussian's RDP, its conversion and "
                   "per-example clipping, from Python, numpy, scipy.special and tensor arithmetic",
          forbidden=("opacus", "dp_accounting", "lm_eval", "tensorflow_privacy"))

WORDS = "the of a cell which energy law market state value force river number system king".split()


def _sentence(ctx: CheckContext, n: int) -> str:
    return " ".join(ctx.choice(WORDS) for _ in range(n))


@LAB.check(points=2, grades="an eval-harness runner over an MMLU subset")
def prompt_is_lm_evals(ctx: CheckContext):
    """prompt(subject, question, choices, shots) is lm-evaluation-harness's MMLU context, character for
    character: the description line naming the subject (underscores as spaces), each solved example as its
    question (stripped), lettered choices, "Answer:" and " <letter>" followed by a blank line, then the
    question without its answer. 0 to 5 shots; questions with stray whitespace."""
    want = ("The following are multiple choice questions (with answers) about college physics.\n\nWhy?\nA. a\nB. b"
            "\nC. c\nD. d\nAnswer: C\n\nHow?\nA. e\nB. f\nC. g\nD. h\nAnswer:")
    got = ctx.call("prompt", "college_physics", " How?\n", ["e", "f", "g", "h"], [(" Why? ", ["a", "b", "c", "d"], 2)])
    ctx.expect(got == want, f"the prompt should be {want!r}, not {got!r}")
    for _ in range(4):
        subject = ctx.choice(list(mmlu.SUBJECTS))
        shots = [(_sentence(ctx, ctx.randint(3, 9)) + "?", [_sentence(ctx, 2) for _ in range(4)], ctx.randint(0, 4))
                 for _ in range(ctx.randint(0, 6))]
        question, choices = "\n " + _sentence(ctx, ctx.randint(3, 9)) + "? ", [_sentence(ctx, 3) for _ in range(4)]
        got = ctx.call("prompt", subject, question, choices, shots)
        want = mmlu.prompt(subject, question, choices, shots)
        ctx.expect(got == want, f"{len(shots)}-shot prompt for {subject}: expected {want!r}, got {got!r}")


@LAB.check(points=2, grades="an eval-harness runner over an MMLU subset")
def continuation_loglikelihood(ctx: CheckContext):
    """continuation_logprob(logits (T, V), continuation (n,)) returns (the sum of the continuation's
    log-softmax probabilities, read from the last n rows, and whether each token is its row's argmax):
    against scipy.special.log_softmax in float64 within 1e-9, for float32 and float64 logits, one-token and
    longer continuations, greedy and not."""
    for trial in range(8):
        T, V, n = ctx.randint(4, 12), ctx.randint(5, 40), ctx.randint(1, 4)
        logits = ctx.randn(T, V) * 3
        cont = torch.from_numpy(ctx.rng.integers(0, V, n))
        if trial % 2:  # make the continuation the argmax of its rows
            logits[T - n + torch.arange(n), cont] += 50
        if trial % 3 == 2:
            logits = logits.float()
        ll, greedy = ctx.call("continuation_logprob", logits, cont)
        lp = special.log_softmax(logits.double().numpy()[T - n:], axis=-1)
        want = float(lp[np.arange(n), cont.numpy()].sum())
        ctx.close(ctx.number(ll, f"trial {trial}: log-likelihood"), want, atol=1e-9, rtol=1e-12,
                  what=f"trial {trial}: log-likelihood of {n} tokens")
        want_greedy = bool((lp.argmax(-1) == cont.numpy()).all())
        ctx.expect(ctx.boolean(greedy, "is_greedy") == want_greedy, f"trial {trial}: is_greedy should be {want_greedy}")


def _rdp_binomial(q: float, sigma: float, alpha: int) -> float:
    """The subsampled Gaussian's RDP at an integer order: log of the binomial expansion of
    E[(p/mu0)^alpha] over the mixture (Mironov, Talwar and Zhang 2019), over alpha - 1 (logsumexp, float64)."""
    k = np.arange(alpha + 1)
    terms = special.gammaln(alpha + 1) - special.gammaln(k + 1) - special.gammaln(alpha - k + 1) \
        + k * np.log(q) + (alpha - k) * np.log1p(-q) + (k * k - k) / (2 * sigma**2)
    return float(special.logsumexp(terms)) / (alpha - 1)


@LAB.check(points=3, grades="a DP noise-budget estimator")
def rdp_of_the_subsampled_gaussian(ctx: CheckContext):
    """rdp_step(sample_rate, noise, order) at integer orders 2-64 equals the binomial expansion (1e-7
    relative); without subsampling (q = 1) it is order / (2 noise^2), with q = 0 it is 0."""
    for _ in range(10):
        q, sigma, alpha = 10 ** ctx.rng.uniform(-3, -0.3), ctx.rng.uniform(0.5, 4.0), ctx.randint(2, 65)
        got = ctx.number(ctx.call("rdp_step", q, sigma, alpha), f"rdp_step({q:.4g}, {sigma:.3g}, {alpha})")
        ctx.close(got, _rdp_binomial(q, sigma, alpha), atol=0, rtol=1e-7, what=f"RDP at q={q:.4g}, sigma={sigma:.3g}, "
                  f"order {alpha}")
    sigma, alpha = ctx.rng.uniform(0.5, 4.0), ctx.randint(2, 40)
    ctx.close(ctx.number(ctx.call("rdp_step", 1.0, sigma, alpha), "q = 1"), alpha / (2 * sigma**2), atol=1e-12,
              rtol=1e-12, what="RDP without subsampling")
    ctx.close(ctx.number(ctx.call("rdp_step", 0.0, sigma, alpha), "q = 0"), 0.0, atol=1e-12, what="RDP at q = 0")


@LAB.check(points=2, grades="a DP noise-budget estimator")
def rdp_converts_to_epsilon(ctx: CheckContext):
    """rdp_to_dp(orders, rdp, delta) returns (epsilon, the order that attains it) with the conversion of
    Balle et al. 2020 (Opacus's): eps = min over orders of rdp + log((a-1)/a) - (log delta + log a)/(a-1),
    at least 0 (1e-10)."""
    for _ in range(4):
        orders = np.array(sorted(set(np.round(ctx.rng.uniform(1.1, 64, 30), 2))))
        rdp = ctx.rng.uniform(0.01, 3) * orders ** ctx.rng.uniform(0.5, 1.5)
        delta = 10 ** ctx.rng.uniform(-9, -3)
        eps = rdp + np.log((orders - 1) / orders) - (np.log(delta) + np.log(orders)) / (orders - 1)
        best = int(np.argmin(eps))
        got_eps, got_order = ctx.call("rdp_to_dp", orders.tolist(), rdp.tolist(), delta)
        ctx.close(ctx.number(got_eps, "epsilon"), max(eps[best], 0.0), atol=1e-10, rtol=1e-10, what="epsilon")
        ctx.close(ctx.number(got_order, "order"), orders[best], atol=1e-12, what="the order attaining epsilon")


def probe_epsilon(sub, q, sigma, steps, delta, orders):
    """DP-SGD's epsilon from the learner's own accountant: steps x rdp_step at each order, then rdp_to_dp."""
    return sub.rdp_to_dp(orders, [steps * sub.rdp_step(q, sigma, a) for a in orders], delta)


@LAB.check(points=1, grades="a DP noise-budget estimator")
def epsilon_of_abadi_mnist(ctx: CheckContext):
    """The learner's accountant end to end, at Abadi et al.'s MNIST setting (q = 256/60000, noise 1.1,
    60 epochs, delta 1e-5) and one random setting, over integer orders 2-64: the epsilon llmlab's
    accountant gives (Opacus's within 1e-6, tested), within 1e-6 relative."""
    orders = list(range(2, 65))
    settings = [(256 / 60000, 1.1, 14_062, 1e-5),
                (ctx.rng.uniform(0.001, 0.05), ctx.rng.uniform(0.7, 3), ctx.randint(100, 5000), 1e-6)]
    for q, sigma, steps, delta in settings:
        got = ctx.run(probe_epsilon, q, sigma, steps, delta, orders)
        want = accountant.epsilon(sigma, q, steps, delta, orders)[0]
        ctx.close(ctx.number(got[0], "epsilon"), want, atol=0, rtol=1e-6,
                  what=f"epsilon at q={q:.4g}, noise {sigma:.3g}, {steps} steps")


@LAB.check(points=2, grades="differential privacy")
def clipping_per_example(ctx: CheckContext):
    """clip_per_sample(grads, clip) scales each example's whole gradient (all parameters together) to L2
    norm at most clip and returns it with the norms before clipping: against the explicit per-example loop
    (1e-5 relative; a small constant in the denominator is allowed), examples under the bound unchanged."""
    B = ctx.randint(4, 9)
    grads = {"w": ctx.randn(B, 3, 4), "b": ctx.randn(B, 4), "v": ctx.randn(B, 2)}
    for g in grads.values():
        g[0] *= 0.01  # one example well under the bound
    clip = float(ctx.rng.uniform(0.5, 3.0))
    clipped, norms = ctx.call("clip_per_sample", grads, clip)
    for i in range(B):
        norm = math.sqrt(sum(float(g[i].pow(2).sum()) for g in grads.values()))
        ctx.close(ctx.number(norms[i], "norm"), norm, atol=1e-9, rtol=1e-9, what=f"example {i}'s norm")
        for name, g in grads.items():
            got = ctx.tensor(clipped[name], f"clipped {name}", shape=tuple(g.shape))[i]
            ctx.close(got, g[i] * min(1.0, clip / norm), atol=1e-9, rtol=1e-5, what=f"example {i}'s {name}")


# --- seeded bugs ---------------------------------------------------------------------------------------------
def prompt_without_the_space(subject, question, choices, shots=()):
    return mmlu.prompt(subject, question, choices, shots).replace("Answer: ", "Answer:")


def prompt_without_the_description(subject, question, choices, shots=()):
    return mmlu.prompt(subject, question, choices, shots).removeprefix(mmlu.description(subject))


def logprob_off_by_one(logits, continuation):
    return harness.continuation_logprob(logits[:-1], continuation)  # the rows one position early


def logprob_of_raw_logits(logits, continuation):
    n = len(continuation)
    rows = logits[len(logits) - n:].double()
    return float(rows.gather(-1, continuation[:, None].long()).sum()), bool((rows.argmax(-1) == continuation).all())


def rdp_ignores_subsampling(sample_rate, noise, order):
    return order / (2 * noise**2)


def rdp_small_q_approximation(sample_rate, noise, order):
    return 2 * sample_rate**2 * order / noise**2  # the asymptotic bound, not the RDP


def epsilon_classic_conversion(orders, rdp_values, delta):
    a, r = np.asarray(orders, dtype=float), np.asarray(rdp_values, dtype=float)
    eps = r + math.log(1 / delta) / (a - 1)  # Mironov 2017: looser than the conversion asked for
    return float(eps.min()), float(a[int(eps.argmin())])


def clip_each_parameter(grads, clip):
    norms = torch.sqrt(sum(g.flatten(1).pow(2).sum(1) for g in grads.values()))
    out = {}
    for k, g in grads.items():
        own = g.flatten(1).norm(dim=1).clamp(min=1e-12)
        out[k] = g * torch.clamp(clip / own, max=1.0).view(-1, *([1] * (g.dim() - 1)))
    return out, norms


def clip_the_batch(grads, clip):
    norms = torch.sqrt(sum(g.flatten(1).pow(2).sum(1) for g in grads.values()))
    total = torch.sqrt(norms.pow(2).sum())
    return {k: g * min(1.0, clip / float(total)) for k, g in grads.items()}, norms


LAB.bug("prompt_without_space", prompt=prompt_without_the_space)
LAB.bug("prompt_without_description", prompt=prompt_without_the_description)
LAB.bug("logprob_off_by_one", continuation_logprob=logprob_off_by_one)
LAB.bug("logprob_unnormalized", continuation_logprob=logprob_of_raw_logits)
LAB.bug("rdp_without_subsampling", rdp_step=rdp_ignores_subsampling)
LAB.bug("rdp_small_q_approximation", rdp_step=rdp_small_q_approximation)
LAB.bug("epsilon_classic_conversion", rdp_to_dp=epsilon_classic_conversion)
LAB.bug("clip_each_parameter", clip_per_sample=clip_each_parameter)
LAB.bug("clip_the_batch", clip_per_sample=clip_the_batch)


# --- deliverable ---------------------------------------------------------------------------------------------
def _zoo_on_mmlu(profile: str, out: Path) -> tuple[dict, str, list[dict]]:
    """The m11 zoo (character-level on Tiny Shakespeare), each model's validation perplexity against its
    MMLU accuracy (0-shot; quick: the first 10 questions of each subject)."""
    from llmlab.data import shakespeare
    from llmlab.scaling import zoo

    tok, train, val = shakespeare.char_tokens()
    cfg = zoo.FULL if profile == "full" else replace(zoo.QUICK, shapes=zoo.QUICK.shapes[::2], steps=200)
    limit = None if profile == "full" else 10
    rows, answers = [], []

    def score(model, record):
        lm = harness.TorchLM(model, tok.encode, model.config.context, batch_size=64, progress=False)
        result = mmlu.evaluate(lm.loglikelihood, limit=limit)
        answers[:] = np.bincount([r["answer"] for r in result["questions"]], minlength=4).tolist()
        rows.append({"N": record["N"], "d_model": record["d_model"], "val_loss": record["val_loss"],
                     "perplexity": math.exp(record["val_loss"]), "mmlu": result["mmlu"]["acc"],
                     "questions": result["mmlu"]["n"],
                     "categories": {c: v["acc"] for c, v in result["categories"].items()},
                     "letters": np.bincount([r["prediction"] for r in result["questions"]], minlength=4).tolist(),
                     "correct": [r["prediction"] == r["answer"] for r in result["questions"]]})

    zoo.train_zoo(cfg, train, val, tok.vocab_size, on_model=score)
    n = rows[0]["questions"]
    half = 1.96 * math.sqrt(0.25 * 0.75 / n)
    title = f"The m11 zoo: perplexity against MMLU ({n:,} questions, 0-shot)"
    with figure(out / "perplexity_vs_mmlu.png", title) as ax:
        ax.axhspan(0.25 - half, 0.25 + half, color="gray", alpha=0.2, label="chance, 95% band")
        ax.plot([r["perplexity"] for r in rows], [r["mmlu"] for r in rows], "o-")
        for r in rows:
            ax.annotate(f"N={r['N'] / 1e6:.2f}M", (r["perplexity"], r["mmlu"]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
        ax.set_xlabel("validation perplexity (per character, Tiny Shakespeare)")
        ax.set_ylabel("MMLU accuracy")
        ax.set_ylim(0, 0.6)
        ax.legend(fontsize=8)
    table = "\n".join(f"| {r['N'] / 1e6:.3f}M | {r['perplexity']:.2f} | {r['mmlu']:.3f} | "
                      f"{' / '.join(str(c) for c in r['letters'])} |" for r in rows)
    report = f"""
## Perplexity against MMLU across the m11 zoo
{len(rows)} character-level models trained on Tiny Shakespeare (context {cfg.context}), each scored on MMLU by
the harness (`llmlab eval mmlu`'s, equal to lm-evaluation-harness's) on {n:,} questions, 0-shot. The
context window holds only the end of each prompt.

| N (non-embedding) | val perplexity | MMLU | predicted A / B / C / D |
|---|---|---|---|
{table}

The answers are A / B / C / D {' / '.join(map(str, answers))} times: a model that always picks one letter
scores that letter's share.

Chance is 0.25 (95% band {0.25 - half:.3f}-{0.25 + half:.3f} at this many questions): lower perplexity on
Shakespeare buys nothing on MMLU at this scale, as expected of models that never saw the subjects. The
perplexity-accuracy link the course discusses appears only at scales (and on corpora) far beyond these.
"""
    return {"zoo": [{k: v for k, v in r.items() if k != "correct"} for r in rows]}, report, rows


def _contamination(profile: str, zoo_rows: list[dict]) -> tuple[dict, str]:
    """GPT-3's 13-gram check of MMLU's test questions against the zoo's corpus and against Wikipedia."""
    from llmlab.data import shakespeare, wikipedia
    from llmlab.evals.contamination import NgramIndex, report

    limit = None if profile == "full" else 10
    questions = [q for s in mmlu.SUBJECTS for q in mmlu.load(s)[:limit]]
    items = [q.question + " " + " ".join(q.choices) for q in questions]
    n_articles = None if profile == "full" else 400
    corpora = {"Tiny Shakespeare (the zoo's corpus)": NgramIndex([shakespeare.load_text()]),
               f"Wikipedia ({n_articles or 'all 3,957'} articles)":
                   NgramIndex(a["text"] for a in wikipedia.articles(limit=n_articles))}
    best = max(zoo_rows, key=lambda r: r["N"])
    results = {name: report(items, best["correct"], index) for name, index in corpora.items()}
    wiki = list(results.values())[1]
    examples = [f"{questions[i].subject}: {questions[i].question[:100]}" for i in wiki["dirty_items"][:3]]
    rows = "\n".join(f"| {name} | {r['dirty']} / {r['n']} ({r['dirty_fraction']:.1%}) | "
                     f"{r['acc_clean'] if r['acc_clean'] is None else round(r['acc_clean'], 3)} | "
                     f"{r['acc_dirty'] if r['acc_dirty'] is None else round(r['acc_dirty'], 3)} |"
                     for name, r in results.items())
    text = f"""
## Contamination (13-gram overlap, GPT-3's method)
MMLU test questions (question and choices) with any 13-word sequence in a corpus are *dirty*; accuracy of the
largest zoo model on clean and dirty items:

| corpus | dirty questions | accuracy, clean | accuracy, dirty |
|---|---|---|---|
{rows}

Examples of questions that overlap Wikipedia: {'; '.join(examples) or 'none'}.
"""
    return {"contamination": results}, text


def _privacy(profile: str, out: Path) -> tuple[dict, str]:
    from llmlab.privacy import experiment

    cfg = experiment.DPConfig() if profile == "full" else experiment.DPConfig(hidden=16, epochs=1.5,
                                                                              noises=(0.7, 1.2, 3.0))
    rows = experiment.sweep(cfg)
    experiment.plot(rows, out / "privacy_utility.png")
    standard = {name: accountant.epsilon(sigma, q, steps, 1e-5)[0] for name, (sigma, q, steps) in {
        "Abadi et al. MNIST (q 256/60000, noise 1.1, 60 epochs)": (1.1, 256 / 60000, 14_062),
        "q 0.01, noise 1.0, 10,000 steps": (1.0, 0.01, 10_000),
        "q 0.001, noise 0.8, 50,000 steps": (0.8, 0.001, 50_000)}.items()}
    table = "\n".join(f"| {'none' if r['noise'] is None else r['noise']} | {r['epsilon']:.2f} | {r['auc']:.3f} | "
                      f"{r['accuracy']:.3f} | {r['clipped_fraction']:.0%} |" for r in rows)
    std = "\n".join(f"| {name} | {eps:.3f} |" for name, eps in standard.items())
    text = f"""
## Differential privacy: DP-SGD on a small toxicity classifier
A two-layer network over hashed n-gram features ({cfg.buckets} buckets, {cfg.hidden} hidden units) trained on
{rows[0]['steps'] * cfg.expected_batch:,} expected examples ({cfg.epochs:g} epochs, Poisson rate
{rows[0]['sample_rate']:.4f}, clip {cfg.clip:g}), held-out ROC AUC and accuracy; epsilon from the RDP
accountant at delta {cfg.delta:g}.

| noise multiplier | epsilon | AUC | accuracy | examples clipped |
|---|---|---|---|---|
{table}

The majority class alone is right {rows[0]['majority_accuracy']:.3f} of the time: accuracy at the 0.5 threshold
says little here; the AUC (the ranking) shows what privacy costs.

Epsilon of standard settings (delta 1e-5; equal to Opacus's accountant within 1e-6, tested):

| setting | epsilon |
|---|---|
{std}
"""
    return {"privacy_utility": rows, "standard_epsilons": standard}, text


def run(profile: str, out: Path) -> tuple[dict, str]:
    torch.manual_seed(0)
    zoo_metrics, zoo_report, zoo_rows = _zoo_on_mmlu(profile, out)
    cont_metrics, cont_report = _contamination(profile, zoo_rows)
    dp_metrics, dp_report = _privacy(profile, out)
    return {**zoo_metrics, **cont_metrics, **dp_metrics}, zoo_report + cont_report + dp_report
