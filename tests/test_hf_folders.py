"""Serving model folders llmlab did not write: GPT-2 folders and Llama folders with grouped-query attention,
made by Hugging Face ``transformers`` itself (random weights: no weights can be downloaded here). The
reference is transformers' own forward pass and ``generate``."""

from __future__ import annotations

import json

import pytest
import torch

from llmlab import hf
from llmlab.data import shakespeare
from llmlab.gpt2 import GPT2LM
from llmlab.inference import Engine, SamplingParams
from llmlab.tokenization import BPETokenizer, HFTokenizer

transformers = pytest.importorskip("transformers")
V = 320


@pytest.fixture(scope="module")
def bpe():
    return BPETokenizer.train(shakespeare.split()[0][:50_000], V, special_tokens=["<|endoftext|>"])


def _folder(model, tok, path, safe=True):
    """A folder as transformers writes it, with a plain tokenizer.json (no llmlab tokenizer config)."""
    model.save_pretrained(path, safe_serialization=safe)
    tok.to_hf().save(str(path / "tokenizer.json"))
    return path


def _gpt2(tmp_path, bpe, safe=True):
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=V, n_positions=64, n_embd=64, n_layer=2, n_head=4,
                                  initializer_range=0.2, eos_token_id=bpe.eos_token_id, bos_token_id=None)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    return model, _folder(model, bpe, tmp_path / ("gpt2" if safe else "gpt2-bin"), safe)


def _llama_gqa(tmp_path, bpe):
    torch.manual_seed(1)
    cfg = transformers.LlamaConfig(vocab_size=V, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                   initializer_range=0.2, eos_token_id=bpe.eos_token_id, bos_token_id=None)
    model = transformers.LlamaForCausalLM(cfg).eval()
    return model, _folder(model, bpe, tmp_path / "llama-gqa")


def _prompts(bpe, n=7):
    text = shakespeare.split()[1]
    return [bpe.encode(text[i * 97: i * 97 + 20 + 9 * i]) for i in range(n)]


@pytest.mark.parametrize("kind", ["gpt2", "gpt2-bin", "llama-gqa"])
def test_logits_equal_transformers(tmp_path, bpe, kind):
    model, folder = _llama_gqa(tmp_path, bpe) if kind == "llama-gqa" else _gpt2(tmp_path, bpe, kind == "gpt2")
    ours = hf.load(folder)
    assert isinstance(ours, GPT2LM) == kind.startswith("gpt2")
    ids = torch.tensor([_prompts(bpe)[3]])
    with torch.no_grad():
        want = model(ids).logits
    torch.testing.assert_close(ours(ids), want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind", ["gpt2", "llama-gqa"])
def test_engine_greedy_equals_generate(tmp_path, bpe, kind):
    """Continuous batching (3 slots, 7 prompts of different lengths) and n-gram speculation both give
    transformers' greedy tokens; the tokenizer is the folder's tokenizer.json."""
    model, folder = _llama_gqa(tmp_path, bpe) if kind == "llama-gqa" else _gpt2(tmp_path, bpe)
    prompts = _prompts(bpe)
    want = []
    for p in prompts:
        ids = torch.tensor([p])
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False,
                             pad_token_id=0, eos_token_id=None)
        want.append(out[0, len(p):].tolist())
    for kwargs in ({}, {"ngram": (3, 1), "spec_tokens": 3}):
        engine = Engine.from_folder(folder, max_batch=3, **kwargs)
        engine.eos_token_id = None  # random weights: compare all 12 tokens
        assert isinstance(engine.tokenizer, HFTokenizer)
        reqs = engine.generate(prompts, SamplingParams(max_tokens=12, temperature=0))
        assert [r.output_ids for r in reqs] == want
        assert reqs[0].text == bpe.decode(want[0])


def test_hf_tokenizer_matches_and_finds_eos(tmp_path, bpe):
    _, folder = _gpt2(tmp_path, bpe)
    tok = HFTokenizer(folder)
    text = shakespeare.split()[1][:2000]
    assert tok.encode(text) == bpe.encode(text)
    assert tok.decode(bpe.encode(text)) == text
    assert tok.eos_token_id == bpe.eos_token_id is not None


def test_unsupported_llama_settings_are_refused(tmp_path, bpe):
    _, folder = _llama_gqa(tmp_path, bpe)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["rope_scaling"] = {"rope_type": "llama3", "factor": 8.0}
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="rope_scaling"):
        hf.load(folder)
    with pytest.raises(FileNotFoundError, match="config.json"):
        hf.load(tmp_path)
