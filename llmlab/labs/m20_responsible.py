"""Lab m20: responsible AI and governance. StereoSet's LMS, SS and ICAT and CrowS-Pairs' percent stereotype
from a model's scores, the toxicity classifier's macro F1 and the toxicity of generations, a model card's
validation, and the license a model inherits from its data; the deliverable pretrains a model on Ray Train,
audits it and generates its model card from the run's metadata."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import yaml

from llmlab.governance import bias, card, licenses
from llmlab.governance import toxicity as tox
from llmlab.labs.base import CheckContext, CheckFailed, Lab, LabLimits

LAB = Lab("m20", module=__name__, reference="llmlab.governance.bias",
          spec=["stereoset_scores", "crows_pairs_scores", "llmlab.governance.toxicity:macro_f1",
                "llmlab.governance.toxicity:generation_metrics", "llmlab.governance.card:validate",
                "llmlab.governance.licenses:inherited"],
          limits=LabLimits(call_timeout_s=30, total_timeout_s=180, memory_mb=1024),
          own_work="StereoSet's per-term aggregation, the CrowS-Pairs metrics, macro F1, RealToxicityPrompts' "
                   "metrics, model-card validation (PyYAML may parse the metadata) and license inheritance, "
                   "from Python and numpy",
          forbidden=("sklearn", "huggingface_hub", "lm_eval", "evaluate"), ray_workload=True)


def _numbers(ctx: CheckContext, got: dict, want: dict, what: str, tol: float = 1e-9) -> None:
    """``got`` has ``want``'s groups and keys, each number within ``tol`` (relative to its size)."""
    if not isinstance(got, dict):
        raise CheckFailed(f"{what}: a {type(got).__name__}, expected a dict")
    ctx.expect(set(got) == set(want), f"{what}: groups {sorted(map(str, got))}, expected {sorted(want)}")
    for group, values in want.items():
        row = got[group]
        if not isinstance(row, dict) or set(row) != set(values):
            raise CheckFailed(f"{what}[{group!r}]: expected a dict with keys {sorted(values)}, got {row!r:.200}")
        for key, v in values.items():
            g = ctx.number(row[key], f"{what}[{group!r}][{key!r}]", integer=key == "count")
            ctx.close(g, v, atol=tol * max(1.0, abs(v)), what=f"{what}[{group!r}][{key!r}]")


@LAB.check(points=3, grades="bias detection with StereoSet and a toxicity classifier")
def stereoset_metrics(ctx: CheckContext):
    """stereoset_scores(examples, scores): each example's three scores (stereotype, anti-stereotype,
    unrelated); per target term SS = 100 x share(stereotype > anti-stereotype) and LMS = 100 x share of the
    two meaningful candidates scoring above the unrelated one (strictly: ties lose), averaged over terms;
    ICAT = LMS x min(SS, 100 − SS) / 50; for "overall", each bias type and each task type, with the count
    (1e-9)."""
    examples = bias.stereoset()
    for trial in range(4):
        idx = ctx.rng.choice(len(examples), ctx.randint(40, 400), replace=False)
        sub = [examples[i] for i in sorted(idx)]
        scores = ctx.rng.normal(-3, 1, (len(sub), 3))
        if trial % 2:  # coarse scores: ties between candidates
            scores = np.round(scores)
        scores = scores.tolist()
        _numbers(ctx, ctx.call("stereoset_scores", sub, scores), bias.stereoset_scores(sub, scores),
                 f"StereoSet on {len(sub)} examples (trial {trial})")


@LAB.check(points=2, grades="bias metrics")
def crows_pairs_metric(ctx: CheckContext):
    """crows_pairs_scores(pairs, ll_more, ll_less): per pair the log-likelihoods of its more and less
    stereotypical sentences; pct_stereotype = share of pairs with ll_more > ll_less (ties are not), and
    likelihood_diff = mean |ll_more − ll_less|, for "overall" and each bias type, with the count (1e-9)."""
    pairs = bias.crows_pairs()
    for trial in range(4):
        sub = [pairs[i] for i in sorted(ctx.rng.choice(len(pairs), ctx.randint(30, 300), replace=False))]
        more, less = ctx.rng.normal(-40, 6, len(sub)), ctx.rng.normal(-40, 6, len(sub))
        if trial % 2:
            more, less = np.round(more / 4), np.round(less / 4)
        _numbers(ctx, ctx.call("crows_pairs_scores", sub, more.tolist(), less.tolist()),
                 bias.crows_pairs_scores(sub, more, less), f"CrowS-Pairs on {len(sub)} pairs (trial {trial})")


@LAB.check(points=2, grades="bias detection with StereoSet and a toxicity classifier")
def toxicity_metrics(ctx: CheckContext):
    """macro_f1(y_true, y_pred): the mean over the classes in either of F1 = 2TP / (2TP + FP + FN);
    generation_metrics(scores): from a (prompts, k) array of toxicity scores, {"prompts", "k",
    "expected_max_toxicity" (mean over prompts of the max over k), "toxicity_probability" (share of prompts
    with a score >= 0.5), "toxic_rate" (share of all scores >= 0.5)} (1e-9)."""
    for trial in range(6):
        n, classes = ctx.randint(20, 300), ctx.choice([2, 2, 3])
        y = ctx.rng.integers(0, classes, n)
        pred = np.where(ctx.rng.random(n) < 0.7, y, ctx.rng.integers(0, classes + (trial == 3), n))
        got = ctx.number(ctx.call("macro_f1", y.tolist(), pred.tolist()), "macro F1")
        ctx.close(got, tox.macro_f1(y, pred), atol=1e-9, what=f"macro F1 of {n} labels, {classes} classes")
    for trial in range(4):
        # k = 1 once in a while (the max of one is the mean), and never in the first trial
        scores = ctx.rng.beta(0.5, 2.0, (ctx.randint(5, 60), ctx.randint(2 if trial == 0 else 1, 10)))
        if trial == 1:  # exactly at the threshold is toxic: a fifth of the scores, and one prompt whose maximum it is
            scores[ctx.rng.random(scores.shape) < 0.2] = 0.5
            row = ctx.randint(0, len(scores))
            scores[row] = np.minimum(scores[row], 0.4)
            scores[row, ctx.randint(0, scores.shape[1])] = 0.5
        want = tox.generation_metrics(scores)
        got = ctx.call("generation_metrics", scores)
        if not isinstance(got, dict) or set(got) != set(want):
            raise CheckFailed(f"generation_metrics: expected a dict with keys {sorted(want)}, got {got!r:.200}")
        for key, v in want.items():
            ctx.close(ctx.number(got[key], key, integer=key in ("prompts", "k")), v, atol=1e-9, what=key)


def _card(ctx: CheckContext) -> tuple[dict, str]:
    from huggingface_hub import EvalResult

    results = [EvalResult(task_type="text-generation", dataset_type=t, dataset_name=t.upper(), metric_type=m,
                          metric_value=float(ctx.rng.uniform(0, 100))) for t, m in
               (("wikitext", "perplexity"), ("stereoset", "icat"), ("crows_pairs", "pct_stereotype"))]
    inputs = card.CardInputs(f"model-{ctx.randint(0, 1000)}", "A small LM.", {"layers": ctx.randint(1, 9)},
                             "BPE", {"tinystories": "CDLA-Sharing-1.0"}, {"FLOPs": "1e15"},
                             results[:ctx.randint(1, 4)], limitations="Knows little.")
    return card.split(str(card.build(inputs)))


def _mutate(ctx: CheckContext, meta: dict, body: str, kind: int) -> str:
    meta = copy.deepcopy(meta)
    sections = list(card.REQUIRED_SECTIONS)
    if kind == 1:
        del meta["license"]
    elif kind == 2:
        meta["license"] = "other"
    elif kind == 3:
        meta.update(license="other", license_name="custom", license_link="LICENSE.md")
    elif kind == 4:
        meta["datasets"] = ctx.choice([[], "tinystories", None])
    elif kind == 5:
        meta.pop("model-index")
    elif kind == 6:
        metrics = meta["model-index"][0]["results"][0]["metrics"][0]
        metrics["value"] = ctx.choice([str(metrics["value"]), math.nan, None, True])
    elif kind == 7:
        del meta["model-index"][0]["results"][0]["dataset"]["type"]
    elif kind == 8:  # three headings, each spoilt its own way: renamed, demoted, gone
        for s, spoil in zip(ctx.rng.permutation(sections)[:3], ("{} (draft)\n", "#{}\n", ""), strict=True):
            body = body.replace(s + "\n", spoil.format(s), 1)
    elif kind == 9:
        s = ctx.choice(sections)
        start = body.index(s + "\n") + len(s) + 1
        nxt = body.find("\n## ", start)
        body = body[:start] + "\n  \n" + (body[nxt + 1:] if nxt >= 0 else "")
    elif kind == 10:
        return "---\n" + yaml.safe_dump(meta) + body  # no closing line
    elif kind == 11:
        return "---\n- just\n- a list\n---\n" + body
    elif kind == 12:
        for k in (1, 5, 8):
            meta, body = card.split(_mutate(ctx, meta, body, k))
            meta = meta or {}
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n" + body


@LAB.check(points=3, grades="a generated model card")
def card_validation(ctx: CheckContext):
    """validate(card_text) -> the sorted list of problem codes of a Markdown model card (see the spec:
    ``unparseable``, ``metadata:license``, ``metadata:license_name``, ``metadata:datasets``,
    ``model-index:missing``, ``model-index:result``, ``section:<heading>``, ``empty:<heading>``); [] for a
    valid card."""
    for kind in range(13):
        meta, body = _card(ctx)
        text = _mutate(ctx, meta, body, kind)
        got, want = ctx.call("validate", text), card.validate(text)
        ctx.expect(isinstance(got, list) and got == want, f"card mutation {kind}: {got!r}, expected {want!r}")


LICENSES = ("MIT", "Apache-2.0", "BSD-3-Clause", "CC0-1.0", "CC-BY-4.0", "CC-BY-SA-3.0", "CC-BY-SA-4.0",
            "CC-BY-NC-4.0", "CC-BY-NC-SA-4.0", "CDLA-Sharing-1.0", "GFDL-1.3", "OpenRAIL-M")


@LAB.check(points=2, grades="licenses")
def license_inheritance(ctx: CheckContext):
    """inherited(license_ids) -> {"license", "attribution", "share_alike", "non_commercial",
    "unknown_terms", "conflict"}: what a model trained on data under those SPDX licenses inherits (see the
    spec for the rules)."""
    cases = [["MIT"], ["CC0-1.0"], ["CDLA-Sharing-1.0"], ["CC-BY-SA-3.0", "CC-BY-SA-4.0"],
             ["CC-BY-SA-4.0", "CDLA-Sharing-1.0"], ["GFDL-1.3", "MIT"]]
    cases += [[ctx.choice(list(LICENSES)) for _ in range(ctx.randint(1, 5))] for _ in range(10)]
    for ids in cases:
        got, want = ctx.call("inherited", list(ids)), licenses.inherited(ids)
        ctx.expect(isinstance(got, dict) and got == want and all(type(got[k]) is type(v) for k, v in want.items()),
                   f"inherited({ids}): {got!r}, expected {want!r}")


# --- seeded bugs ---------------------------------------------------------------------------------------------
def stereoset_pooled(examples, scores):
    """SS and LMS over all examples of a group at once, not averaged over target terms."""
    return bias.stereoset_scores([{**e, "target": "all"} for e in examples], scores)


def stereoset_ties_to_stereotype(examples, scores):
    s = np.asarray(scores, dtype=np.float64).copy()
    s[:, 0] += 1e-12 * (s[:, 0] == s[:, 1])  # a tie counts for the stereotype
    return bias.stereoset_scores(examples, s)


def icat_without_min(examples, scores):
    out = bias.stereoset_scores(examples, scores)
    return {g: {**v, "icat": v["lms"] * (100 - v["ss"]) / 50} for g, v in out.items()}


def crows_ties_stereotypical(pairs, ll_more, ll_less):
    more = np.asarray(ll_more, dtype=np.float64)
    return bias.crows_pairs_scores(pairs, more + 1e-9 * (more == np.asarray(ll_less)), ll_less)


def crows_signed_difference(pairs, ll_more, ll_less):
    out = bias.crows_pairs_scores(pairs, ll_more, ll_less)
    d = np.asarray(ll_more, dtype=np.float64) - np.asarray(ll_less, dtype=np.float64)
    groups = {"overall": list(range(len(pairs)))}
    for i, p in enumerate(pairs):
        groups.setdefault(p["bias_type"], []).append(i)
    return {g: {**out[g], "likelihood_diff": float(d[idx].mean())} for g, idx in groups.items()}


def f1_of_positive_class(y_true, y_pred):
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    tp = np.sum((y_true == 1) & (y_pred == 1))
    d = np.sum(y_true == 1) + np.sum(y_pred == 1)
    return float(2 * tp / d) if d else 0.0


def mean_not_max_toxicity(scores):
    s = np.asarray(scores, dtype=np.float64)
    return {**tox.generation_metrics(s), "expected_max_toxicity": float(s.mean())}


def threshold_strict(scores):
    return tox.generation_metrics(np.asarray(scores, dtype=np.float64) - 1e-12)


def validate_without_license_name(text):
    return [p for p in card.validate(text) if p != "metadata:license_name"]


def validate_sections_by_substring(text):
    """A heading counts when its text appears anywhere ("## Compute (draft)" passes for "## Compute")."""
    problems = [p for p in card.validate(text) if not p.startswith("section:")]
    return sorted(problems + [f"section:{s}" for s in card.REQUIRED_SECTIONS if s not in text])


def share_alike_never_conflicts(license_ids):
    out = licenses.inherited(license_ids)
    if out["conflict"]:
        fams = licenses.combined([licenses.classify(x) for x in license_ids])["share_alike_families"]
        nc = out["non_commercial"] or out["unknown_terms"]
        out = {**out, "conflict": False, "license": "other" if nc else licenses.SHARE_ALIKE_OUT[fams[0]]}
    return out


LAB.bug("stereoset_pooled", stereoset_scores=stereoset_pooled)
LAB.bug("stereoset_ties_to_stereotype", stereoset_scores=stereoset_ties_to_stereotype)
LAB.bug("icat_without_min", stereoset_scores=icat_without_min)
LAB.bug("crows_ties_stereotypical", crows_pairs_scores=crows_ties_stereotypical)
LAB.bug("crows_signed_difference", crows_pairs_scores=crows_signed_difference)
LAB.bug("f1_of_positive_class", macro_f1=f1_of_positive_class)
LAB.bug("mean_not_max_toxicity", generation_metrics=mean_not_max_toxicity)
LAB.bug("threshold_strict", generation_metrics=threshold_strict)
LAB.bug("validate_without_license_name", validate=validate_without_license_name)
LAB.bug("validate_sections_by_substring", validate=validate_sections_by_substring)
LAB.bug("share_alike_never_conflicts", inherited=share_alike_never_conflicts)


# --- deliverable ---------------------------------------------------------------------------------------------
def run(profile: str, out: Path) -> tuple[dict, str]:
    from llmlab.governance import experiment

    return experiment.run(experiment.FULL if profile == "full" else experiment.QUICK, out)
