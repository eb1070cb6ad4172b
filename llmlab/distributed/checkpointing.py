"""Activation checkpointing (Chen et al. 2016): a segment keeps only its inputs during the forward pass and
runs again during the backward pass to rebuild what its gradients need. Memory for activations falls from
every intermediate of every layer to one input per layer, for about one extra forward pass of compute.

The recomputation calls the segment again as it was called (a module through ``__call__``), so hooks run
again too: DeepSpeed ZeRO-3 gathers a layer's partitioned parameters in such hooks.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


class _Checkpoint(torch.autograd.Function):
    @staticmethod
    def forward(ctx, fn, *args):
        ctx.fn = fn
        ctx.tensor_at = [i for i, a in enumerate(args) if isinstance(a, Tensor)]
        ctx.others = [None if isinstance(a, Tensor) else a for a in args]
        ctx.save_for_backward(*(args[i] for i in ctx.tensor_at))
        with torch.no_grad():
            return fn(*args)

    @staticmethod
    def backward(ctx, grad_out):
        args = list(ctx.others)
        for i, t in zip(ctx.tensor_at, ctx.saved_tensors, strict=True):
            args[i] = t.detach().requires_grad_(t.requires_grad)
        with torch.enable_grad():
            out = ctx.fn(*args)
        torch.autograd.backward(out, grad_out)  # parameters' .grad accumulate here, inputs' below
        return (None, *(a.grad if isinstance(a, Tensor) and a.requires_grad else None for a in args))


def checkpoint_segment(fn: Callable[..., Tensor], *args) -> Tensor:
    """``fn(*args)`` (one tensor out) with activation checkpointing: the same value and the same gradients
    for the inputs and for every parameter ``fn`` uses, while only the tensor inputs are saved for backward.
    At least one input must require grad (else, as with any re-entrant checkpoint, no backward runs)."""
    return _Checkpoint.apply(fn, *args)


def saved_activation_bytes(fn: Callable[..., Tensor], *args) -> int:
    """Bytes autograd keeps for the backward pass of ``fn(*args)`` (each storage once; parameters, which
    are kept anyway, not counted)."""
    params = {p.untyped_storage().data_ptr() for a in (fn,) if isinstance(a, torch.nn.Module) for p in a.parameters()}
    seen: dict[int, int] = {}

    def pack(t: Tensor):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*args)
    return sum(seen.values())


def memory_time_trade(model, ids: Tensor, repeats: int = 3) -> dict:
    """Activation bytes saved for backward and the best forward+backward time of a TransformerLM on
    ``ids`` (B, T+1), without and with checkpointing every block."""
    import time

    from llmlab.transformer import cross_entropy

    loss = lambda x: cross_entropy(model(x), ids[:, 1:])
    rows = {}
    for on in (False, True):
        model.activation_checkpointing = on
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            loss(ids[:, :-1]).backward()
            times.append(time.perf_counter() - t0)
        rows["checkpointed" if on else "plain"] = {"saved_bytes": saved_activation_bytes(loss, ids[:, :-1]),
                                                   "step_seconds": min(times)}
    model.activation_checkpointing = False
    return rows
