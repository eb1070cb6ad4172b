"""Quantization against references: INT8 round trips within half a step, LLM.int8() equals the float product
up to the INT8 error of its regular part (outlier dimensions exact), GPTQ's layer error is below RTN's on the
same grid, and perplexity orders full precision <= GPTQ <= RTN for a trained model; quantized folders save
and load."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from llmlab import transformer as T
from llmlab.data import resolve
from llmlab.inference import quant
from llmlab.tokenization import CharTokenizer


def test_int8_absmax_and_llm_int8():
    gen = torch.Generator().manual_seed(0)
    W = torch.randn(32, 48, generator=gen, dtype=torch.float64)
    q, s = quant.int8_absmax_quantize(W)
    assert q.dtype == torch.int8 and int(q.abs().max()) == 127
    assert torch.all((quant.int8_dequantize(q, s) - W).abs() <= s[:, None] / 2 + 1e-12)  # half a step
    x = torch.randn(10, 48, generator=gen, dtype=torch.float64)
    x[:, [3, 17]] *= 40  # outlier feature dimensions
    exact = x @ W.T
    mixed = quant.llm_int8_matmul(x, W, threshold=6.0)
    plain = quant.llm_int8_matmul(x, W, threshold=1e9)  # everything in INT8
    assert (mixed - exact).abs().max() < (plain - exact).abs().max() / 5
    regular = torch.ones(48, dtype=torch.bool)
    regular[[3, 17]] = False
    only_regular = quant.llm_int8_matmul(x[:, regular], W[:, regular], threshold=1e9)
    assert torch.allclose(mixed - x[:, ~regular] @ W[:, ~regular].T, only_regular, atol=1e-9)


@pytest.mark.parametrize("bits", [3, 4, 8])
def test_gptq_beats_round_to_nearest_on_the_same_grid(bits):
    gen = torch.Generator().manual_seed(bits)
    X = torch.randn(1500, 64, generator=gen) @ torch.randn(64, 64, generator=gen) * 0.5  # correlated inputs
    W = torch.randn(80, 64, generator=gen)
    res = quant.gptq_quantize(W, quant.hessian(X), bits, group_size=32, block_size=16)
    assert int(res.codes.max()) <= 2**bits - 1
    gptq, rtn = quant.layer_error(W, res.dequantize(), X), quant.layer_error(W, quant.rtn_quantize(W, bits, 32), X)
    assert gptq < 0.8 * rtn, (gptq, rtn)


@pytest.fixture(scope="module")
def trained():
    valid = resolve("wikitext-2/wiki.valid.tokens").read_text()
    test = resolve("wikitext-2/wiki.test.tokens").read_text()[:150_000]
    tok = CharTokenizer.train(valid)
    train_ids, test_ids = np.array(tok.encode(valid)), np.array(tok.encode(test))
    model = T.TransformerLM(T.TransformerConfig(tok.vocab_size, context=64, d_model=96, n_heads=4), seed=0)
    T.train(model, train_ids, test_ids, T.TrainConfig(steps=250, eval_every=250, eval_batches=2))
    return model, tok, train_ids, test_ids


def test_perplexity_orders_fp_gptq_rtn_and_checkpoints_load(trained, tmp_path):
    model, tok, train_ids, test_ids = trained
    ppl = lambda m: float(np.exp(T.evaluate(m, test_ids, 30, 32)))  # noqa: E731 - WikiText-2 test characters
    calib = torch.from_numpy(train_ids[: 64 * 32].reshape(32, 64))
    out = {"fp": ppl(model)}
    saved = None
    for method in ("gptq", "rtn"):
        m = copy.deepcopy(model)
        q = quant.quantize_model(m, quant.QuantConfig(method, bits=3, group_size=32), calib)
        out[method] = ppl(m)
        if method == "gptq":
            assert all(e["gptq"] < e["rtn"] for e in q["errors"].values())
            saved = quant.save_quantized(m, q, tmp_path / "q", tok)
            x = torch.from_numpy(test_ids[:64])[None]
            assert torch.allclose(quant.load_quantized(saved)(x), m(x), atol=1e-5)
            assert (saved / "quantized.safetensors").stat().st_size < (saved / "model.safetensors").stat().st_size
    assert out["fp"] <= out["gptq"] <= out["rtn"], out
