"""The published scaling-law data in the course's data folder (``llmlab data list``, set ``scaling``)."""

from __future__ import annotations

import csv
import json

import numpy as np

from llmlab.data import resolve

CHINCHILLA = "scaling/chinchilla_svg_extracted_data.csv"
ISOFLOPS = "scaling/cs336_isoflops_curves.json"
# Besiroglu et al. fit 240 of the 245 points read off Hoffmann et al.'s Figure 4: the five runs left out are
# the ones with the fewest tokens (D < 1e9, losses 3.4-5.0 at the top left of the figure).
FEWEST_TOKENS_LEFT_OUT = 5


def chinchilla_points(all_points: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, D, L) of Hoffmann et al.'s Figure 4 runs as Epoch AI extracted them; D = C / (6 N), as their
    notebook derives it (the file has no token column)."""
    with open(resolve(CHINCHILLA), newline="") as f:
        rows = list(csv.DictReader(f))
    N = np.array([float(r["Model Size"]) for r in rows])
    C = np.array([float(r["Training FLOP"]) for r in rows])
    L = np.array([float(r["loss"]) for r in rows])
    D = C / (6 * N)
    keep = np.ones(len(N), bool) if all_points else D >= np.sort(D)[FEWEST_TOKENS_LEFT_OUT]
    return N[keep], D[keep], L[keep]


def isoflop_runs() -> list[dict]:
    """The CS336 IsoFLOP runs: {"parameters", "compute_budget", "final_loss"} (72 runs, 9 budgets)."""
    return json.loads(resolve(ISOFLOPS).read_text())
