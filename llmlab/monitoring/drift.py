"""Perplexity drift: served text scored by a reference model, the distribution of its per-token negative
log-likelihoods in a sliding window compared with a reference window by the population stability index (PSI,
bins at the reference's deciles) and the two-sample Kolmogorov-Smirnov statistic, exported as Prometheus
gauges for an alert rule."""

from __future__ import annotations

import threading
from collections import deque

import numpy as np
from prometheus_client.core import GaugeMetricFamily

PSI_EPS = 1e-4  # a bin's share floor: an empty bin would make the log infinite


def psi(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """Σ (c_i − r_i) ln(c_i / r_i) over ``bins`` bins cut at the reference's quantiles (the outer bins open to
    ±∞), each share floored at 1e-4. Rules of thumb: < 0.1 stable, 0.1-0.25 a moderate shift, > 0.25 a major
    one."""
    reference, current = np.asarray(reference, dtype=np.float64), np.asarray(current, dtype=np.float64)
    edges = np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1])
    r = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=bins) / len(reference)
    c = np.bincount(np.searchsorted(edges, current, side="right"), minlength=bins) / len(current)
    r, c = np.maximum(r, PSI_EPS), np.maximum(c, PSI_EPS)
    return float(np.sum((c - r) * np.log(c / r)))


def ks_statistic(reference: np.ndarray, current: np.ndarray) -> float:
    """The two-sample Kolmogorov-Smirnov statistic: sup |F_ref − F_cur| over all values."""
    a, b = np.sort(np.asarray(reference, dtype=np.float64)), np.sort(np.asarray(current, dtype=np.float64))
    grid = np.concatenate([a, b])
    return float(np.max(np.abs(np.searchsorted(a, grid, side="right") / len(a)
                               - np.searchsorted(b, grid, side="right") / len(b))))


def token_nll(model, tokenizer, texts: list[str], context: int | None = None) -> np.ndarray:
    """Per-token negative log-likelihoods (nats) of each text under ``model`` (an llmlab TransformerLM), its
    first token excluded, texts cut to the model's context; all texts' tokens concatenated. (torch is imported
    here: the SLO tooling imports this module for its alert rule.)"""
    import torch

    context = context or model.config.context
    out = []
    with torch.no_grad():
        for text in texts:
            ids = tokenizer.encode(text)[:context]
            if len(ids) < 2:
                continue
            x = torch.tensor([ids])
            logp = torch.log_softmax(model(x)[0, :-1].double(), -1)
            out.append(-logp.gather(1, x[0, 1:, None])[:, 0].numpy())
    return np.concatenate(out) if out else np.zeros(0)


class DriftMonitor:
    """A sliding window of the last ``window`` per-token NLLs of served text, compared with a reference
    window; thread-safe, and a Prometheus collector: llmlab_drift_psi, llmlab_drift_ks, llmlab_drift_mean_nll
    and llmlab_drift_window_tokens, labelled by model (NaN until the window holds ``min_tokens``)."""

    def __init__(self, reference: np.ndarray, model_name: str, window: int = 2000, min_tokens: int = 500,
                 bins: int = 10):
        self.reference = np.asarray(reference, dtype=np.float64)
        self.model_name, self.bins, self.min_tokens = model_name, bins, min_tokens
        self.window: deque[float] = deque(maxlen=window)
        self.lock = threading.Lock()

    def observe(self, nll: np.ndarray) -> None:
        with self.lock:
            self.window.extend(np.asarray(nll, dtype=np.float64).tolist())

    def statistics(self) -> dict:
        with self.lock:
            current = np.array(self.window)
        if len(current) < self.min_tokens:
            return {"psi": float("nan"), "ks": float("nan"), "mean_nll": float("nan"), "tokens": len(current)}
        return {"psi": psi(self.reference, current, self.bins), "ks": ks_statistic(self.reference, current),
                "mean_nll": float(current.mean()), "tokens": len(current)}

    def collect(self):
        s = self.statistics()
        for key, help_text in (("psi", "Population stability index of per-token NLL against the reference"),
                               ("ks", "Kolmogorov-Smirnov statistic of per-token NLL against the reference"),
                               ("mean_nll", "Mean per-token NLL (nats) of the window"),
                               ("window_tokens", "Tokens in the drift window")):
            g = GaugeMetricFamily(f"llmlab_drift_{key}", help_text, labels=["model"])
            g.add_metric([self.model_name], s["tokens" if key == "window_tokens" else key])
            yield g


PSI_ALERT = 0.25  # a major shift by the usual rule of thumb


def alert_rules(threshold: float = PSI_ALERT, hold: str = "5m") -> dict:
    """A Prometheus rule file: LLMLabPerplexityDrift fires when a model's PSI stays above ``threshold`` for
    ``hold`` (dashboards/rules/drift.rules.yaml; live demonstrations hold for seconds)."""
    return {"groups": [{"name": "llmlab-drift", "rules": [{
        "alert": "LLMLabPerplexityDrift",
        "expr": f"llmlab_drift_psi > {threshold:g}",
        "for": hold,
        "labels": {"severity": "ticket"},
        "annotations": {
            "summary": "Served text of {{ $labels.model }} drifted from the reference "
                       "(PSI {{ $value | printf \"%.2f\" }})",
            "description": f"The population stability index of per-token NLL under the reference model, against "
                           f"the reference window, has exceeded {threshold:g} for {hold}: the traffic is no longer "
                           f"what the model was validated on."}}]}]}
