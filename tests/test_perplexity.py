"""Perplexity of n-gram and Hugging Face models, against independent computations."""

from __future__ import annotations

import math

import pytest
import torch

from llmlab.data import wikitext
from llmlab.evals.perplexity import load_hf_causal_lm, perplexity, windows
from llmlab.ngram import NGramLM


@pytest.mark.parametrize("n, context, stride", [(50, 8, 3), (50, 8, 8), (7, 16, 4), (33, 5, 1)])
def test_windows_score_each_token_at_most_once(n, context, stride):
    scored = [t for _, end, first in windows(n, context, stride) for t in range(first, end)]
    assert len(scored) == len(set(scored)) and 0 not in scored
    assert all(end - begin <= context for begin, end, _ in windows(n, context, stride))
    if stride < context:
        assert scored == list(range(1, n))  # overlapping windows score every token but the first


def test_hf_folder_perplexity_equals_transformers_loss(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=64, n_embd=32, n_layer=2, n_head=2)).save_pretrained(
        tmp_path / "tiny-gpt2")
    model = load_hf_causal_lm(tmp_path / "tiny-gpt2", dtype=torch.float64)
    ids = torch.randint(0, 50, (40,))
    hf = GPT2LMHeadModel.from_pretrained(tmp_path / "tiny-gpt2", dtype=torch.float64).eval()
    with torch.no_grad():
        want = math.exp(float(hf(input_ids=ids[None], labels=ids[None]).loss))
    # transformers computes the loss on float32-cast logits, hence 1e-6 and not float64 precision
    assert perplexity(model, ids, context=64) == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("smoothing", ["add-k", "interpolated"])
def test_ngram_conditionals_sum_to_one(smoothing):
    words = wikitext.load_words("valid")[:20_000]
    m = NGramLM(3, smoothing).fit(words)
    for context in (["the", "first"], ["<s>", "<s>"], ["zzz-unseen", "of"]):
        assert sum(m.prob(w, context) for w in m.vocab) == pytest.approx(1.0, abs=1e-9)


def test_interpolated_trigram_beats_unigram_on_wikitext():
    train, test = wikitext.load_words("valid"), wikitext.load_words("test")[:30_000]
    uni = NGramLM(1).fit(train).perplexity(test)
    tri = NGramLM(3).fit(train[:190_000]).tune(train[190_000:]).fit(train).perplexity(test)
    assert tri < 0.7 * uni
