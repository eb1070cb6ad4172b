"""llmlab's NumPy tensor engine against torch autograd: a transformer FFN block, forward + backward.

Both compute gelu(x W1 + b1) W2 + b2 in float64 on the CPU and backpropagate a scalar loss; the ratio is
llmlab time / torch time (higher = llmlab slower), median of repeated runs.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from llmlab import autodiff


def _median_time(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(repeat: int = 15) -> dict:
    rng = np.random.default_rng(0)
    rows = []
    for B, T, C in ((8, 64, 64), (8, 128, 128), (4, 256, 256)):
        arrays = [rng.normal(size=(B, T, C)), rng.normal(size=(C, 4 * C)) / np.sqrt(C), rng.normal(size=4 * C),
                  rng.normal(size=(4 * C, C)) / np.sqrt(4 * C), rng.normal(size=C)]

        def ours(arrays=arrays):
            ts = [autodiff.Tensor(a) for a in arrays]
            autodiff.ffn_block(*ts).sum().backward()

        def theirs(arrays=arrays):
            ts = [torch.from_numpy(a).requires_grad_() for a in arrays]
            (F.gelu(ts[0] @ ts[1] + ts[2]) @ ts[3] + ts[4]).sum().backward()

        t_ours, t_torch = _median_time(ours, repeat), _median_time(theirs, repeat)
        rows.append({"shape": f"B={B} T={T} C={C} H={4 * C}", "llmlab_s": t_ours, "torch_s": t_torch,
                     "ratio": t_ours / t_torch})
    return {"benchmark": "autodiff_ffn", "threads": torch.get_num_threads(), "rows": rows}


if __name__ == "__main__":
    for r in main()["rows"]:
        print(f"{r['shape']:<28} llmlab {r['llmlab_s'] * 1e3:8.1f} ms  torch {r['torch_s'] * 1e3:8.1f} ms  "
              f"ratio {r['ratio']:.2f}x")
