"""The builtin engine against independent references: greedy decoding equals a plain full-sequence argmax
loop (with continuous batching and with both kinds of speculation), and speculative sampling reproduces the
target's distribution exactly (chi-square test against probabilities computed from the model itself)."""

from __future__ import annotations

import itertools

import pytest
import torch
from scipy import stats
from torch._dynamo.utils import counters

from llmlab.inference import Engine, SamplingParams, expected_tokens_per_step
from llmlab.information import filtered_probs
from llmlab.transformer import TransformerConfig, TransformerLM

V = 24


@pytest.fixture(scope="module")
def models():
    target = TransformerLM(TransformerConfig(V, context=64, d_model=64, n_heads=4, n_layers=2), seed=1)
    draft = TransformerLM(TransformerConfig(V, context=64, d_model=32, n_heads=2, n_layers=1), seed=2)
    return target, draft


def _greedy(model, ids, n):
    ids = list(ids)
    with torch.no_grad():
        for _ in range(n):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    return ids


@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("mode", ["plain", "draft", "ngram"])
def test_greedy_is_exact(models, mode, compile):
    """Also through torch.compile, after the engine's warm-up (which builds the graphs: about a minute for
    all three modes here, kept for the rest of the session)."""
    target, draft = models
    gen = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, V, (n,), generator=gen).tolist() for n in (1, 2, 3, 5, 8, 13, 21, 4, 6, 9, 30, 7)]
    lengths = [20, 3, 11, 20, 1, 17, 20, 5, 20, 9, 20, 14]  # requests leave at different steps
    kwargs = {"plain": {}, "draft": {"draft": draft, "spec_tokens": 4}, "ngram": {"ngram": (3, 1), "spec_tokens": 3}}
    engine = Engine(target, max_batch=5, compile=compile, **kwargs[mode])  # fewer slots than prompts
    if compile:
        assert engine.warm_up() > 0 and engine.generation_tokens == 0
        graphs = counters["stats"]["unique_graphs"]
    reqs = [engine.add(p, SamplingParams(max_tokens=n, temperature=0)) for p, n in zip(prompts, lengths, strict=True)]
    while engine.has_work():
        engine.step()  # the cache stays compacted: the running requests hold slots 0..n-1, in order
        assert [r.slot for r in engine.running] == list(range(len(engine.running)))
        if mode == "draft":
            assert [r.draft_slot for r in engine.running] == list(range(len(engine.running)))
    if compile:  # the warm-up built every graph these steps needed
        assert counters["stats"]["unique_graphs"] == graphs
    for p, n, r in zip(prompts, lengths, reqs, strict=True):
        assert r.output_ids == _greedy(target, p, n)[len(p):]
        assert r.finish_reason == "length"
    if mode != "plain":
        assert engine.spec.drafts > 0 and engine.spec.draft_tokens >= engine.spec.accepted_tokens
    if mode == "draft":  # k proposals a step, fewer only in a request's last steps (k 4)
        assert engine.spec.draft_tokens > 3 * engine.spec.drafts


def _two_token_distribution(model, prompt, params: SamplingParams) -> torch.Tensor:
    """P(x1, x2 | prompt) under the request's sampling transform, from the model's own logits."""
    with torch.no_grad():
        p1 = filtered_probs(model(torch.tensor([prompt]))[0, -1].double(), params.temperature, params.top_k)
        joint = torch.zeros(V, V, dtype=torch.float64)
        for x1 in range(V):
            p2 = filtered_probs(model(torch.tensor([prompt + [x1]]))[0, -1].double(), params.temperature, params.top_k)
            joint[x1] = p1[x1] * p2
    return joint


@pytest.mark.parametrize("mode", ["draft", "ngram"])
def test_speculative_sampling_has_the_target_distribution(models, mode):
    target, draft = models
    prompt = [3, 7, 3, 7, 3]
    base = SamplingParams(max_tokens=2, temperature=1.3, top_k=6)
    want = _two_token_distribution(target, prompt, base)
    kwargs = {"draft": {"draft": draft, "spec_tokens": 3}, "ngram": {"ngram": (2, 1), "spec_tokens": 2}}[mode]
    engine = Engine(target, max_batch=16, **kwargs)
    n = 3000
    reqs = [engine.add(prompt, SamplingParams(**{**base.__dict__, "seed": s})) for s in range(n)]
    while engine.has_work():
        engine.step()
    counts = torch.zeros(V, V)
    for r in reqs:
        counts[r.output_ids[0], r.output_ids[1]] += 1
    keep = want.flatten() * n >= 5  # chi-square cells with enough expected counts; the rest pooled
    observed = torch.cat([counts.flatten()[keep], counts.flatten()[~keep].sum()[None]])
    expected = torch.cat([want.flatten()[keep], want.flatten()[~keep].sum()[None]]) * n
    assert counts.flatten()[want.flatten() == 0].sum() == 0  # nothing outside the target's support
    nonzero = expected > 0  # (the pooled cell is empty when every cell has enough expected counts)
    _, pvalue = stats.chisquare(observed[nonzero].numpy(), expected[nonzero].numpy())
    assert pvalue > 1e-3, pvalue
    assert engine.spec.draft_tokens > 0


def test_closed_form_tokens_per_step():
    assert expected_tokens_per_step(0.0, 4) == 1
    assert expected_tokens_per_step(1.0, 4) == 5
    a, k = 0.6, 3
    assert expected_tokens_per_step(a, k) == pytest.approx(sum(a**i for i in range(k + 1)))


def test_stops_seeds_and_bad_requests(models):
    target, _ = models
    engine = Engine(target, max_batch=2, eos_token_id=5)
    a = engine.generate([[1, 2, 3]], SamplingParams(max_tokens=30, seed=7, logprobs=2))[0]
    b = engine.generate([[1, 2, 3]], SamplingParams(max_tokens=30, seed=7, logprobs=2))[0]
    assert a.output_ids == b.output_ids  # a seed fixes the sample
    assert len(a.logprobs) == len(a.output_ids) and all(len(x["top"]) == 2 for x in a.logprobs)
    assert a.finish_reason == "stop" if 5 in a.output_ids else a.finish_reason == "length"
    for bad in (SamplingParams(max_tokens=0), SamplingParams(temperature=-1), SamplingParams(top_p=0),
                SamplingParams(logprobs=99)):
        with pytest.raises(ValueError):
            engine.add([1, 2], bad)
    with pytest.raises(ValueError, match="context"):
        engine.add(list(range(V)) * 3)
    for combo in itertools.product([0.0, 0.7], [None, 3]):  # every path runs
        engine.generate([[4, 4]], SamplingParams(max_tokens=3, temperature=combo[0], top_k=combo[1]))


def test_max_batch_bounds_the_running_batch(models):
    target, _ = models
    engine = Engine(target, max_batch=4)
    engine.max_batch = 2  # fewer than the cache's slots: the rest wait
    for p in ([1], [2], [3], [4], [5]):
        engine.add(p, SamplingParams(max_tokens=3, temperature=0))
    seen = []
    while engine.has_work():
        engine.step()
        seen.append(len(engine.running))
    assert max(seen) <= 2


def test_distillation_raises_acceptance(models):
    """On-policy distillation (llmlab.inference.distill): a draft fine-tuned on the target's greedy
    continuations is accepted more often on prompts it never saw."""
    import copy

    from llmlab import transformer as T
    from llmlab.inference.distill import distill_draft

    target, draft = models
    draft = copy.deepcopy(draft)
    gen = torch.Generator().manual_seed(5)
    train = [torch.randint(0, V, (8,), generator=gen).tolist() for _ in range(96)]
    held_out = [torch.randint(0, V, (8,), generator=gen).tolist() for _ in range(12)]

    def acceptance() -> float:
        engine = Engine(target, max_batch=12, draft=draft, spec_tokens=3)
        engine.generate(held_out, SamplingParams(max_tokens=24, temperature=0))
        return engine.spec.per_token_acceptance

    before = acceptance()
    hist = distill_draft(draft, target, train, max_tokens=48,
                         cfg=T.TrainConfig(steps=150, batch_size=16, eval_every=150, eval_batches=2, warmup=10,
                                           max_lr=3e-3, min_lr=3e-4))
    after = acceptance()
    assert hist["tokens"] == 96 * 48 and hist["val_loss"][-1] < hist["val_loss"][0]
    assert after > before + 0.2, (before, after)
    with pytest.raises(ValueError, match="vocabulary"):
        distill_draft(TransformerLM(TransformerConfig(V + 1, context=64, d_model=32, n_heads=2, n_layers=1)),
                      target, train)


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_incremental_detokenization_matches_a_full_decode(kind):
    """The engine extends each request's text by its new tokens only; sampled at random from a model over a
    byte-level BPE or a unigram vocabulary with byte fallback (characters split over tokens, invalid byte
    runs), the text equals a decode of all the output, and a stop string cuts it where a full decode
    would."""
    from llmlab import tokenization as tk

    text = "naïve café, 日本語の文章 and ünïcödé ñ — " * 20
    tok = tk.BPETokenizer.train(text, 300) if kind == "bpe" else tk.UnigramTokenizer.train(text, 300)
    model = TransformerLM(TransformerConfig(tok.vocab_size, context=128, d_model=32, n_heads=2, n_layers=1), seed=3)
    engine = Engine(model, tok, max_batch=4)

    def run(stop=()):
        reqs = [engine.add("café", SamplingParams(max_tokens=60, temperature=1.5, seed=i, stop=list(stop)))
                for i in range(6)]
        while engine.has_work():
            engine.step()
        return reqs, [tok.decode(r.output_ids) for r in reqs]

    reqs, outputs = run()
    assert len(set(outputs)) == 6 and any("\ufffd" in o for o in outputs)  # characters split over tokens
    assert [r.text for r in reqs] == outputs
    stop = next(o for o in outputs if len(o) > 20)[10:12]
    stopped, _ = run([stop])
    assert sum(r.finish_reason == "stop" for r in stopped) >= 1
    for r in stopped:  # the same seeds: the same tokens up to the stop string
        full = tok.decode(r.output_ids)
        assert r.text == (full[: full.find(stop)] if r.finish_reason == "stop" else full)
        assert r.finish_reason == "stop" or stop not in full
