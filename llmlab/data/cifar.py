"""CIFAR-10 subsets as numpy arrays (the shared ``cifar-tiny`` npz files: keys x (N,32,32,3) uint8, y)."""

from __future__ import annotations

import numpy as np

from llmlab.data import resolve

FILES = {"test": "cifar-tiny/cifar10_test.npz", "train": "cifar-tiny/cifar10_train_5k.npz"}


def load(split: str = "train", path=None) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 32, 32, 3) uint8 and labels (N,) for ``split`` ("train": 5,000, "test": 10,000).
    The rows are sorted by class: take random subsets, never the first rows."""
    if split not in FILES and path is None:
        raise ValueError(f"split must be one of {sorted(FILES)}")
    with np.load(resolve(FILES.get(split, ""), path), allow_pickle=False) as f:
        return f["x"], f["y"].astype(np.int64)
