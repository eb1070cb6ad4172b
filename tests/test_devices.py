"""The engine's device and precision paths, selected by configuration (``llmlab serve inference --device cuda
--dtype bfloat16``): float32 on CUDA is exact (greedy equals a full-sequence argmax loop, with continuous
batching and both kinds of speculation); bfloat16 on CPU and CUDA stays within bfloat16's error of the
float32 model; GPTQ and LLM.int8() on CUDA agree with the CPU. The CUDA cases skip where no CUDA GPU is
present (CI has none); they were run on an H200 lent for issue 5."""

from __future__ import annotations

import pytest
import torch

from llmlab import hf
from llmlab.inference import Engine, SamplingParams, kvcache, quant
from llmlab.tokenization import CharTokenizer
from llmlab.transformer import TransformerConfig, TransformerLM

V = 40
CUDA = pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"))
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _models(device, dtype=torch.float32):
    target = TransformerLM(TransformerConfig(V, context=96, d_model=64, n_heads=4, n_layers=2), seed=1)
    draft = TransformerLM(TransformerConfig(V, context=96, d_model=32, n_heads=2, n_layers=1), seed=2)
    return target.to(device, dtype).eval(), draft.to(device, dtype).eval()


def _prompts(n=9):
    gen = torch.Generator().manual_seed(0)
    return [torch.randint(0, V, (k,), generator=gen).tolist() for k in (1, 3, 5, 8, 13, 21, 2, 34, 4)[:n]]


@needs_cuda
@pytest.mark.parametrize("mode", ["plain", "draft", "ngram"])
def test_cuda_float32_greedy_is_exact(mode):
    target, draft = _models("cuda")
    kwargs = {"plain": {}, "draft": {"draft": draft, "spec_tokens": 4}, "ngram": {"ngram": (3, 1), "spec_tokens": 3}}
    engine = Engine(target, max_batch=4, **kwargs[mode])
    prompts = _prompts()
    reqs = engine.generate(prompts, SamplingParams(max_tokens=16, temperature=0))
    with torch.no_grad():
        for p, r in zip(prompts, reqs, strict=True):
            ids = list(p)
            for _ in range(16):
                ids.append(int(target(torch.tensor([ids], device="cuda"))[0, -1].argmax()))
            assert r.output_ids == ids[len(p):]
    assert engine.cache.k[0].device.type == "cuda"


@needs_cuda
def test_cuda_sampling_with_a_seed_equals_cpu():
    """Sampling runs on the CPU from the step's logits, so a seed draws the same tokens on either device
    (up to float32 differences between the devices' kernels, which a 40-token vocabulary does not reach)."""
    params = SamplingParams(max_tokens=12, temperature=0.9, top_p=0.95, seed=7)
    outs = []
    for device in ("cpu", "cuda"):
        target, _ = _models(device)
        outs.append([r.output_ids for r in Engine(target, max_batch=4).generate(_prompts(4), params)])
    assert outs[0] == outs[1]


@pytest.mark.parametrize("device", ["cpu", CUDA])
def test_bfloat16_within_bfloat16_error(device):
    """The KV-cache path in bfloat16 (prefill, then one token at a time) against the float32 model on the
    same tokens: logits within 4% of their range; each greedy choice is the float32 argmax or within 4% of
    the range of it (a near tie that bfloat16's 8-bit mantissa cannot separate)."""
    ref, _ = _models(device)
    bf16, _ = _models(device, torch.bfloat16)
    engine = Engine(bf16, max_batch=4)
    reqs = engine.generate(_prompts(), SamplingParams(max_tokens=20, temperature=0))
    with torch.no_grad():
        for r in reqs:
            full = ref(torch.tensor([r.all_ids], device=device))[0].float().cpu()
            scale = float(full.max() - full.min())
            for i, tok in enumerate(r.output_ids):
                row = full[len(r.prompt_ids) - 1 + i]
                assert float(row.max() - row[tok]) <= 0.04 * scale
            # the cache path's logits, replayed on the same tokens
            cache = kvcache.KVCache(bf16, 1)
            slot = cache.allocate()
            first = kvcache.forward(bf16, cache, [slot], [r.prompt_ids])[0]
            steps = [kvcache.forward(bf16, cache, [slot], [[t]])[0] for t in r.output_ids[:-1]]
            ours = torch.cat([first, *steps])
            assert float((ours - full[: len(ours)]).abs().max()) <= 0.04 * scale


@needs_cuda
def test_llama_folder_in_bfloat16_on_cuda_against_transformers(tmp_path):
    """`Engine.from_folder(..., dtype=bfloat16, device="cuda")`, as the service loads it, against
    transformers' LlamaForCausalLM in float32 on the same tokens."""
    transformers = pytest.importorskip("transformers")
    tok = CharTokenizer.train("abcdefghijklmnopqrstuvwxyz .,ABCDEFGHIJKL\n")
    model = TransformerLM(TransformerConfig(tok.vocab_size, context=96, d_model=64, n_heads=4), seed=3)
    folder = hf.export(model, tmp_path / "m", tok)
    engine = Engine.from_folder(folder, dtype=torch.bfloat16, device="cuda", max_batch=2)
    assert engine.cache.k[0].dtype == torch.bfloat16 and engine.cache.k[0].device.type == "cuda"
    theirs = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).cuda().eval()
    for r in engine.generate(["the quick brown fox", "ABC def"], SamplingParams(max_tokens=16, temperature=0)):
        with torch.no_grad():
            full = theirs(torch.tensor([r.all_ids], device="cuda")).logits[0].float().cpu()
        scale = float(full.max() - full.min())
        for i, t in enumerate(r.output_ids):
            row = full[len(r.prompt_ids) - 1 + i]
            assert float(row.max() - row[t]) <= 0.04 * scale


@needs_cuda
def test_quantization_on_cuda_agrees_with_cpu():
    gen = torch.Generator().manual_seed(0)
    W = torch.randn(64, 128, generator=gen)
    X = torch.randn(512, 128, generator=gen)
    H = quant.hessian(X)
    cpu = quant.gptq_quantize(W, H, 4, 32).dequantize()
    gpu = quant.gptq_quantize(W.cuda(), H.cuda(), 4, 32).dequantize().cpu()
    err_cpu, err_gpu = quant.layer_error(W, cpu, X), quant.layer_error(W, gpu, X)
    assert abs(err_gpu - err_cpu) <= 0.02 * err_cpu
    assert float((cpu != gpu).float().mean()) < 0.02  # a rounding flipped here and there, not a different answer
    x = torch.randn(16, 128, generator=gen)
    x[:, [5, 77]] *= 30
    torch.testing.assert_close(quant.llm_int8_matmul(x.cuda(), W.cuda()).cpu(), quant.llm_int8_matmul(x, W),
                               atol=1e-3, rtol=1e-3)
