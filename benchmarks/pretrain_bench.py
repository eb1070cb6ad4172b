"""Pretraining throughput on CPU: the Ray Train + DeepSpeed job (ZeRO-0 and ZeRO-3, bf16 and float32)
against what a user would run instead, plain PyTorch in one process and DDP over gloo in two, on the same
model and the same global batch. Tokens/s as ratios to the single process, and the bytes of tensors each
rank holds after a backward pass (parameters, gradients, optimizer states, DeepSpeed's or DDP's buffers).

    python benchmarks/pretrain_bench.py        (a local Ray head: started if none answers)
"""

from __future__ import annotations

import dataclasses
import gc
import os
import socket
import tempfile
import time

import torch

# before anything imports Ray: its driver must reach the loopback-only local head as 127.0.0.1
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

from llmlab.distributed import pretrain, zero  # noqa: E402
from llmlab.transformer import TransformerConfig, TransformerLM, cross_entropy, get_batch  # noqa: E402

CFG = dataclasses.replace(pretrain.QUICK, d_model=128, n_layers=4, n_heads=4, context=128, micro_batch=8, steps=2,
                          eval_every=2, eval_batches=1, sweep_steps=6, cpus_per_worker=1.0)
STEPS = 8  # timed steps of the plain PyTorch runs, after one untimed


def _tokens():
    from llmlab.data import shakespeare

    _, train, _ = shakespeare.char_tokens()
    return train


def _model(vocab: int) -> TransformerLM:
    return TransformerLM(TransformerConfig(vocab, context=CFG.context, d_model=CFG.d_model, n_layers=CFG.n_layers,
                                           n_heads=CFG.n_heads), seed=0)


def _torch_steps(model, opt, train, batch: int, bf16: bool) -> tuple[float, int]:
    """(tokens/s over STEPS steps after a warm-up step, bytes of tensors held after the first backward)."""
    gen = torch.Generator().manual_seed(0)
    held, t0 = 0, 0.0
    for step in range(STEPS + 1):
        if step == 1:
            t0 = time.perf_counter()
        x, y = get_batch(train, batch, CFG.context, generator=gen)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if step == 1:
            del loss
            gc.collect()
            held = zero.live_tensor_bytes()
        opt.step()
    return STEPS * batch * CFG.context / (time.perf_counter() - t0), held


def single_process(bf16: bool) -> dict:
    torch.set_num_threads(2)
    train = _tokens()
    gc.collect()
    base = zero.live_tensor_bytes()
    model = _model(int(train.max()) + 1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    tps, held = _torch_steps(model, opt, train, CFG.micro_batch * CFG.workers, bf16)
    return {"tokens_per_s": tps, "bytes_per_rank": held - base, "ranks": 1}


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    train = _tokens()
    gc.collect()
    base = zero.live_tensor_bytes()
    model = torch.nn.parallel.DistributedDataParallel(_model(int(train.max()) + 1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    tps, held = _torch_steps(model, opt, train, CFG.micro_batch, bf16=False)
    result = torch.tensor([tps, float(held - base)], dtype=torch.float64)
    dist.all_reduce(result)  # tokens/s adds up over ranks; bytes: the mean per rank below
    if rank == 0:
        torch.save(result, out)
    dist.destroy_process_group()


def ddp() -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as d:
        torch.multiprocessing.spawn(_ddp_worker, args=(CFG.workers, port, f"{d}/r.pt"), nprocs=CFG.workers)
        tps, held = torch.load(f"{d}/r.pt").tolist()
    return {"tokens_per_s": tps, "bytes_per_rank": held / CFG.workers, "ranks": CFG.workers}


def ray_deepspeed(bf16: bool) -> list[dict]:
    """ZeRO-0 and ZeRO-3 from the job's own stage sweep (the same measurement the lab reports)."""
    cfg = dataclasses.replace(CFG, bf16=bf16, stage_sweep=(0, 3))
    with tempfile.TemporaryDirectory() as d:
        summary = pretrain.pretrain(cfg, d)
    return [{"stage": s["stage"], "tokens_per_s": s["tokens_per_s"], "bytes_per_rank": s["bytes_after_backward"],
             "ranks": cfg.workers} for s in summary["stage_sweep"]]


def main() -> dict:
    from llmlab.platform.jobs import local

    address = local.ensure(None)  # the local head: the driver connects to it like any Ray job's
    os.environ.update(RAY_ADDRESS=f"127.0.0.1:{local.DEFAULT_GCS_PORT}", GLOO_SOCKET_IFNAME="lo")
    rows = {"torch, 1 process, fp32": single_process(False), "torch, 1 process, bf16 autocast": single_process(True),
            "torch DDP, 2 ranks, fp32": ddp()}
    for bf16 in (False, True):
        for r in ray_deepspeed(bf16):
            rows[f"Ray Train + DeepSpeed ZeRO-{r['stage']}, {'bf16' if bf16 else 'fp32'}"] = r
    base = rows["torch, 1 process, fp32"]["tokens_per_s"]
    for r in rows.values():
        r["ratio_vs_single_process"] = r["tokens_per_s"] / base
    n = _model(65).n_params
    return {"name": "pretrain", "params": n, "global_batch": CFG.micro_batch * CFG.workers, "context": CFG.context,
            "address": address, "rows": rows}


def report(res: dict) -> None:
    print(f"pretraining on CPU: {res['params'] / 1e6:.2f}M params, global batch {res['global_batch']} x "
          f"{res['context']} tokens")
    for name, r in res["rows"].items():
        print(f"  {name:<38} {r['tokens_per_s']:8,.0f} tokens/s  {r['ratio_vs_single_process']:5.2f}x  "
              f"{r['bytes_per_rank'] / res['params']:5.1f} bytes/param per rank ({r['ranks']} rank(s))")


if __name__ == "__main__":
    report(main())
