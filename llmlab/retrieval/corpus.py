"""The retrieval corpus: the shared English Wikipedia cut DPR-style into disjoint 100-word passages (title
kept with each), and SQuAD/BoolQ questions whose gold paragraph is in the corpus.

A passage is {"pid", "title", "text"}; pids are "wiki:<article id>:<chunk>" and, for the question sets'
paragraphs (added to the corpus: the 2015 sample holds few of their articles), "squad:<n>" and "boolq:<n>".
"""

from __future__ import annotations

import random

from llmlab.data import qa, wikipedia


def wikipedia_passages(words: int = 100, limit: int | None = None, path=None) -> list[dict]:
    """Each article's body (its title line dropped) cut into disjoint ``words``-word chunks, the last one
    shorter (Karpukhin et al. 2020): 99,703 passages from the 3,957 articles of the shared sample."""
    out = []
    for article in wikipedia.articles(path):
        body = article["text"].split("\n", 1)[1] if "\n" in article["text"] else ""
        ws = body.split()
        for i in range(0, len(ws), words):
            out.append({"pid": f"wiki:{article['id']}:{i // words}", "title": article["title"],
                        "text": " ".join(ws[i:i + words])})
            if limit is not None and len(out) >= limit:
                return out
    return out


def text(passage: dict) -> str:
    """What gets embedded and indexed: the title, then the passage."""
    return f"{passage['title']}\n{passage['text']}"


def questions(sets=("squad", "boolq"), per_set: int | None = None, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(gold passages, questions): ``per_set`` questions drawn at random from each set (all if None), each
    with "gold" (the pid of its paragraph), "set", "answers"; the distinct paragraphs they ask about become
    passages. Split train/test by paragraph, never by question, when training on them."""
    loaders = {"squad": qa.squad, "boolq": qa.boolq}
    passages, out = {}, []
    for name in sets:
        rows = loaders[name]()
        if per_set is not None and per_set < len(rows):
            rows = random.Random(seed).sample(rows, per_set)
        for r in rows:
            key = (name, r["context"])
            if key not in passages:
                passages[key] = {"pid": f"{name}:{len(passages)}", "title": r["title"], "text": r["context"]}
            out.append({"id": r["id"], "set": name, "question": r["question"], "answers": r["answers"],
                        "gold": passages[key]["pid"]})
    return list(passages.values()), out
