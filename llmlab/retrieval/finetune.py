"""Fine-tuning the sentence embedder as a dual encoder (questions and passages through the same model) with
the in-batch-negatives loss, optionally adding one BM25-mined hard negative per question (Karpukhin et al.
2020: the top BM25 passage that is not the gold one and does not contain the answer)."""

from __future__ import annotations

import random

import numpy as np
import torch
from tqdm.auto import tqdm

from llmlab.evals.qa import contains_answer
from llmlab.retrieval.contrastive import in_batch_negatives_loss
from llmlab.retrieval.embed import Embedder
from llmlab.retrieval.lexical import BM25


def mine_hard_negatives(bm25: BM25, questions: list[str], gold: list[int], passages: list[str] | None = None,
                        answers: list[list[str]] | None = None, depth: int = 20) -> list[int]:
    """Per question, the highest-ranked BM25 passage (row number) other than its gold one and, given the
    ``passages``' texts and each question's ``answers``, holding none of them: a passage with the answer is a
    positive the loss would push away (SQuAD asks several questions of each article, and BM25 ranks the
    article's other paragraphs high). Empty answers (BoolQ's yes/no) skip that test."""
    _, ids = bm25.search(questions, depth)

    def negative(i: int, q: int) -> bool:
        return i >= 0 and i != gold[q] and not (answers and answers[q] and passages
                                                and contains_answer(passages[i], answers[q]))

    return [next((int(i) for i in row if negative(i, q)), (gold[q] + 1) % bm25.n) for q, row in enumerate(ids)]


def batches(gold: list[int], size: int, seed: int) -> list[list[int]]:
    """Shuffled batches of question indices in which no two questions share a gold passage (its copy would be
    a false negative for the other)."""
    order = list(range(len(gold)))
    random.Random(seed).shuffle(order)
    out: list[list[int]] = []
    open_batches: list[tuple[list[int], set[int]]] = []
    for i in order:
        home = next((b for b in open_batches if gold[i] not in b[1]), None)
        if home is None:
            home = ([], set())
            open_batches.append(home)
        home[0].append(i)
        home[1].add(gold[i])
        if len(home[0]) == size:
            out.append(home[0])
            open_batches.remove(home)
    return out + [b for b, _ in open_batches if len(b) > 1]


def train(embedder: Embedder, questions: list[str], passages: list[str], gold: list[int],
          negatives: list[int] | None = None, epochs: int = 1, batch: int = 32, lr: float = 2e-5,
          scale: float = 20.0, seed: int = 0, progress: bool = True) -> list[float]:
    """Trains ``embedder``'s model in place (AdamW); question i's positive is ``passages[gold[i]]`` and its hard
    negative ``passages[negatives[i]]``. Returns the loss of every step."""
    torch.manual_seed(seed)
    model = embedder.model
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    plan = [b for epoch in range(epochs) for b in batches(gold, batch, seed + epoch)]
    losses = []

    def embed(texts):  # under the embedder's autocast (bf16 on an AMX CPU: 1.65x a float32 step); loss in float32
        with embedder.autocast():
            return model(model.preprocess(texts))["sentence_embedding"].float()

    model.train()
    try:
        for b in tqdm(plan, desc="fine-tuning", unit="batch", disable=not progress):
            q = embed([questions[i] for i in b])
            p = embed([passages[gold[i]] for i in b])
            n = embed([passages[negatives[i]] for i in b]) if negatives is not None else None
            loss = in_batch_negatives_loss(q, p, n, scale)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    finally:
        model.eval()
    return losses


def split_by_passage(gold: list[int], fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) question indices, split by gold passage: no test question's passage is seen in training."""
    passages = sorted(set(gold))
    random.Random(seed).shuffle(passages)
    train_set = set(passages[:int(round(fraction * len(passages)))])
    train_idx = np.array([i for i, g in enumerate(gold) if g in train_set], dtype=np.int64)
    test_idx = np.array([i for i, g in enumerate(gold) if g not in train_set], dtype=np.int64)
    return train_idx, test_idx
