"""Lab m20's deliverable: a model trained on Ray Train, audited and documented.

TinyStories (its train and validation heads) is tokenized by a byte-level BPE into token shards; a small
Llama-style LM is pretrained on them with DDP on Ray Train (``llmlab.distributed.pretrain``: the run's
summary records its data sources, parameters, FLOPs per token, hardware and time). The audit scores it on
WikiText-2 (per-word perplexity), MMLU, StereoSet, CrowS-Pairs and the toxicity of its generations (a toxicity
classifier trained here, held out against TF-IDF + logistic regression), and its model card is generated
from all of that (``llmlab card``) and validated.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from llmlab.governance import audit, card
from llmlab.plots import figure

SOURCES = ("tinystories/tinystories_train_head.txt", "tinystories/tinystories_valid_head.txt")


@dataclass(frozen=True)
class GovernanceConfig:
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    context: int = 128
    steps: int = 80  # validation loss 7.61 -> 4.49 nats/token (4.33 at 100 steps, 20 s more of two cores)
    vocab_size: int = 2048
    workers: int = 2
    audit: audit.AuditConfig = field(default_factory=lambda: audit.QUICK)
    seed: int = 0


QUICK = GovernanceConfig()
# ran in 17.6 min on 2 CPU cores: 1,000 DDP steps in 710 s (5,800 tokens/s; validation loss 7.55 -> 2.86), then
# the full audit in 308 s (WikiText-2 73 s, all 14,042 MMLU questions 164 s, StereoSet 20 s, CrowS-Pairs 5 s,
# 100 prompts x 25 continuations 45 s)
FULL = GovernanceConfig(d_model=192, n_layers=4, n_heads=6, context=256, steps=1000, audit=audit.FULL)


def stories() -> list[str]:
    """The TinyStories heads as documents: their paragraphs (a blank line apart)."""
    from llmlab.data import resolve

    text = "\n\n".join(resolve(s).read_text(encoding="utf-8") for s in SOURCES)
    return [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]


def train(cfg: GovernanceConfig, out: Path) -> dict:
    """Shard the stories and pretrain on them on Ray Train; ``out/run`` is the run folder a card reads."""
    from llmlab.distributed.pretrain import PretrainConfig, pretrain
    from llmlab.pipeline.run import PipelineConfig, tokenize_and_shard

    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    tokenize_and_shard(stories(), data, PipelineConfig(sources=SOURCES, vocab_size=cfg.vocab_size,
                                                       min_train_shards=cfg.workers))
    return pretrain(PretrainConfig(d_model=cfg.d_model, n_layers=cfg.n_layers, n_heads=cfg.n_heads,
                                   context=cfg.context, data=str(data), steps=cfg.steps, lr=3e-3, min_lr=3e-4,
                                   warmup=20, eval_every=max(10, cfg.steps // 10), engine="ddp", zero_stage=0,
                                   bf16=False, activation_checkpointing=False, workers=cfg.workers,
                                   cpus_per_worker=0.5, seed=cfg.seed, name="m20-tinystories"), out / "run")


def run(cfg: GovernanceConfig, out: Path) -> tuple[dict, str]:
    t0 = time.perf_counter()
    summary = train(cfg, out)
    evals = audit.evaluate(card.model_folder(out / "run"), cfg.audit, progress=False)
    evals["validation"] = {"data": "TinyStories (held-out paragraphs)",
                           "perplexity": math.exp(summary["history"][-1]["val_loss"])}
    audit.write(evals, out / "run" / "evals.json")
    card_path, problems = card.write(out / "run", evals, name="llmlab-tinystories-m20")
    meta, _ = card.split(card_path.read_text())
    m = {"config": asdict(cfg), "params": summary["params"], "history": summary["history"],
         "train_seconds": summary["seconds"]["train"], "evals": evals, "headline": audit.headline(evals),
         "card": {"path": str(card_path.relative_to(out)), "problems": problems, "license": meta["license"],
                  "datasets": meta["datasets"], "results": len(meta["model-index"][0]["results"])}}
    plot(m, out)
    m["seconds"] = time.perf_counter() - t0
    return m, report(m)


def plot(m: dict, out: Path) -> None:
    ev = m["evals"]
    types = [k for k in ("gender", "profession", "race", "religion") if k in ev["stereoset"]]
    crows = sorted(k for k in ev["crows_pairs"] if k != "overall")
    with figure(out / "bias.png", "Bias of the model: StereoSet and CrowS-Pairs", ncols=2) as (a, b):
        a.bar(types, [ev["stereoset"][k]["ss"] for k in types], color="tab:orange", label="stereotype score")
        a.plot(types, [ev["stereoset"][k]["lms"] for k in types], "ks", label="language modeling score")
        a.axhline(50, color="k", ls="--", lw=1, label="unbiased (SS 50)")
        a.set_ylabel("StereoSet (dev), per bias type")
        a.legend(fontsize=7)
        b.barh(crows, [100 * ev["crows_pairs"][k]["pct_stereotype"] for k in crows], color="tab:purple")
        b.axvline(50, color="k", ls="--", lw=1)
        b.set_xlabel("CrowS-Pairs: % of pairs where the stereotype is likelier")
        b.tick_params(axis="y", labelsize=7)
    tc, tg = ev["toxicity_classifier"], ev["toxicity"]
    with figure(out / "toxicity.png", "A toxicity classifier, and the toxicity of the model's generations",
                ncols=2) as (a, b):
        names = ["llmlab", "tfidf_lr", "tfidf_lr_balanced", "majority"]
        a.bar(["llmlab\n(hashed n-grams)", "TF-IDF + LR", "TF-IDF + LR\n(balanced)", "majority"],
              [tc[n]["macro_f1"] for n in names], color=["tab:green", "tab:gray", "tab:gray", "lightgray"])
        a.set_ylabel(f"held-out macro F1 ({tc['test']:,} tweets)")
        a.set_ylim(0, 1)
        a.tick_params(axis="x", labelsize=7)
        groups = [g for g in ("non-toxic", "toxic") if g in tg]
        labels = [f"continuations of\n{g} prompts" for g in groups] + ["clean TinyStories\n(the judge's floor)"]
        b.bar(labels, [tg[g]["toxic_rate"] for g in groups] + [tg["clean_reference"]["toxic_rate"]],
              color=["tab:blue"] * len(groups) + ["lightgray"])
        b.plot(labels[:len(groups)], [tg[g]["prompt_toxicity"] for g in groups], "rv", label="the prompts' mean score")
        b.set_ylabel(f"share called toxic (score >= 0.5; k = {tg['overall']['k']} per prompt)")
        b.tick_params(axis="x", labelsize=7)
        b.legend(fontsize=7)


def _row(key: str, label: str, value: float, fmt: str = "{:.3f}") -> str:
    published = audit.GPT2_SMALL.get(key)
    ref = f"{fmt.format(published[0])} ({published[1]})" if published else "no comparable number"
    return f"| {label} | {fmt.format(value)} | {ref} |"


def report(m: dict) -> str:
    h, ev, c = m["headline"], m["evals"], m["card"]
    tc, tg = ev["toxicity_classifier"], ev["toxicity"]
    rows = "\n".join([
        _row("wikitext2_word_perplexity", "WikiText-2 test, perplexity per word", h["wikitext2_word_perplexity"],
             "{:.1f}"),
        _row("mmlu_accuracy", f"MMLU accuracy ({ev['mmlu']['questions']:,} questions, {ev['mmlu']['shots']}-shot)",
             h["mmlu_accuracy"]),
        _row("stereoset_lms", "StereoSet LMS", h["stereoset_lms"], "{:.1f}"),
        _row("stereoset_ss", "StereoSet SS (50 = unbiased)", h["stereoset_ss"], "{:.1f}"),
        _row("stereoset_icat", "StereoSet ICAT", h["stereoset_icat"], "{:.1f}"),
        _row("crows_pct_stereotype", "CrowS-Pairs percent stereotype", h["crows_pct_stereotype"]),
        _row("expected_max_toxicity", "expected maximum toxicity", h["expected_max_toxicity"]),
        _row("toxicity_probability", "toxicity probability", h["toxicity_probability"])])
    classifiers = "\n".join(
        f"| {label} | {tc[k]['macro_f1']:.3f} | {tc[k]['accuracy']:.3f} | {tc[k]['auc']:.3f} |"
        for k, label in (("llmlab", "llmlab (hashed word and character n-grams, L-BFGS)"),
                         ("tfidf_lr", "TF-IDF + logistic regression (scikit-learn)"),
                         ("tfidf_lr_balanced", "the same, balanced class weights")))
    validity = "valid" if not c["problems"] else f"INVALID: {', '.join(c['problems'])}"
    return f"""
A {m['params'] / 1e6:.2f}M-parameter Llama-style LM pretrained on TinyStories with DDP on Ray Train
({m['config']['steps']} steps, {m['train_seconds']:.0f} s, validation loss {m['history'][0]['val_loss']:.2f} ->
{m['history'][-1]['val_loss']:.2f} nats/token, perplexity {ev['validation']['perplexity']:.1f} per token),
audited, and documented by a generated model card. It knows children's stories only: Wikipedia is foreign
to it (the WikiText-2 perplexity below), and MMLU is at chance.

## Evaluations, next to GPT-2 small as published
| metric | this model | GPT-2 small |
|---|---|---|
{rows}

The GPT-2 numbers come from other preprocessing and splits (StereoSet's test set; a detokenized WikiText-2),
so they place the model, they do not rank it to the decimal. StereoSet here is the dev set (4,229 examples),
WikiText-2 the tokenized test file (first {ev['wikitext2']['chars']:,} characters).

## The toxicity classifier
Held out on {tc['test']:,} of Davidson et al.'s tweets ({100 * tc['positive_rate']:.0f}% hateful or offensive):

| classifier | macro F1 | accuracy | AUC |
|---|---|---|---|
{classifiers}
| majority class | {tc['majority']['macro_f1']:.3f} | {tc['majority']['accuracy']:.3f} | |

Generations: {tg['overall']['prompts']} prompts cut from held-out tweets, {tg['overall']['k']} continuations each
(top-p 0.9, {ev['config']['max_tokens']} tokens): {100 * tg['overall']['toxic_rate']:.1f}% of the continuations
are called toxic; expected max toxicity {tg.get('toxic', {}).get('expected_max_toxicity', float('nan')):.3f} from
toxic prompts, {tg.get('non-toxic', {}).get('expected_max_toxicity', float('nan')):.3f} from the others. The judge
calls {100 * tg['clean_reference']['toxic_rate']:.1f}% of clean TinyStories snippets of the same length toxic: its
false-positive floor, trained as it is on tweets. Read the generations' numbers against that floor: at that
rate, {tg['overall']['k']} clean continuations of a prompt hold one called toxic with probability
{1 - (1 - tg['clean_reference']['toxic_rate']) ** tg['overall']['k']:.2f}, against the measured toxicity probability
{tg['overall']['toxicity_probability']:.2f}.

![bias](bias.png)
![toxicity](toxicity.png)

## The model card
`{c['path']}`, written by `llmlab card` from the run's metadata: license **{c['license']}** (inherited from
{', '.join(c['datasets'])}), {c['results']} model-index results; {validity}.
"""
