"""MMLU (Hendrycks et al. 2021) as lm-evaluation-harness 0.4 runs it (its ``mmlu`` task, the default
template), so that a score here is a score there.

Each of the 57 subjects is a set of four-way multiple-choice questions. The prompt is the subject's
description line, then ``k`` solved examples from the subject's dev split (the first ``k``, lm-eval's
``first_n`` sampler; 0 by default), then the question::

    The following are multiple choice questions (with answers) about high school physics.

    <question>
    A. <choice 0>
    B. <choice 1>
    C. <choice 2>
    D. <choice 3>
    Answer:

Each choice is scored by the log-likelihood of its letter as the continuation (`` A`` .. `` D``, the space
belongs to the continuation); the prediction is the letter with the highest one. A subject's accuracy is
the mean over its questions; a category's and MMLU's are micro averages (every question weighs the same,
lm-eval's ``weight_by_size``).
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llmlab.data import resolve

CHOICES = "ABCD"
CATEGORIES = ("stem", "humanities", "social_sciences", "other")
_BY_CATEGORY = {
    "stem": "abstract_algebra anatomy astronomy college_biology college_chemistry college_computer_science "
            "college_mathematics college_physics computer_security conceptual_physics electrical_engineering "
            "elementary_mathematics high_school_biology high_school_chemistry high_school_computer_science "
            "high_school_mathematics high_school_physics high_school_statistics machine_learning",
    "other": "business_ethics clinical_knowledge college_medicine global_facts human_aging management marketing "
             "medical_genetics miscellaneous nutrition professional_accounting professional_medicine virology",
    "social_sciences": "econometrics high_school_geography high_school_government_and_politics "
                       "high_school_macroeconomics high_school_microeconomics high_school_psychology "
                       "human_sexuality professional_psychology public_relations security_studies sociology "
                       "us_foreign_policy",
    "humanities": "formal_logic high_school_european_history high_school_us_history high_school_world_history "
                  "international_law jurisprudence logical_fallacies moral_disputes moral_scenarios philosophy "
                  "prehistory professional_law world_religions"}
SUBJECTS: dict[str, str] = dict(sorted((s, c) for c, names in _BY_CATEGORY.items() for s in names.split()))


@dataclass(frozen=True)
class Question:
    subject: str
    question: str
    choices: tuple[str, str, str, str]
    answer: int  # 0..3


def load(subject: str, split: str = "test", path: str | Path | None = None) -> list[Question]:
    """A subject's questions from the shared CSVs (``question,choice0..choice3,answer``; ``path``: your own
    file in that format)."""
    if subject not in SUBJECTS:
        raise ValueError(f"unknown MMLU subject {subject!r}; the 57 are listed by `llmlab eval mmlu --list`")
    if split not in ("test", "dev"):
        raise ValueError("split must be 'test' or 'dev'")
    with open(resolve(f"mmlu/{split}/{subject}_{split}.csv", path), newline="", encoding="utf-8") as f:
        return [Question(subject, r["question"], (r["choice0"], r["choice1"], r["choice2"], r["choice3"]),
                         int(r["answer"])) for r in csv.DictReader(f)]


def description(subject: str) -> str:
    return f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"


def doc_to_text(q: Question) -> str:
    return _text(q.question, q.choices)


def _text(question: str, choices) -> str:
    return question.strip() + "".join(f"\n{letter}. {c}" for letter, c in zip(CHOICES, choices, strict=True)) \
        + "\nAnswer:"


def prompt(subject: str, question: str, choices: list[str], shots: list[tuple[str, list[str], int]] = ()) -> str:
    """The prompt (the context to score continuations after) for a question and its four choices, after
    the solved examples ``shots``, each (question, choices, answer index)."""
    return description(subject) + "".join(f"{_text(q, c)} {CHOICES[a]}\n\n" for q, c, a in shots) \
        + _text(question, choices)


def context(q: Question, shots: list[Question] = ()) -> str:
    """The prompt for ``q`` after the solved examples ``shots``."""
    return prompt(q.subject, q.question, list(q.choices), [(s.question, list(s.choices), s.answer) for s in shots])


def requests(q: Question, shots: list[Question] = ()) -> list[tuple[str, str]]:
    """The four (context, continuation) pairs to score."""
    ctx = context(q, shots)
    return [(ctx, f" {letter}") for letter in CHOICES]


def predict(loglikelihoods) -> int:
    """The chosen letter's index: the highest log-likelihood (the first on a tie, as numpy's argmax)."""
    return int(np.argmax(loglikelihoods))


LogLikelihood = Callable[[list[tuple[str, str]]], list[tuple[float, bool]]]


def evaluate(loglikelihood: LogLikelihood, subjects: list[str] | None = None, num_fewshot: int = 0,
             limit: int | None = None) -> dict:
    """Score ``subjects`` (default: all 57) with a backend's ``loglikelihood`` (``llmlab.evals.harness``).
    ``limit``: the first questions of each subject only. Returns per-question records (subject, the four
    log-likelihoods, the prediction, the answer), per-subject and per-category accuracies and the micro
    average."""
    subjects = list(subjects or SUBJECTS)
    if not 0 <= num_fewshot <= 5:
        raise ValueError("the dev split has 5 examples per subject: 0 <= num_fewshot <= 5")
    questions, reqs = [], []
    for subject in subjects:
        shots = load(subject, "dev")[:num_fewshot]
        qs = load(subject, "test")[:limit]
        questions += qs
        reqs += [r for q in qs for r in requests(q, shots)]
    scores = [ll for ll, _ in loglikelihood(reqs)]
    records = []
    for i, q in enumerate(questions):
        ll = scores[4 * i: 4 * i + 4]
        records.append({"subject": q.subject, "loglikelihoods": ll, "prediction": predict(ll), "answer": q.answer})
    return {"num_fewshot": num_fewshot, "questions": records, **aggregate(records)}


def aggregate(records: list[dict]) -> dict:
    """Per-subject accuracy, per-category and overall micro averages (with each one's question count)."""
    def acc(rows):
        return {"acc": float(np.mean([r["prediction"] == r["answer"] for r in rows])), "n": len(rows)}

    order = dict.fromkeys(r["subject"] for r in records)
    by_subject = {s: acc([r for r in records if r["subject"] == s]) for s in order}
    by_category = {c: acc([r for r in records if SUBJECTS[r["subject"]] == c]) for c in CATEGORIES
                   if any(SUBJECTS[r["subject"]] == c for r in records)}
    return {"subjects": by_subject, "categories": by_category, "mmlu": acc(records)}


def table(result: dict) -> str:
    """The per-subject table (markdown), categories and MMLU last."""
    rows = [f"| {s.replace('_', ' ')} | {SUBJECTS[s].replace('_', ' ')} | {r['n']} | {r['acc']:.3f} |"
            for s, r in sorted(result["subjects"].items())]
    rows += [f"| **{c.replace('_', ' ')}** | | {r['n']} | {r['acc']:.3f} |" for c, r in result["categories"].items()]
    total = result["mmlu"]
    rows.append(f"| **MMLU** ({result['num_fewshot']}-shot) | | {total['n']} | **{total['acc']:.3f}** |")
    return "| subject | category | questions | accuracy |\n|---|---|---|---|\n" + "\n".join(rows) + "\n"


def plot(result: dict, path, title: str = "MMLU") -> None:
    """Per-subject accuracy (sorted, coloured by category) with chance (0.25) and each bar's 95% binomial
    interval."""
    from matplotlib.patches import Patch

    from llmlab.plots import figure

    subjects = sorted(result["subjects"], key=lambda s: result["subjects"][s]["acc"])
    acc = np.array([result["subjects"][s]["acc"] for s in subjects])
    n = np.array([result["subjects"][s]["n"] for s in subjects])
    colors = {c: f"C{i}" for i, c in enumerate(CATEGORIES)}
    with figure(path, f"{title}: {result['mmlu']['acc']:.3f} over {result['mmlu']['n']:,} questions "
                      f"({result['num_fewshot']}-shot)", size=(7, 1.5 + 0.16 * len(subjects))) as ax:
        ax.barh(range(len(subjects)), acc, xerr=1.96 * np.sqrt(acc * (1 - acc) / n),
                color=[colors[SUBJECTS[s]] for s in subjects], error_kw={"lw": 0.6})
        ax.set_yticks(range(len(subjects)), [s.replace("_", " ") for s in subjects], fontsize=6)
        chance = ax.axvline(0.25, color="gray", ls="--", lw=1, label="chance")
        ax.set_xlabel("accuracy")
        ax.set_xlim(0, 1)
        ax.legend(handles=[chance] + [Patch(color=col, label=c.replace("_", " ")) for c, col in colors.items()],
                  fontsize=7, loc="lower right")
