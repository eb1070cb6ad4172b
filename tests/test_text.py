"""The text half of the library (labs m06-m10) against independent references: naive string algorithms and
networkx, hand-computed Kneser-Ney, PyTorch, Hugging Face transformers / tokenizers, and tiktoken."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
import torch

from llmlab import embeddings, graphs, hf, ngram, suffix, transformer
from llmlab import tokenization as tk
from llmlab.data import resolve
from tests.conftest import needs

SPECIAL = "<|endoftext|>"
CLI = str(Path(sys.executable).with_name("llmlab"))


# --- m06 ---------------------------------------------------------------------------------------------
def _occurrences(text: str, p: str) -> int:
    return sum(text.startswith(p, i) for i in range(len(text) - len(p) + 1))


def test_suffix_tree_against_naive_algorithms():
    rng = random.Random(0)
    for trial in range(300):
        alphabet = ["a", "ab", "abc", "acgt", "abcdefghij"][trial % 5]
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 50)))
        if trial % 4 == 3:
            text = (text[:4] or "ab") * rng.randint(2, 10)
        tree = suffix.SuffixTree(text)
        assert tree.distinct_substrings() == len({text[i:j] for i in range(len(text))
                                                  for j in range(i + 1, len(text) + 1)})
        for _ in range(10):
            i = rng.randint(0, len(text))
            p = text[i: i + rng.randint(1, 5)] or "z"
            assert tree.count(p) == _occurrences(text, p) and tree.contains(p) == (p in text)
        lrs = tree.longest_repeated_substring()
        longest = max((j - i for i in range(len(text)) for j in range(i + 1, len(text) + 1)
                       if _occurrences(text, text[i:j]) >= 2), default=0)
        assert len(lrs) == longest and (not lrs or _occurrences(text, lrs) >= 2)
        assert tree.steps <= 3 * (len(text) + 1)  # Ukkonen's amortised bound on the construction's work
    worst = suffix.SuffixTree("a" * 50_000)
    assert worst.longest_repeated_substring() == "a" * 49_999 and worst.steps <= 3 * 50_001
    with pytest.raises(ValueError):
        suffix.SuffixTree("a$b", terminal="$")


def test_attention_graph_paths_against_networkx():
    n = 24
    for kind in graphs.PATTERNS:
        mask = graphs.attention_pattern(kind, n, window=3, stride=5, n_global=2, dilation=2)
        assert bool((mask & ~torch.ones(n, n, dtype=torch.bool).tril()).sum() == 0)  # causal
        g = nx.DiGraph([(j, i) for i in range(n) for j in range(n) if mask[i, j] and i != j])
        g.add_nodes_from(range(n))
        lengths = dict(nx.all_pairs_shortest_path_length(g))
        dist = graphs.shortest_path_lengths(mask)
        for i in range(n):
            for j in range(n):
                assert int(dist[i, j]) == lengths[j].get(i, -1)
        for layers in (1, 2, 4):
            assert torch.equal(graphs.reachability(mask, layers), (dist >= 0) & (dist <= layers))


# --- m07 ---------------------------------------------------------------------------------------------
def test_kneser_ney_by_hand():
    """Bigram interpolated KN on a 6-token corpus, computed by hand from the definitions."""
    lm = ngram.KneserNeyLM(2, discounts=[0.5, 0.75]).fit("a b a b c a".split())
    V = 4  # a, b, c, <unk>
    # continuation counts N1+(. w) over the bigrams (<s> a) (a b) (b a) (a b) (b c) (c a): a 3, b 1, c 1
    p1 = {w: max(c - 0.5, 0) / 5 + 0.5 * 3 / 5 / V for w, c in {"a": 3, "b": 1, "c": 1, "<unk>": 0}.items()}
    # c(a .) = 2 (b twice), one type
    assert lm.prob("b", ["a"]) == pytest.approx((2 - 0.75) / 2 + 0.75 * 1 / 2 * p1["b"], abs=1e-12)
    assert lm.prob("c", ["a"]) == pytest.approx(0.75 * 1 / 2 * p1["c"], abs=1e-12)
    assert lm.prob("a", ["zzz"]) == pytest.approx(p1["a"], abs=1e-12)  # an unseen context backs off fully
    for n in (1, 2, 3, 4):
        model = ngram.KneserNeyLM(n).fit(list("the cat sat on the mat; the hat"))
        for ctx in ("th", "t ", "zq", "", "at"):
            assert sum(model.distribution(list(ctx)).values()) == pytest.approx(1, abs=1e-12)


# --- m09 ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tie", [False, True])
def test_llama_export_loads_in_transformers_with_equal_logits(tmp_path, tie):
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    tok = tk.CharTokenizer.train("hello world, how are you today?\n")
    model = transformer.TransformerLM(transformer.TransformerConfig(tok.vocab_size, context=32, d_model=64,
                                                                    n_heads=4, tie_embeddings=tie), seed=3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.2)  # non-trivial norm gains
    folder = hf.export(model, tmp_path / "m", tok)
    assert json.loads((folder / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]
    ref = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    text = "how are you, world?"
    fast = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"))
    ids = fast(text)["input_ids"]
    assert ids == tok.encode(text) and fast.decode(ids) == text
    x = torch.tensor([ids])
    with torch.no_grad():
        assert float((ref(x).logits - model(x)).abs().max()) < 1e-4
        assert float((hf.load(folder)(x) - model(x)).abs().max()) == 0


def test_non_llama_models_round_trip_through_llmlab_only(tmp_path):
    model = transformer.TransformerLM(transformer.TransformerConfig(20, context=16, d_model=32, n_heads=2,
                                                                    positions="alibi", norm="layernorm"), seed=0)
    folder = hf.export(model, tmp_path / "m")
    assert json.loads((folder / "config.json").read_text())["architectures"] == ["LlmlabTransformerLM"]
    x = torch.randint(0, 20, (2, 10))
    assert torch.equal(hf.load(folder)(x), model(x))


def test_training_pieces(tmp_path):
    model = transformer.TransformerLM(transformer.TransformerConfig(30, context=16, d_model=32, n_heads=2), seed=0)
    tokens = np.random.default_rng(0).integers(0, 30, size=2000)
    hist = transformer.train(model, tokens, tokens, transformer.TrainConfig(steps=30, eval_every=10, warmup=5))
    assert hist["val_loss"][-1] < hist["val_loss"][0]
    transformer.save_checkpoint(model, hist["optimizer"], 30, tmp_path / "c.pt")
    fresh = transformer.TransformerLM(model.config, seed=1)
    assert transformer.load_checkpoint(tmp_path / "c.pt", fresh) == 30
    x = torch.randint(0, 30, (1, 8))
    assert torch.equal(fresh(x), model(x))
    for pos in transformer.POSITIONS:  # causal with every positional encoding
        m = transformer.TransformerLM(transformer.TransformerConfig(30, context=16, d_model=32, n_heads=2,
                                                                    positions=pos), seed=0)
        a, b = x.clone(), x.clone()
        b[0, 5:] = (b[0, 5:] + 1) % 30
        assert torch.equal(m(a)[:, :5], m(b)[:, :5])


@pytest.mark.parametrize("positions, norm", [("rope", "rmsnorm"), ("learned", "layernorm"), ("sinusoidal", "rmsnorm")])
def test_fused_attention_equals_the_eager_arithmetic(positions, norm, monkeypatch):
    """attn_implementation "sdpa" (torch's fused kernel, the default) and "eager" (m09's attention written out)
    give the same logits and gradients: 1e-12 in float64, 1e-5 in float32."""
    calls = []
    fused = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda *a, **k: calls.append(1) or fused(*a, **k))
    x = torch.randint(0, 30, (3, 24))
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        out = {}
        for impl in ("sdpa", "eager"):
            cfg = transformer.TransformerConfig(30, context=32, d_model=48, n_heads=4, n_layers=2, positions=positions,
                                                norm=norm, attn_implementation=impl)
            model = transformer.TransformerLM(cfg, seed=0).to(dtype)
            logits = model(x)
            transformer.cross_entropy(logits[:, :-1], x[:, 1:]).backward()
            out[impl] = (logits.detach(), [p.grad for p in model.parameters()])
        assert float((out["sdpa"][0] - out["eager"][0]).abs().max()) < tol
        assert max(float((a - b).abs().max()) for a, b in zip(out["sdpa"][1], out["eager"][1], strict=True)) < tol
    assert len(calls) == 2 * 2  # "sdpa" ran the kernel in both layers, in both dtypes; "eager" never
    with pytest.raises(ValueError, match="attn_implementation"):
        transformer.TransformerConfig(30, attn_implementation="flash")


# --- m10 ---------------------------------------------------------------------------------------------
def test_incremental_bpe_equals_naive_recounting():
    text = resolve("tinystories/tinystories_sample_endoftext.txt").read_text()
    assert tk.BPETokenizer.train(text, 380, [SPECIAL]).merges == tk.naive_bpe_merges(text, 380, [SPECIAL])
    sh = resolve("tinyshakespeare/input.txt").read_text()[:60_000]
    assert tk.BPETokenizer.train(sh, 450).merges == tk.naive_bpe_merges(sh, 450, [])


@pytest.fixture(scope="module")
def bpe() -> tk.BPETokenizer:
    text = resolve("tinystories/tinystories_train_head.txt").read_text()[:300_000]
    return tk.BPETokenizer.train(text.replace("\n\n", f"\n{SPECIAL}", 500), 2000, [SPECIAL])


def _corpora() -> dict[str, str]:
    return {"tinystories": resolve("tinystories/tinystories_valid_head.txt").read_text()[:150_000],
            "wikitext": resolve("wikitext-2/wiki.test.tokens").read_text()[:150_000],
            "endoftext": resolve("tinystories/tinystories_sample_endoftext.txt").read_text()}


def test_bpe_exports_give_the_same_ids(bpe, tmp_path):
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    bpe.save(tmp_path)
    hf_tok = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    fast = PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"))
    tik = bpe.to_tiktoken()
    reloaded = tk.BPETokenizer.load(tmp_path)
    for name, text in _corpora().items():
        ids = bpe.encode(text)
        assert hf_tok.encode(text).ids == ids, name
        assert fast(text, add_special_tokens=False)["input_ids"] == ids, name
        assert tik.encode(text, allowed_special="all") == ids, name
        assert reloaded.encode(text) == ids and bpe.decode(ids) == text, name
    assert bpe.encode(f"x{SPECIAL}y").count(bpe.special_ids[SPECIAL]) == 1  # never split


def test_round_trip_any_unicode_and_streaming(bpe, tmp_path):
    rng = random.Random(1)
    blocks = [(0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x3FF), (0x4E00, 0x4FFF), (0x1F300, 0x1F64F), (0x300, 0x36F)]
    for _ in range(200):
        s = "".join(chr(rng.randint(*rng.choice(blocks))) if rng.random() > 0.1 else rng.choice(" \n\t")
                    for _ in range(rng.randint(0, 40)))
        assert bpe.decode(bpe.encode(s)) == s
    path = tmp_path / "big.txt"
    text = resolve("tinystories/tinystories_sample_endoftext.txt").read_text() * 20
    path.write_text(text)
    with open(path) as f:  # lines end inside pre-tokens' whitespace runs and around the special tokens
        assert list(bpe.encode_iterable(f)) == bpe.encode(text)
    pieces = [text[i: i + 7] for i in range(0, len(text), 7)]  # chunks cutting special tokens in two
    assert list(bpe.encode_iterable(pieces)) == bpe.encode(text)


def test_unigram_matches_hugging_face(tmp_path):
    from tokenizers import Tokenizer

    text = resolve("tinyshakespeare/input.txt").read_text()[:80_000]
    uni = tk.UnigramTokenizer.train(text, 600, [SPECIAL])
    uni.save(tmp_path)
    hf_tok = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    for name, sample in _corpora().items():
        ids = uni.encode(sample[:30_000])
        assert hf_tok.encode(sample[:30_000]).ids == ids, name
        assert uni.decode(ids) == sample[:30_000]
    assert tk.UnigramTokenizer.load(tmp_path).encode(text[:5000]) == uni.encode(text[:5000])
    assert uni.vocab_size == 600


def test_isotropy_reference():
    gen = torch.Generator().manual_seed(0)
    iso = embeddings.isotropy(torch.randn(4000, 8, generator=gen, dtype=torch.float64) * 0.1)
    skewed = embeddings.isotropy(torch.randn(4000, 8, generator=gen, dtype=torch.float64) * 0.1 + 2.0)
    assert iso > 0.9 and skewed < 0.1


# --- CLI -----------------------------------------------------------------------------------------------
def test_tokenizer_and_graph_cli(tmp_path):
    import shutil

    needs(shutil.which("dot") is not None, "Graphviz's dot is not installed (apt-get install graphviz)")
    corpus = resolve("tinystories/tinystories_sample_endoftext.txt")
    r = subprocess.run([CLI, "tokenizer", "train", str(corpus), "--vocab-size", "320", "--special-tokens", SPECIAL,
                        "--out", str(tmp_path / "tok"), "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["vocab_size"] == 320 and summary["bytes_per_token"] > 1.5
    assert tk.load_tokenizer(tmp_path / "tok").encode(SPECIAL) == [319]
    r = subprocess.run([CLI, "vocab-trie", str(tmp_path / "tok"), "--out", str(tmp_path / "trie.svg")],
                       capture_output=True, text=True)
    assert r.returncode == 0 and (tmp_path / "trie.svg").read_text().lstrip().startswith("<?xml"), r.stderr
    r = subprocess.run([CLI, "suffix-tree", "banana", "--out", str(tmp_path / "t.png")], capture_output=True, text=True)
    assert r.returncode == 0 and "15 distinct substrings" in r.stdout
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"
    for bad in (["tokenizer", "train", "/no/such.txt", "--out", str(tmp_path / "x")],
                ["tokenizer", "train", str(corpus), "--model", "wordpiece", "--out", str(tmp_path / "x")],
                ["tokenizer", "train", str(corpus), "--vocab-size", "100", "--out", str(tmp_path / "x")],
                ["suffix-tree", "abc", "--out", str(tmp_path / "t.gif")]):
        r = subprocess.run([CLI, *bad], capture_output=True, text=True)
        assert r.returncode == 2 and r.stderr.startswith("error:") and "Traceback" not in r.stderr, (bad, r.stderr)
    assert math.isfinite(summary["seconds"])
