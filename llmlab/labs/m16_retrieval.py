"""Lab m16: retrieval augmentation and vector search. Recall@k, HNSW's greedy layer search, product
quantization's codes and asymmetric distances, and the in-batch-negatives loss; the deliverable cuts the
shared Wikipedia into ~100k passages, embeds them with all-MiniLM-L6-v2, sweeps FAISS's indexes for recall@5
against latency, compares dense, BM25 and hybrid retrieval on SQuAD and BoolQ questions, and fine-tunes the
embedder with in-batch and BM25-mined hard negatives."""

from __future__ import annotations

import heapq
from pathlib import Path

import numpy as np
import torch

from llmlab.evals import qa
from llmlab.labs.base import CheckContext, CheckFailed, Lab, LabLimits
from llmlab.retrieval import contrastive, graph, metrics, pq

LAB = Lab("m16", module=__name__, reference="llmlab.retrieval.pq",
          spec=["llmlab.retrieval.metrics:recall_at_k", "llmlab.retrieval.metrics:rrf", "llmlab.evals.qa:qa_scores",
                "llmlab.retrieval.graph:search_layer", "quantize", "reconstruct", "asymmetric_distances",
                "llmlab.retrieval.contrastive:in_batch_negatives_loss"],
          limits=LabLimits(call_timeout_s=30, total_timeout_s=180, memory_mb=2048),
          own_work="recall@k, reciprocal rank fusion, SQuAD's answer scores, the layer search over a proximity "
                   "graph, product quantization's codes, reconstructions and distance tables, and the contrastive "
                   "loss, from Python, numpy and tensor arithmetic",
          forbidden=("faiss", "hnswlib", "annoy", "sentence_transformers", "bm25s", "evaluate", "lm_eval"))


def _integers(value, what: str) -> np.ndarray:
    """Ids or codes as an integer array: numpy or torch integers, or lists of ints; floats, bools and strings
    that merely hold the right values are refused."""
    if isinstance(value, torch.Tensor):
        ok = not value.is_floating_point() and not value.is_complex() and value.dtype != torch.bool
        value = value.numpy() if ok else None
    else:
        value = np.asarray(value) if isinstance(value, np.ndarray | list | tuple) else None
    if value is None or not np.issubdtype(value.dtype, np.integer):
        raise CheckFailed(f"{what}: expected integers")
    return value


@LAB.check(points=2, grades="recall@5 vs latency")
def recall_at_k_counts_relevant_ids(ctx: CheckContext):
    """recall_at_k(retrieved, relevant, k): the mean over queries of |first k retrieved ∩ relevant| /
    |relevant|, queries without relevant ids left out, -1 padding never counted; rows as numpy arrays or
    lists, relevant sets of one id (a gold passage) or k ids (the exact neighbours) (1e-12)."""
    for trial in range(6):
        n, depth = ctx.randint(3, 9), ctx.randint(3, 12)
        pool = ctx.randint(depth + 2, 40)
        retrieved = np.stack([ctx.rng.permutation(pool)[:depth] for _ in range(n)])
        retrieved[0, ctx.randint(1, depth):] = -1  # a short list
        sizes = [ctx.randint(1, depth + 1) for _ in range(n)]
        relevant = [ctx.rng.permutation(pool)[:s].tolist() for s in sizes]
        relevant[1] = [] if trial % 2 else [-1]  # a query without relevant ids
        relevant[2] = retrieved[2, :2].tolist()  # found for sure
        k = ctx.randint(1, depth + 1)
        rows = retrieved.tolist() if trial % 3 == 0 else retrieved
        got = ctx.number(ctx.call("recall_at_k", rows, relevant, k), "recall@k")
        ctx.close(got, metrics.recall_at_k(retrieved, relevant, k), atol=1e-12,
                  what=f"recall@{k} of {n} queries (relevant sets of {sizes[3:]} ids and more)")


@LAB.check(points=2, grades="a RAG pipeline over 100k Wikipedia passages")
def reciprocal_rank_fusion(ctx: CheckContext):
    """rrf(rankings, k, depth): Cormack et al.'s fusion of ranked id lists (each (n_queries, depth_i), -1
    padding): an id scores the sum over lists of 1 / (k + rank), ranks from 1; per query the ``depth`` best
    ids by falling score, ties to the smaller id, -1 padding a short result: the same ids."""
    # k = 1: id 5 (ranks 3 and 2) scores 1/4 + 1/3 and beats id 3 (rank 1, 1/2), whose rank from 0 would win
    fixed = _integers(ctx.call("rrf", [np.array([[3, 2, 5]]), np.array([[4, 5, 1]])], 1, 4), "fused ids")
    ctx.expect(np.array_equal(fixed, [[5, 3, 4, 2]]), f"rrf of [3, 2, 5] and [4, 5, 1] with k=1 should "
               f"give [5, 3, 4, 2], not {fixed.tolist()}")
    for trial in range(5):
        n, lists = ctx.randint(2, 6), ctx.randint(2, 4)
        pool = ctx.randint(6, 30)
        rankings = []
        for _ in range(lists):
            d = ctx.randint(3, min(pool, 12) + 1)
            r = np.stack([ctx.rng.permutation(pool)[:d] for _ in range(n)])
            r[0, ctx.randint(1, d):] = -1
            rankings.append(r)
        if trial == 0:  # ties: two lists that mirror each other
            rankings = [rankings[0], rankings[0][:, ::-1].copy()]
        k, depth = ctx.choice([1, 10, 60]), ctx.randint(2, 25)
        got = _integers(ctx.call("rrf", rankings, k, depth), "fused ids")
        want = metrics.rrf(rankings, k, depth)
        ctx.expect(got.shape == want.shape and np.array_equal(got, want),
                   f"trial {trial} (k={k}, depth {depth}): fused ids {got.tolist()[:2]}..., expected "
                   f"{want.tolist()[:2]}...")


@LAB.check(points=2, grades="a RAG pipeline over 100k Wikipedia passages")
def squad_answer_scores(ctx: CheckContext):
    """qa_scores(prediction, answers) -> (exact match, F1) as SQuAD v1.1's evaluation script scores an answer:
    both strings normalized (lower case; ASCII punctuation, then the words a/an/the, removed; whitespace
    collapsed), F1 of the bags of tokens, each the best over the gold answers (1e-12)."""
    words = ["The", "the", "a", "An", "Denver", "Broncos", "broncos,", "1973", "oil", "crisis.", "(U.S.)", "us",
             "Super", "Bowl", "50", "Theatre", "anthem!", "an", "apple's"]
    cases = [("Denver Broncos", ["Denver Broncos", "the Denver Broncos"]), ("the  Broncos!", ["broncos"]),
             ("Broncos", ["Denver", "the Broncos"]),
             ("", ["a"]), ("Theatre", ["the"])]
    for _ in range(12):
        prediction = " ".join(ctx.choice(words) for _ in range(ctx.randint(0, 6)))
        answers = [" ".join(ctx.choice(words) for _ in range(ctx.randint(1, 5))) for _ in range(ctx.randint(1, 4))]
        cases.append((prediction, answers))
    for prediction, answers in cases:
        got = ctx.call("qa_scores", prediction, answers)
        try:
            em, f1 = (ctx.number(v, "score") for v in got)
        except (TypeError, ValueError):
            ctx.expect(False, f"qa_scores should return (exact match, F1), got {got!r}")
        want = qa.qa_scores(prediction, answers)
        ctx.close([em, f1], list(want), atol=1e-12, what=f"(EM, F1) of {prediction!r} against {answers!r}")


def _proximity_graph(ctx: CheckContext, n: int, d: int, degree: int):
    """Random points and each one's ``degree`` nearest neighbours plus one random long link."""
    x = ctx.rng.standard_normal((n, d))
    d2 = ((x[:, None] - x[None]) ** 2).sum(-1)
    np.fill_diagonal(d2, np.inf)
    near = np.argsort(d2, axis=1)[:, :degree]
    return x, [sorted({*near[i].tolist(), int(ctx.rng.integers(n))} - {i}) for i in range(n)]


@LAB.check(points=3, grades="HNSW")
def layer_search_is_hnsw(ctx: CheckContext):
    """search_layer(graph, vectors, query, entries, ef) is SEARCH-LAYER of Malkov & Yashunin (their algorithm
    2): graph[i] lists node i's neighbours; from the entry nodes, expand the closest unexpanded candidate
    while it is no farther than the farthest of the ef best found, adding each unvisited neighbour that is
    closer than that (or while fewer than ef are found); returns the ef best as (squared L2 distance, id)
    pairs, closest first. Random graphs of 60-150 nodes, ef from 1 to 16 (ten searches): the same ids in the same order
    (distances within 1e-9)."""
    for trial in range(10):
        n, d = ctx.randint(60, 151), ctx.randint(2, 9)
        x, adjacency = _proximity_graph(ctx, n, d, ctx.randint(3, 6))
        query = ctx.rng.standard_normal(d)
        entries = ctx.rng.choice(n, size=1 + trial % 2, replace=False).tolist()
        ef = [1, 2, 4, 8, 16][trial % 5]
        want = graph.search_layer(adjacency, x, query, entries, ef)
        got = ctx.call("search_layer", adjacency, x, query, entries, ef)
        try:
            pairs = [(ctx.number(float(dist) if isinstance(dist, np.floating) else dist, "distance"),
                      ctx.number(int(i) if isinstance(i, np.integer) else i, "id", integer=True)) for dist, i in got]
        except (TypeError, ValueError):
            ctx.expect(False, f"search_layer should return (distance, id) pairs, got {type(got).__name__}")
        ctx.expect([i for _, i in pairs] == [i for _, i in want],
                   f"trial {trial} (ef={ef}, {n} nodes): ids {[i for _, i in pairs]}, expected {[i for _, i in want]}")
        ctx.close([dist for dist, _ in pairs], [dist for dist, _ in want], atol=1e-9, what=f"trial {trial}: distances")


def _codebooks(ctx: CheckContext):
    m, ksub, dsub = ctx.randint(2, 5), ctx.choice([4, 8, 16]), ctx.randint(2, 5)
    return ctx.rng.standard_normal((m, ksub, dsub)) * ctx.rng.uniform(0.3, 2.0, (m, ksub, 1))


@LAB.check(points=2, grades="FAISS")
def pq_codes_and_reconstruction(ctx: CheckContext):
    """quantize(x (n, d), codebooks (m, ksub, d/m)) returns the (n, m) integer codes, each sub-vector's
    nearest centroid in squared L2; reconstruct(codes, codebooks) the (n, d) vectors of those centroids side by
    side (1e-12). Codebooks with centroids of unequal norms."""
    for _ in range(3):
        books = _codebooks(ctx)
        x = ctx.rng.standard_normal((ctx.randint(5, 40), books.shape[0] * books.shape[2]))
        want = pq.quantize(x, books)
        codes = _integers(ctx.call("quantize", x, books), "codes")
        ctx.expect(codes.shape == want.shape, f"codes of shape {codes.shape}, expected {want.shape}")
        ctx.expect(np.array_equal(codes, want), "codes differ from the nearest centroids")
        ctx.close(np.asarray(ctx.call("reconstruct", want, books), dtype=np.float64), pq.reconstruct(want, books),
                  atol=1e-12, what="reconstruction")


@LAB.check(points=2, grades="FAISS")
def asymmetric_distances_from_tables(ctx: CheckContext):
    """asymmetric_distances(query (d,), codes, codebooks, metric) gives every code's distance to the
    uncompressed query: squared L2 ("l2") or inner product ("ip") with the code's reconstruction (1e-9)."""
    for metric in ("l2", "ip", "l2"):
        books = _codebooks(ctx)
        n, m, ksub = ctx.randint(10, 60), books.shape[0], books.shape[1]
        codes = ctx.rng.integers(0, ksub, (n, m))
        query = ctx.rng.standard_normal(m * books.shape[2]) * 1.5
        got = np.asarray(ctx.call("asymmetric_distances", query, codes, books, metric), dtype=np.float64)
        ctx.close(got, pq.asymmetric_distances(query, codes, books, metric), atol=1e-9, rtol=1e-12,
                  what=f"{metric} distances of {n} codes")


def probe_loss_and_grad(sub, q, p, hard, scale):
    """In the learner's process: their loss, and its gradient with respect to the questions (None if the loss
    is cut off from them)."""
    q = q.clone().requires_grad_(True)
    loss = sub.in_batch_negatives_loss(q, p, hard, scale)
    if not isinstance(loss, torch.Tensor) or not loss.requires_grad:
        return loss, None
    return loss.detach(), torch.autograd.grad(loss, q)[0]


@LAB.check(points=2, grades="negative sampling")
def in_batch_negatives(ctx: CheckContext):
    """in_batch_negatives_loss(questions (B, d), positives (B, d), hard_negatives (B*h, d) or None, scale):
    the mean over questions of the cross-entropy of softmax(scale * cosine(q_i, candidates)) at the
    question's own positive, the candidates all B positives then the hard negatives; its gradient with
    respect to the questions too (1e-10)."""
    for trial in range(4):
        B, d, h = ctx.randint(3, 9), ctx.randint(4, 17), trial % 3
        q, p = ctx.randn(B, d), ctx.randn(B, d) * 2
        hard = ctx.randn(B * h, d) if h else None
        scale = ctx.choice([1.0, 20.0, 50.0])
        got, grad = ctx.run(probe_loss_and_grad, q, p, hard, scale)
        got = ctx.tensor(got, "loss", shape=())
        want_q = q.clone().requires_grad_(True)
        want = contrastive.in_batch_negatives_loss(want_q, p, hard, scale)
        ctx.close(got, want.detach(), atol=1e-10, what=f"loss (B={B}, {B * h} hard negatives)")
        ctx.expect(grad is not None, "the loss carries no gradient to the questions")
        (want_grad,) = torch.autograd.grad(want, want_q)
        grad = ctx.tensor(grad, "gradient", shape=tuple(q.shape))
        ctx.close(grad, want_grad, atol=1e-10, what="gradient with respect to the questions")


# --- seeded bugs ---------------------------------------------------------------------------------------------
def recall_over_k(retrieved, relevant, k):
    scores = [len({int(i) for i in list(f)[:k] if i >= 0} & {int(i) for i in w if i >= 0}) / k
              for f, w in zip(retrieved, relevant, strict=True) if any(i >= 0 for i in w)]
    return float(np.mean(scores))


def recall_counts_empty_queries(retrieved, relevant, k):
    scores = [len({int(i) for i in list(f)[:k] if i >= 0} & {int(i) for i in w if i >= 0}) / max(1, len(w))
              for f, w in zip(retrieved, relevant, strict=True)]
    return float(np.mean(scores))


def rrf_ranks_from_zero(rankings, k=60, depth=None):
    return metrics.rrf(rankings, k - 1, depth)  # 1 / (k + rank - 1): ranks counted from 0


def rrf_counts_padding(rankings, k=60, depth=None):
    shifted = [np.where(r < 0, 10**9, r) for r in rankings]  # -1 taken for an id
    out = metrics.rrf(shifted, k, depth)
    return np.where(out == 10**9, -1, out)


def qa_scores_unnormalized(prediction, answers):
    em = max(float(prediction.strip() == a.strip()) for a in answers)
    return em, qa.qa_scores(prediction, answers)[1]


def qa_scores_first_answer(prediction, answers):
    return qa.qa_scores(prediction, answers[:1])


def qa_scores_keep_articles(prediction, answers):
    def norm(t):
        return " ".join("".join(ch for ch in t.lower() if ch.isalnum() or ch.isspace() or ch == "'").split())
    em = max(float(norm(prediction) == norm(a)) for a in answers)
    return em, qa.qa_scores(prediction, answers)[1]


def greedy_stops_at_best(adjacency, vectors, query, entries, ef, metric="l2"):
    """Stops when a candidate is farther than the *closest* found: a greedy walk, not a beam of ef."""
    dist = {i: float(((vectors[i] - query) ** 2).sum()) for i in entries}
    candidates = [(dist[i], i) for i in entries]
    heapq.heapify(candidates)
    while candidates:
        d, i = heapq.heappop(candidates)
        if d > min(dist.values()):
            break
        for j in adjacency[i]:
            if j not in dist:
                dist[j] = float(((vectors[j] - query) ** 2).sum())
                heapq.heappush(candidates, (dist[j], j))
    return sorted((d, i) for i, d in dist.items())[:ef]


def search_layer_unbounded(adjacency, vectors, query, entries, ef, metric="l2"):
    """Keeps every node it reaches as a candidate (no ef bound while searching): more work, other results."""
    found = graph.search_layer(adjacency, vectors, query, entries, max(ef, 1) * 4, metric)
    return found[:ef]


def quantize_by_inner_product(x, codebooks):
    sub = pq.split(np.asarray(x), codebooks.shape[0])
    return np.einsum("nmd,mkd->nmk", sub, codebooks).argmax(-1)


def reconstruct_column_major(codes, codebooks):
    m = codebooks.shape[0]
    return codebooks[np.arange(m)[None, :], codes].transpose(0, 2, 1).reshape(len(codes), -1)


def symmetric_distances(query, codes, codebooks, metric="l2"):
    """Quantizes the query too (SDC): the distance between two reconstructions."""
    q = pq.reconstruct(pq.quantize(np.asarray(query)[None], codebooks), codebooks)[0]
    return pq.asymmetric_distances(q, codes, codebooks, metric)


def distances_summing_norms(query, codes, codebooks, metric="l2"):
    d = pq.asymmetric_distances(query, codes, codebooks, metric)
    if metric != "l2":
        return d
    q = pq.split(np.asarray(query)[None], codebooks.shape[0])[0]
    table = np.sqrt(((codebooks - q[:, None, :]) ** 2).sum(-1))  # norms, not squares, per sub-space
    return table[np.arange(codebooks.shape[0])[None, :], codes].sum(1)


def loss_of_dot_products(questions, positives, hard_negatives=None, scale=20.0):
    candidates = positives if hard_negatives is None else torch.cat([positives, hard_negatives])
    return torch.nn.functional.cross_entropy(scale * questions @ candidates.T, torch.arange(len(questions)))


def loss_without_hard_negatives(questions, positives, hard_negatives=None, scale=20.0):
    return contrastive.in_batch_negatives_loss(questions, positives, None, scale)


def loss_passage_to_question(questions, positives, hard_negatives=None, scale=20.0):
    scores = scale * torch.nn.functional.normalize(positives, dim=-1) @ torch.nn.functional.normalize(
        questions, dim=-1).T
    return torch.nn.functional.cross_entropy(scores, torch.arange(len(questions)))


LAB.bug("recall_over_k", recall_at_k=recall_over_k)
LAB.bug("recall_counts_empty_queries", recall_at_k=recall_counts_empty_queries)
LAB.bug("rrf_ranks_from_zero", rrf=rrf_ranks_from_zero)
LAB.bug("rrf_counts_padding", rrf=rrf_counts_padding)
LAB.bug("qa_scores_unnormalized", qa_scores=qa_scores_unnormalized)
LAB.bug("qa_scores_first_answer", qa_scores=qa_scores_first_answer)
LAB.bug("qa_scores_keep_articles", qa_scores=qa_scores_keep_articles)
LAB.bug("greedy_stops_at_best", search_layer=greedy_stops_at_best)
LAB.bug("search_layer_unbounded", search_layer=search_layer_unbounded)
LAB.bug("quantize_by_inner_product", quantize=quantize_by_inner_product)
LAB.bug("reconstruct_column_major", reconstruct=reconstruct_column_major)
LAB.bug("symmetric_distances", asymmetric_distances=symmetric_distances)
LAB.bug("distances_summing_norms", asymmetric_distances=distances_summing_norms)
LAB.bug("loss_of_dot_products", in_batch_negatives_loss=loss_of_dot_products)
LAB.bug("loss_without_hard_negatives", in_batch_negatives_loss=loss_without_hard_negatives)
LAB.bug("loss_passage_to_question", in_batch_negatives_loss=loss_passage_to_question)


# --- deliverable ---------------------------------------------------------------------------------------------
def run(profile: str, out: Path) -> tuple[dict, str]:
    from llmlab.retrieval import experiment

    return experiment.run(experiment.FULL if profile == "full" else experiment.QUICK, out)
