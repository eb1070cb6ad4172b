"""A model's evaluations for its card: perplexity (WikiText-2 test, per word), MMLU accuracy (the eval
harness), StereoSet and CrowS-Pairs (``bias``) and the toxicity of its generations (``toxicity``), for any
model folder llmlab serves; and those results as the Hub's ``model-index`` entries, next to published GPT-2
small values where they exist.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from llmlab.governance import bias
from llmlab.governance import toxicity as tox


@dataclass(frozen=True)
class AuditConfig:
    wikitext_chars: int | None = None  # the first characters of WikiText-2 test (None: all of it)
    mmlu_per_subject: int | None = None  # questions per subject (None: all 14,042)
    mmlu_shots: int = 0
    stereoset_limit: int | None = None  # examples (None: all 4,229 of the dev set)
    crows_limit: int | None = None  # pairs (None: all 1,508)
    toxicity_prompts: int = 100
    generations: int = 25  # continuations per prompt (RealToxicityPrompts' k)
    max_tokens: int = 20
    batch_size: int = 16
    seed: int = 0


QUICK = AuditConfig(wikitext_chars=100_000, mmlu_per_subject=10, toxicity_prompts=60, generations=5)
FULL = AuditConfig()

# GPT-2 small (124M) as published, for comparison; None where no comparable number was published
GPT2_SMALL = {
    "wikitext2_word_perplexity": (29.41, "Radford et al. 2019, Table 3 (zero-shot, detokenized WikiText-2 test)"),
    "mmlu_accuracy": (0.258, "Open LLM Leaderboard, 5-shot (chance is 0.25)"),
    "stereoset_lms": (83.6, "Nadeem et al. 2021, StereoSet test set"),
    "stereoset_ss": (56.4, "Nadeem et al. 2021, StereoSet test set"),
    "stereoset_icat": (73.0, "Nadeem et al. 2021, StereoSet test set"),
    "crows_pct_stereotype": (0.594, "BigScience evaluation PR #70: GPT-2, sentence log-likelihoods"),
}


def wikitext_perplexity(model, encode, context: int, chars: int | None = None) -> dict:
    """Per-word perplexity of WikiText-2 test: the tokens' total negative log-likelihood (strided windows of
    ``context``) over the file's word count (whitespace tokens plus one end-of-line per line, the official
    count), so models with different tokenizers compare."""
    import torch

    from llmlab.data import wikitext
    from llmlab.evals.perplexity import perplexity

    text = wikitext.load_text("test")[:chars]
    ids = torch.tensor(encode(text))
    words = sum(len(line.split()) + 1 for line in text.splitlines())
    token_ppl = perplexity(model, ids, context)
    nll = math.log(token_ppl) * (len(ids) - 1)
    return {"word_perplexity": math.exp(nll / words), "token_perplexity": token_ppl, "tokens": len(ids),
            "words": words, "chars": len(text)}


def evaluate(model_dir, cfg: AuditConfig = QUICK, classifier=None, progress: bool = True) -> dict:
    """Every evaluation of the card, with the time each took. ``classifier``: a trained toxicity classifier
    (default: ``toxicity.compare``'s, trained on the held-out split's complement: its metrics come along)."""
    from llmlab.evals import harness, mmlu
    from llmlab.inference import Engine
    from llmlab.tokenization import model_tokenizer

    timings, t = {}, time.perf_counter()
    lm = harness.from_folder(model_dir, batch_size=cfg.batch_size, progress=progress)
    out = {"config": asdict(cfg)}
    out["wikitext2"] = wikitext_perplexity(lm.model, lm.encode, lm.max_length, cfg.wikitext_chars)
    timings["wikitext2"], t = time.perf_counter() - t, time.perf_counter()
    result = mmlu.evaluate(lm.loglikelihood, None, cfg.mmlu_shots, cfg.mmlu_per_subject)  # all 57 subjects
    out["mmlu"] = {"accuracy": result["mmlu"]["acc"], "questions": result["mmlu"]["n"], "shots": cfg.mmlu_shots,
                   "categories": {c: v["acc"] for c, v in result["categories"].items()}}
    timings["mmlu"], t = time.perf_counter() - t, time.perf_counter()
    examples = bias.stereoset()[:cfg.stereoset_limit]
    out["stereoset"] = bias.stereoset_scores(examples, bias.score_stereoset(lm, examples))
    timings["stereoset"], t = time.perf_counter() - t, time.perf_counter()
    pairs = bias.crows_pairs()[:cfg.crows_limit]
    out["crows_pairs"] = bias.crows_pairs_scores(pairs, *bias.score_crows_pairs(lm, pairs))
    timings["crows_pairs"], t = time.perf_counter() - t, time.perf_counter()
    if classifier is None:
        classifier, out["toxicity_classifier"] = tox.compare(seed=cfg.seed)
    engine = Engine(lm.model, model_tokenizer(model_dir), max_batch=32)  # the harness's model, loaded once
    out["toxicity"] = tox.audit_generations(engine, classifier, tox.prompts(cfg.toxicity_prompts, seed=cfg.seed),
                                            cfg.generations, max_tokens=cfg.max_tokens, seed=cfg.seed)
    timings["toxicity"] = time.perf_counter() - t
    out["seconds"] = timings
    return out


def headline(evals: dict) -> dict:
    """The numbers a card and a comparison table show, under GPT2_SMALL's keys."""
    s = evals["stereoset"]["overall"]
    return {"wikitext2_word_perplexity": evals["wikitext2"]["word_perplexity"],
            "mmlu_accuracy": evals["mmlu"]["accuracy"], "stereoset_lms": s["lms"], "stereoset_ss": s["ss"],
            "stereoset_icat": s["icat"], "crows_pct_stereotype": evals["crows_pairs"]["overall"]["pct_stereotype"],
            "expected_max_toxicity": evals["toxicity"]["overall"]["expected_max_toxicity"],
            "toxicity_probability": evals["toxicity"]["overall"]["toxicity_probability"]}


def eval_results(evals: dict) -> list:
    """The evaluations as huggingface_hub ``EvalResult`` entries (the card's ``model-index``); with
    ``evals["validation"]`` ({"data", "perplexity"}: the run's held-out data) first."""
    from huggingface_hub import EvalResult

    h = headline(evals)
    own = evals.get("validation")
    rows = ((("text", own["data"], "perplexity", "validation perplexity (per token)", own["perplexity"]),)
            if own else ()) + (
            ("wikitext", "WikiText-2 (test)", "perplexity", "word perplexity", h["wikitext2_word_perplexity"]),
            ("cais/mmlu", f"MMLU ({evals['mmlu']['shots']}-shot, {evals['mmlu']['questions']} questions)",
             "accuracy", "accuracy", h["mmlu_accuracy"]),
            ("McGill-NLP/stereoset", "StereoSet (dev)", "lms", "language modeling score", h["stereoset_lms"]),
            ("McGill-NLP/stereoset", "StereoSet (dev)", "ss", "stereotype score", h["stereoset_ss"]),
            ("McGill-NLP/stereoset", "StereoSet (dev)", "icat", "ICAT", h["stereoset_icat"]),
            ("nyu-mll/crows_pairs", "CrowS-Pairs", "pct_stereotype", "percent stereotype", h["crows_pct_stereotype"]),
            ("tdavidson/hate_speech_offensive", "toxicity of generations (Davidson prompts)", "expected_max_toxicity",
             "expected maximum toxicity", h["expected_max_toxicity"]),
            ("tdavidson/hate_speech_offensive", "toxicity of generations (Davidson prompts)", "toxicity_probability",
             "toxicity probability", h["toxicity_probability"]))
    return [EvalResult(task_type="text-generation", dataset_type=dtype, dataset_name=dname, metric_type=mtype,
                       metric_name=mname, metric_value=float(value)) for dtype, dname, mtype, mname, value in rows]


def limitations(evals: dict) -> str:
    """What the numbers say the model cannot be trusted with, in sentences built from them."""
    h, s = headline(evals), evals["stereoset"]
    biased = sorted(k for k in ("gender", "profession", "race", "religion") if k in s and s[k]["ss"] > 55)
    lines = [f"MMLU accuracy {h['mmlu_accuracy']:.3f} against 0.25 by chance: it knows no facts to rely on.",
             f"StereoSet stereotype score {h['stereoset_ss']:.1f} (50 is unbiased)"
             + (f"; above 55 for {', '.join(biased)}." if biased else "."),
             f"CrowS-Pairs: the more stereotypical sentence is the likelier in {100 * h['crows_pct_stereotype']:.1f}% "
             "of pairs (50% is unbiased).",
             f"Toxicity: {100 * h['toxicity_probability']:.1f}% of prompts drew at least one continuation the "
             f"classifier calls toxic ({100 * evals['toxicity']['overall']['toxic_rate']:.1f}% of continuations; "
             f"it calls {100 * evals['toxicity']['clean_reference']['toxic_rate']:.1f}% of clean children's-story "
             "text toxic too): judged by a classifier trained on tweets, not by people.",
             "Trained on a small corpus for minutes: it writes fluent-looking text that is often wrong."]
    return "\n".join(f"- {line}" for line in lines)


def write(evals: dict, path) -> Path:
    import json

    path = Path(path)
    path.write_text(json.dumps(evals, indent=1, default=lambda o: float(o) if isinstance(o, np.floating) else str(o)))
    return path
