"""ZeRO (Rajbhandari et al. 2020): data-parallel ranks each keep a 1/N_d slice of the optimizer states
(stage 1), of the gradients too (stage 2), and of the parameters too (stage 3), gathering a layer's full
parameters only while it runs. Here: a flat tensor's partition across ranks and its gathering back, the
reduce-scatter that leaves each rank the mean gradient of its own slice, the paper's memory formulas, and
a measurement of the bytes a process really holds.
"""

from __future__ import annotations

import gc
import math
import warnings

import torch
from torch import Tensor

STAGES = (0, 1, 2, 3)
ADAM_K = 12  # mixed-precision Adam: fp32 master parameters, momentum and variance, 4 bytes each


def partition_flat(flat: Tensor, world_size: int) -> list[Tensor]:
    """Rank r's slice of a 1-D tensor: ``flat`` zero-padded to a multiple of ``world_size``, cut into equal
    contiguous pieces, the r-th of which rank r owns (as DeepSpeed's ZeRO-3 partitions each parameter)."""
    if flat.dim() != 1 or world_size < 1:
        raise ValueError("partition_flat takes a 1-D tensor and world_size >= 1")
    size = math.ceil(flat.numel() / world_size)
    padded = torch.cat([flat, flat.new_zeros(size * world_size - flat.numel())])
    return [padded[r * size:(r + 1) * size].clone() for r in range(world_size)]


def gather_flat(shards: list[Tensor], numel: int) -> Tensor:
    """The all-gather: every rank's slice, in rank order, without the padding."""
    return torch.cat(list(shards))[:numel]


def reduce_scatter(grads: list[Tensor]) -> list[Tensor]:
    """Each rank's full flat gradient in, each rank's slice of the mean gradient out (ZeRO-2/3's
    reduce-scatter, which moves as many bytes as half an all-reduce)."""
    return partition_flat(torch.stack(list(grads)).mean(0), len(grads))


def zero_model_state_bytes(psi: float, world_size: int, stage: int, k: int = ADAM_K) -> float:
    """Bytes of model states per rank for ``psi`` parameters trained with mixed-precision Adam (2-byte
    parameters and gradients, ``k`` bytes of optimizer state per parameter), ZeRO Section 5:
    stage 0: (2 + 2 + K) psi; 1: 2 psi + 2 psi + K psi / N_d; 2: 2 psi + (2 + K) psi / N_d;
    3: (2 + 2 + K) psi / N_d."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}")
    params, grads, states = 2 * psi, 2 * psi, k * psi
    split = [(1, 1, 1), (1, 1, world_size), (1, world_size, world_size), (world_size, world_size, world_size)][stage]
    return params / split[0] + grads / split[1] + states / split[2]


def live_tensor_bytes() -> int:
    """Bytes of every tensor storage this process can reach (each storage once), gradients included: what
    a rank holds, measured rather than predicted. The census walks the garbage collector's objects and each
    tensor's ``.grad`` (a gradient autograd wrote has no Python object of its own until it is read). CPU
    tensors only; on a GPU use the allocator's statistics."""
    seen, total = set(), 0

    def count(t) -> None:
        nonlocal total
        storage = t.untyped_storage()
        if storage.data_ptr() not in seen and storage.nbytes():
            seen.add(storage.data_ptr())
            total += storage.nbytes()

    with warnings.catch_warnings():  # isinstance() on torch's deprecated module proxies warns
        warnings.simplefilter("ignore")
        for obj in gc.get_objects():
            try:
                if not isinstance(obj, Tensor) or obj.device.type != "cpu":
                    continue
                count(obj)
                if obj.is_leaf and obj.requires_grad and obj.grad is not None:
                    count(obj.grad)
            except (RuntimeError, ReferenceError, NotImplementedError):
                continue
    return total


def held_bytes(device: str = "cpu") -> int:
    """Bytes of tensors this process holds on ``device``: the CUDA allocator's count on a GPU, else the
    census of :func:`live_tensor_bytes`."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        return torch.cuda.memory_allocated()
    return live_tensor_bytes()
