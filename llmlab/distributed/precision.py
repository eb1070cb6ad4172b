"""Mixed precision from the bits up: bfloat16 is float32 with the low 16 mantissa bits rounded away, and
fp16 training needs a loss scale that grows while gradients stay finite and halves (skipping the step) when
they overflow. bf16 keeps float32's 8-bit exponent, so it needs no loss scale: DeepSpeed's bf16 mode has none.
"""

from __future__ import annotations

import torch
from torch import Tensor

_LOW = 0xFFFF  # the 16 mantissa bits bf16 drops


def bf16_round(x: Tensor) -> Tensor:
    """float32 -> the nearest bfloat16 value (round to nearest, ties to even), returned as float32.

    On the int32 bits: add 0x7FFF plus the lowest kept bit, then clear the low 16 bits; a carry out of the
    mantissa rounds up the exponent (the largest floats become inf, as in IEEE). NaN stays a (quiet) NaN.
    Equal to ``x.to(torch.bfloat16).float()``."""
    if x.dtype != torch.float32:
        raise TypeError(f"bf16_round takes float32, got {x.dtype}")
    bits = x.contiguous().view(torch.int32).to(torch.int64) & 0xFFFFFFFF  # unsigned
    lsb = (bits >> 16) & 1
    rounded = (bits + 0x7FFF + lsb) & ~_LOW
    rounded = torch.where(torch.isnan(x), (bits | 0x400000) & ~_LOW, rounded)  # a quiet NaN, sign kept
    signed = torch.where(rounded >= 2**31, rounded - 2**32, rounded)
    return signed.to(torch.int32).view(torch.float32)


def unscale_grads(grads: list[Tensor], scale: float) -> tuple[list[Tensor], bool]:
    """Gradients of a loss multiplied by ``scale``, divided back; and whether any is inf or NaN (an
    overflow: the step must be skipped)."""
    found_inf = any(not bool(torch.isfinite(g).all()) for g in grads)
    return [g / scale for g in grads], found_inf


def loss_scale_updates(found_inf: list[bool], init_scale: float = 2.0**16, growth_factor: float = 2.0,
                       backoff_factor: float = 0.5, growth_interval: int = 2000) -> dict:
    """Dynamic loss scaling over a run whose step i overflowed iff ``found_inf[i]``: the scale used at each
    step and which steps were skipped. An overflow multiplies the scale by ``backoff_factor`` and restarts
    the count; ``growth_interval`` finite steps in a row multiply it by ``growth_factor`` (torch.amp's
    GradScaler and DeepSpeed's fp16 scaler, without hysteresis)."""
    scale, good, scales, skipped = float(init_scale), 0, [], []
    for inf in found_inf:
        scales.append(scale)
        skipped.append(bool(inf))
        if inf:
            scale, good = scale * backoff_factor, 0
        else:
            good += 1
            if good == growth_interval:
                scale, good = scale * growth_factor, 0
    return {"scales": scales, "skipped": skipped, "final_scale": scale}
