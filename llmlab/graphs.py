"""Sparse attention patterns as graphs (lab m06).

A causal attention pattern is a boolean (n, n) mask, ``mask[i, j]`` True when position i attends to
position j <= i: the adjacency matrix of a DAG whose edges carry information from j to i in one layer.
Stacking L layers (with the residual stream, so information also stays where it is) composes the graph L
times; reachability after L layers and the fewest layers from j to i follow from boolean matrix products.
"""

from __future__ import annotations

import torch
from torch import Tensor

PATTERNS = ("dense", "local", "strided", "global", "dilated")


def attention_pattern(kind: str, n: int, window: int = 4, stride: int = 4, n_global: int = 1,
                      dilation: int = 2) -> Tensor:
    """The causal mask (n, n) of a pattern; every position attends to itself.

    dense: all j <= i. local: the last ``window`` positions (i - window < j <= i). strided (Child et al.
    2019, both heads together): the last ``stride`` positions and every position j with (i - j) % stride == 0.
    global: local plus the first ``n_global`` positions, which every later position sees and which see all
    before them. dilated: j = i - m * dilation for m = 0 .. window - 1.
    """
    i = torch.arange(n)[:, None]
    j = torch.arange(n)[None, :]
    causal, gap = j <= i, i - j
    if kind == "dense":
        mask = causal
    elif kind == "local":
        mask = causal & (gap < window)
    elif kind == "strided":
        mask = causal & ((gap < stride) | (gap % stride == 0))
    elif kind == "global":
        mask = causal & ((gap < window) | (j < n_global) | (i < n_global))
    elif kind == "dilated":
        mask = causal & (gap % dilation == 0) & (gap < window * dilation)
    else:
        raise ValueError(f"unknown pattern {kind!r}; one of {PATTERNS}")
    return mask


def reachability(mask: Tensor, layers: int) -> Tensor:
    """(n, n) bool: True at (i, j) when information at position j can reach position i within ``layers``
    layers of attention with ``mask`` (plus the residual stream, which keeps each position's own state)."""
    step = mask.bool() | torch.eye(mask.shape[0], dtype=torch.bool)
    reach = torch.eye(mask.shape[0], dtype=torch.bool)
    for _ in range(layers):
        reach = (step.to(torch.int64) @ reach.to(torch.int64)) > 0
    return reach


def shortest_path_lengths(mask: Tensor) -> Tensor:
    """(n, n) int64: the fewest layers for information to go from position j to position i (0 on the
    diagonal), -1 where it never arrives."""
    n = mask.shape[0]
    step = (mask.bool() | torch.eye(n, dtype=torch.bool)).to(torch.int64)
    dist = torch.full((n, n), -1, dtype=torch.int64)
    reach = torch.eye(n, dtype=torch.bool)
    dist[reach] = 0
    for layer in range(1, n):
        new = (step @ reach.to(torch.int64)) > 0
        if torch.equal(new, reach):
            break
        dist[new & ~reach] = layer
        reach = new
    return dist


def layers_to_full_reach(mask: Tensor) -> int:
    """Layers until the last position sees every earlier one (-1 if never): the pattern's receptive depth."""
    last = shortest_path_lengths(mask)[-1]
    return -1 if (last < 0).any() else int(last.max())


def to_dot(mask: Tensor, name: str = "attention") -> str:
    """The pattern as a Graphviz DAG (edges j -> i, self-loops left out)."""
    n = mask.shape[0]
    lines = [f"digraph {name} {{", "  rankdir=LR;", "  node [shape=circle, width=0.3];"]
    lines += [f"  {j} -> {i};" for i in range(n) for j in range(n) if mask[i, j] and i != j]
    lines.append("}")
    return "\n".join(lines) + "\n"
