"""llmlab.distributed against independent references: torch's bfloat16 conversion, torch.amp.GradScaler,
the ZeRO paper's published memory figures, torch.utils.checkpoint, nanoGPT's FLOP count; the pretraining
config's validation and the ``llmlab pretrain`` verb's input errors (the Ray Train run itself is tested by
lab m12's quick deliverable in test_labs, on the session's Ray head)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from llmlab.distributed import checkpointing, precision, throughput, zero
from llmlab.distributed.pretrain import FULL, QUICK, PretrainConfig, deepspeed_config
from llmlab.transformer import TransformerConfig, TransformerLM, cross_entropy


def test_bf16_round_equals_torch_on_every_kind_of_float():
    """Bit for bit (NaN: still NaN): 2^20 random bit patterns, exact ties both ways, overflow to inf."""
    rng = np.random.default_rng(0)
    bits = np.concatenate([rng.integers(0, 2**32, 2**20, dtype=np.uint64),
                           (rng.integers(0, 2**16, 4096, dtype=np.uint64) << 16) | 0x8000]).astype(np.uint32)
    x = torch.from_numpy(bits.view(np.int32).copy()).view(torch.float32)
    got, want = precision.bf16_round(x), x.to(torch.bfloat16).float()
    nan = torch.isnan(x)
    assert torch.equal(got[~nan].view(torch.int32), want[~nan].view(torch.int32))
    assert torch.isnan(got[nan]).all()
    assert precision.bf16_round(torch.tensor([3.4028235e38])).item() == math.inf
    with pytest.raises(TypeError):
        precision.bf16_round(torch.ones(2, dtype=torch.float64))


def test_loss_scale_schedule_matches_grad_scaler():
    from llmlab.labs.m12_pretraining import _grad_scaler_reference

    flags = (np.random.default_rng(1).random(200) < 0.15).tolist()
    ours = precision.loss_scale_updates(flags, 2.0**10, 2.0, 0.5, 4)
    assert (ours["scales"], ours["skipped"]) == _grad_scaler_reference(flags, 2.0**10, 2.0, 0.5, 4)
    grads, found = precision.unscale_grads([torch.tensor([2.0, 4.0]), torch.tensor([math.inf])], 2.0)
    assert found and torch.equal(grads[0], torch.tensor([1.0, 2.0]))


def test_zero_memory_reproduces_the_papers_figure_1():
    """Rajbhandari et al. 2020, Figure 1: 7.5B parameters on 64 GPUs, K = 12."""
    got = [zero.zero_model_state_bytes(7.5e9, 64, s) / 1e9 for s in zero.STAGES]
    assert got == pytest.approx([120, 31.4, 16.6, 1.9], abs=0.05)
    with pytest.raises(ValueError):
        zero.zero_model_state_bytes(1e9, 8, 4)


def test_partition_gather_and_reduce_scatter():
    flat = torch.arange(10.0)
    shards = zero.partition_flat(flat, 4)
    assert [s.tolist() for s in shards] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 0, 0]]
    assert torch.equal(zero.gather_flat(shards, 10), flat)
    grads = [torch.randn(10) for _ in range(4)]
    mean = torch.stack(grads).mean(0)
    assert torch.allclose(zero.gather_flat(zero.reduce_scatter(grads), 10), mean)


def test_checkpointed_transformer_equals_plain_and_torch_checkpoint():
    """Same loss and parameter gradients (1e-5) with llmlab's checkpointing, without it, and with
    torch.utils.checkpoint around each block; and a fraction of the activation bytes."""
    from torch.utils.checkpoint import checkpoint

    model = TransformerLM(TransformerConfig(65, context=32, d_model=64, n_layers=3, n_heads=4), seed=0)
    ids = torch.randint(0, 65, (4, 33), generator=torch.Generator().manual_seed(0))

    def grads(mode: str):
        model.zero_grad()
        model.activation_checkpointing = mode == "llmlab"
        if mode == "torch":
            forward = [b.forward for b in model.blocks]
            for b, f in zip(model.blocks, forward, strict=True):
                b.forward = lambda x, pos, bias=None, f=f: checkpoint(f, x, pos, bias, use_reentrant=False)
        loss = cross_entropy(model(ids[:, :-1]), ids[:, 1:])
        loss.backward()
        if mode == "torch":
            for b in model.blocks:
                del b.forward
        model.activation_checkpointing = False
        return loss.item(), [p.grad.clone() for p in model.parameters()]

    plain, ours, theirs = grads("plain"), grads("llmlab"), grads("torch")
    for other in (ours, theirs):
        assert other[0] == pytest.approx(plain[0], abs=1e-6)
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(other[1], plain[1], strict=True))
    trade = checkpointing.memory_time_trade(model, ids)
    assert trade["checkpointed"]["saved_bytes"] < 0.3 * trade["plain"]["saved_bytes"]


def test_flops_per_token_is_nanogpts_count():
    """nanoGPT's estimate_mfu: 6N + 12 L H Q T, for GPT-2 small (124M parameters, 12 layers, 12 x 64, T 1024)."""
    N, L, H, Q, T = 124_337_664, 12, 12, 64, 1024
    assert throughput.flops_per_token(N, L, T, H * Q) == 6 * N + 12 * L * H * Q * T
    assert throughput.mfu(1000.0, 1e9, 1e12) == pytest.approx(1.0)
    assert throughput.scaled_lr(1e-3, 8, 32, "sqrt") == pytest.approx(2e-3)
    with pytest.raises(ValueError):
        throughput.scaled_lr(1e-3, 8, 32, "cubic")


def test_step_tokens_per_s_counts_the_steps_tokens_on_the_threads_asked():
    """A training step's tokens/s: the step's tokens over its median time (a bigger batch of the same model moves
    more tokens a step, so more per second here than a step of one sequence), torch's threads restored after."""
    from llmlab.transformer import TransformerConfig

    torch.set_num_threads(2)
    cfg = TransformerConfig(32, context=16, d_model=16, n_layers=1, n_heads=2)
    one, many = (throughput.step_tokens_per_s(cfg, batch, steps=5, threads=1) for batch in (1, 64))
    assert torch.get_num_threads() == 2 and 0 < one < many


def test_pretrain_config_files_and_validation(tmp_path):
    (tmp_path / "a.toml").write_text("[pretrain]\nzero_stage = 2\nsteps = 5\nstage_sweep = [0, 3]\n")
    cfg = PretrainConfig.from_file(tmp_path / "a.toml")
    assert (cfg.zero_stage, cfg.steps, cfg.stage_sweep) == (2, 5, (0, 3))
    (tmp_path / "b.yaml").write_text("workers: 4\ngpus_per_worker: 1\n")
    assert PretrainConfig.from_file(tmp_path / "b.yaml").workers == 4
    for bad in ({"zero_stag": 3}, {"zero_stage": 4}, {"d_model": 30, "n_heads": 4}, {"workers": 0},
                {"data": "nowhere"}):
        with pytest.raises(ValueError):
            PretrainConfig.from_dict(bad)
    ds = deepspeed_config(QUICK, 3, 100_000)
    assert ds["bf16"] == {"enabled": True} and ds["zero_optimization"]["stage"] == 3
    # the full profile is the syllabus's ~70M-parameter model
    n = TransformerLM(TransformerConfig(65, context=FULL.context, d_model=FULL.d_model, n_layers=FULL.n_layers,
                                        n_heads=FULL.n_heads)).n_params
    assert 60e6 < n < 80e6


@pytest.mark.parametrize("content, message", [(None, "no such config file"), ("zero_stag = 3", "unknown"),
                                              ("zero_stage = 5", "ZeRO stages")])
def test_pretrain_verb_rejects_bad_configs_before_submitting(tmp_path, content, message):
    path = tmp_path / "c.toml"
    if content is not None:
        path.write_text(content)
    r = subprocess.run([str(Path(sys.executable).with_name("llmlab")), "pretrain", str(path),
                        "--address", "http://127.0.0.1:9"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr


def test_pretrain_job_entrypoint_round_trips_the_config():
    from llmlab.platform.jobs.pretrain_job import entrypoint

    cmd = entrypoint({"zero_stage": 3, "name": "a b'c"}, "/tmp/out dir")
    import shlex

    argv = shlex.split(cmd)
    assert argv[:3] == ["python", "-m", "llmlab.platform.jobs.pretrain_job"]
    assert json.loads(argv[argv.index("--config-json") + 1]) == {"zero_stage": 3, "name": "a b'c"}


def test_off_limits_torch_checkpoint_fails_in_the_sandbox():
    """m12's off-limits cheat: a checkpointed segment that hands the work to torch.utils.checkpoint fails
    its check in the sandbox, and the other checks stand."""
    from llmlab.labs import get_lab
    from llmlab.platform.grading import grade_source

    lab = get_lab("m12")
    source = lab.submission_source() + (
        "\n\ndef checkpoint_segment(fn, *args):\n"
        "    from torch.utils.checkpoint import checkpoint\n"
        "    return checkpoint(fn, *args, use_reentrant=True)\n")
    by = {c.name: c for c in grade_source(lab, source, trusted=True).checks}
    assert not by["checkpointed_segment"].passed and "off limits" in by["checkpointed_segment"].message
    assert by["bf16_rounding"].passed and by["zero_partition"].passed
