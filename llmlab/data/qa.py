"""Question answering sets with Wikipedia paragraphs: SQuAD v1.1 dev (rebuilt from the official explorer pages)
and BoolQ dev."""

from __future__ import annotations

import gzip
import json

from llmlab.data import resolve

SQUAD = "squad/dev-v1.1.reconstructed.json.gz"
BOOLQ = "boolq/boolq_dev.jsonl"


def squad(path=None) -> list[dict]:
    """Every SQuAD v1.1 dev question as {"id", "question", "answers" (texts), "title", "context"}, in file
    order (10,570 questions over 2,067 paragraphs of 48 articles)."""
    with gzip.open(resolve(SQUAD, path), "rt", encoding="utf-8") as f:
        data = json.load(f)["data"]
    return [{"id": qa["id"], "question": qa["question"], "answers": [a["text"] for a in qa["answers"]],
             "title": article["title"].replace("_", " "), "context": paragraph["context"]}
            for article in data for paragraph in article["paragraphs"] for qa in paragraph["qas"]]


def boolq(path=None) -> list[dict]:
    """Every BoolQ dev question as {"id", "question", "answers" (["yes"] or ["no"]), "title", "context"}
    (3,270 questions over 2,938 distinct passages)."""
    rows = []
    with open(resolve(BOOLQ, path), encoding="utf-8") as f:
        for i, line in enumerate(f):
            r = json.loads(line)
            rows.append({"id": f"boolq-{i}", "question": r["question"].strip() + "?",
                         "answers": ["yes" if r["answer"] in (True, "True") else "no"],
                         "title": r["title"], "context": r["passage"]})
    return rows
