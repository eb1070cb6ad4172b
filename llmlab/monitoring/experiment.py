"""Lab m19's deliverable, live: a small LM trained here on Tiny Shakespeare and served by ``llmlab serve
inference``, a Triton-format endpoint beside it, the exporter normalizing both, a drift monitor scoring every
prompt served with the model, and a real Prometheus scraping them with the drift alert and the
SLO rules. Traffic starts as Shakespeare and switches to Wikipedia: the drift statistic moves and the alert
fires. Prometheus then answers every query of the monitoring dashboard."""

from __future__ import annotations

import contextlib
import math
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm

from llmlab.monitoring import drift, prometheus, queries, triton
from llmlab.monitoring.exporter import InferenceExporter, Target
from llmlab.plots import figure


@dataclass(frozen=True)
class MonitoringConfig:
    train_steps: int = 1000  # a sharper model tells the corpora apart better (PSI 0.16 at 400 steps, 0.30 at 1000)
    context: int = 128
    requests_per_phase: int = 40
    max_tokens: int = 32
    reference_tokens: int = 4000  # per-token NLLs of held-out Shakespeare: the reference window
    window: int = 1500  # tokens in the drift window
    scrape_interval: str = "1s"
    pace_s: float = 0.2  # between requests: traffic spread over enough scrapes to be seen changing
    alert_hold: str = "5s"
    wait_for_alert_s: float = 60.0
    seed: int = 0


QUICK = MonitoringConfig()
FULL = MonitoringConfig(train_steps=3000, requests_per_phase=200, reference_tokens=20_000, window=4000,
                        alert_hold="30s", wait_for_alert_s=180.0)


def train_model(cfg: MonitoringConfig, out: Path):
    """A character-level Llama-style LM on Tiny Shakespeare's training split, exported for the service."""
    from llmlab import hf
    from llmlab.data import shakespeare
    from llmlab.transformer import TrainConfig, TransformerConfig, TransformerLM, train

    tok, train_ids, val_ids = shakespeare.char_tokens()
    model = TransformerLM(TransformerConfig(tok.vocab_size, context=cfg.context, d_model=96, n_layers=2, n_heads=4),
                          seed=cfg.seed)
    hist = train(model, train_ids, val_ids, TrainConfig(steps=cfg.train_steps, batch_size=16, eval_every=10**9,
                                                        eval_batches=4, seed=cfg.seed), desc="model")
    hf.export(model, out, tok)
    return model.eval(), tok, hist


def prompts(text: str, n: int, rng: np.random.Generator, length: int = 100) -> list[str]:
    """``n`` windows of ``text`` starting at a line, about ``length`` characters each."""
    starts = [i + 1 for i in rng.integers(0, len(text) - 4 * length, n * 4)]
    out = []
    for s in starts:
        s = text.find("\n", s) + 1
        chunk = text[s:s + length]
        if chunk.strip():
            out.append(chunk)
        if len(out) == n:
            break
    return out


def run(cfg: MonitoringConfig, out: Path) -> tuple[dict, str]:
    import openai
    from prometheus_client import CollectorRegistry, start_http_server

    from llmlab import serving
    from llmlab.data import shakespeare, wikipedia

    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    work = Path(tempfile.mkdtemp(prefix="llmlab-m19-"))
    model, tok, hist = train_model(cfg, work / "bard")
    _, val = shakespeare.split()
    # the windows the reference needs: each scores context - 1 tokens (its first one predicts nothing)
    starts = range(0, len(val), cfg.context)[:math.ceil(cfg.reference_tokens / (cfg.context - 1))]
    reference = drift.token_nll(model, tok, [val[i:i + cfg.context] for i in starts])[:cfg.reference_tokens]
    monitor = drift.DriftMonitor(reference, "bard", window=cfg.window, min_tokens=cfg.window // 2)
    wiki = "\n".join(a["text"] for a in wikipedia.articles(limit=40))
    phases = {"Tiny Shakespeare": prompts(val, cfg.requests_per_phase, rng),
              "Wikipedia": prompts(wiki, cfg.requests_per_phase, rng)}
    tm = triton.TritonMetrics(["resnet50"])
    timeline, events, prom_data = [], {}, {}
    rules = work / "drift.rules.yaml"
    rules.write_text(yaml.safe_dump(drift.alert_rules(hold=cfg.alert_hold)))
    with contextlib.ExitStack() as stack:
        base = stack.enter_context(serving.serve("inference", "--model", str(work / "bard"), "--served-model-name",
                                                 "bard"))
        tserver = triton.serve(tm)
        stack.callback(tserver.shutdown)
        registry = CollectorRegistry()
        registry.register(InferenceExporter([
            Target("vllm", f"{base}/metrics", "llmlab"),
            Target("triton", f"http://127.0.0.1:{tserver.server_address[1]}/metrics", "triton")]))
        registry.register(monitor)
        exporter_port = serving.free_port()
        server, _ = start_http_server(exporter_port, addr="127.0.0.1", registry=registry)
        stack.callback(server.shutdown)
        prom = None
        if shutil.which("prometheus"):
            prom_port = serving.free_port()
            proc = prometheus.start(prom_port, {"llmlab-monitoring": exporter_port,
                                                "llmlab-inference": int(base.rsplit(":", 1)[1])},
                                    work / "prometheus", [rules, *sorted(prometheus.RULES_DIR.glob("*slo.rules.yaml"))],
                                    cfg.scrape_interval)
            stack.callback(serving.stop, proc)
            prom = f"http://127.0.0.1:{prom_port}"
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="none")
        time.sleep(3 * float(cfg.scrape_interval.rstrip("s")) if prom else 0)  # Prometheus's first scrapes
        start = time.time()
        for phase, texts in phases.items():
            events[phase] = time.time() - start
            for prompt in tqdm(texts, desc=phase, leave=False):
                t = time.perf_counter()
                client.completions.create(model="bard", prompt=prompt, max_tokens=cfg.max_tokens,
                                          temperature=0.8)
                seconds = time.perf_counter() - t
                monitor.observe(drift.token_nll(model, tok, [prompt]))  # the traffic: what users send
                tm.record("resnet50", duration_us=float(rng.lognormal(np.log(4000), 0.4)),
                          queue_us=float(rng.lognormal(np.log(300), 0.6)), success=rng.random() > 0.02)
                timeline.append({"t": time.time() - start, "phase": phase, "seconds": seconds,
                                 **monitor.statistics()})
                time.sleep(cfg.pace_s)
        fired_at = None
        deadline = time.time() + cfg.wait_for_alert_s
        while prom and time.time() < deadline:
            if any(a["labels"]["alertname"] == "LLMLabPerplexityDrift" for a in prometheus.firing(prom)):
                fired_at = time.time() - start
                break
            time.sleep(0.5)
        if prom:
            time.sleep(2)  # one more scrape of the final state
            end = time.time()
            for title, exprs in queries.PANELS.items():
                for expr, _ in exprs:
                    result = prometheus.query(prom, queries.concrete(expr, "15s"))
                    prom_data[expr] = {"panel": title, "series": len(result)}
            series = {"psi": "max(llmlab_drift_psi)",
                      "tokens_per_s": queries.concrete(queries.PANELS["Tokens per second"][0][0], "10s"),
                      "p95": queries.concrete(queries.PANELS["End-to-end latency p95"][0][0], "30s")}
            ranges = {k: prometheus.query_range(prom, e, start, end, 1.0) for k, e in series.items()}
    shutil.rmtree(work, ignore_errors=True)
    calm = [r for r in timeline if r["phase"] == "Tiny Shakespeare" and not np.isnan(r["psi"])]
    m = {"config": asdict(cfg),
         "model": {"steps": cfg.train_steps, "final_loss": float(np.mean(hist["train_loss"][-20:]))},
         "reference_mean_nll": float(reference.mean()), "timeline": timeline, "switch_at_s": events["Wikipedia"],
         "psi_calm_max": max(r["psi"] for r in calm) if calm else None,
         "ks_calm_max": max(r["ks"] for r in calm) if calm else None,
         "psi_final": timeline[-1]["psi"], "ks_final": timeline[-1]["ks"],
         "prometheus": prom is not None, "alert_fired_at_s": fired_at,
         "seconds_to_alert": None if fired_at is None else fired_at - events["Wikipedia"],
         "dashboard_queries": prom_data, "exporter_targets": 2}
    if prom:
        m["prometheus_series"] = {k: [[float(t) - start, float(v)] for t, v in (r[0]["values"] if r else [])]
                                  for k, r in ranges.items()}
    plot(m, out / "drift.png", out / "throughput_latency.png")
    m["seconds"] = time.perf_counter() - t0
    return m, report(m)


def plot(m: dict, drift_path: Path, perf_path: Path) -> None:
    tl = m["timeline"]
    with figure(drift_path, "Perplexity drift of the served traffic") as ax:
        t = [r["t"] for r in tl]
        ax.plot(t, [r["psi"] for r in tl], "o-", ms=2, label="PSI (drift monitor)")
        ax.plot(t, [r["ks"] for r in tl], "s-", ms=2, label="KS statistic")
        if m.get("prometheus_series", {}).get("psi"):
            s = np.array(m["prometheus_series"]["psi"])
            ax.plot(s[:, 0], s[:, 1], lw=1, alpha=0.6, label="PSI as Prometheus scraped it")
        ax.axhline(drift.PSI_ALERT, color="r", ls="--", lw=1, label=f"alert threshold {drift.PSI_ALERT}")
        ax.axvline(m["switch_at_s"], color="k", ls=":", lw=1, label="traffic switches to Wikipedia")
        if m["alert_fired_at_s"] is not None:
            ax.axvline(m["alert_fired_at_s"], color="r", lw=1, label="LLMLabPerplexityDrift fires")
        ax.set_xlabel("seconds")
        ax.set_ylabel("per-token NLL under the served model: PSI, KS")
        ax.legend(fontsize=7)
    with figure(perf_path, "The live model through the exporter", ncols=2) as (a, b):
        ps = m.get("prometheus_series", {})
        for ax, key, label in ((a, "tokens_per_s", "generated tokens/s"), (b, "p95", "p95 end-to-end latency (s)")):
            if ps.get(key):
                s = np.array(ps[key])
                ax.plot(s[:, 0], s[:, 1])
            else:
                ax.plot([r["t"] for r in m["timeline"]], [r["seconds"] for r in m["timeline"]] if key == "p95"
                        else [m["config"]["max_tokens"] / r["seconds"] for r in m["timeline"]])
            ax.set_xlabel("seconds")
            ax.set_ylabel(label)


def report(m: dict) -> str:
    cfg = m["config"]
    alert = (f"**LLMLabPerplexityDrift fired {m['seconds_to_alert']:.1f} s after the switch** (its hold is "
             f"{cfg['alert_hold']})." if m["seconds_to_alert"] is not None else
             "The alert did not fire within the wait." if m["prometheus"] else
             "Prometheus is not installed here: the alert was not evaluated (the statistic is above).")
    scraped = (f"Prometheus scraped the exporter and the service every {cfg['scrape_interval']}" if m["prometheus"]
               else "Prometheus was not run")
    queries_ok = sum(1 for q in m["dashboard_queries"].values() if q["series"] > 0)
    return f"""
## A live model, its exporter and its drift
A character-level LM ({cfg['train_steps']} steps on Tiny Shakespeare, final training loss
{m['model']['final_loss']:.2f} nats/char) served by `llmlab serve inference`, beside a Triton-format metrics endpoint
(Triton's documented `nv_inference_*` counters and summaries; Triton cannot run here). The exporter scrapes both
into one normalized set; a drift monitor scores every prompt served (the traffic) with the model and compares
the last {cfg['window']:,} per-token NLLs with {cfg['reference_tokens']:,} of held-out Shakespeare (mean
{m['reference_mean_nll']:.2f} nats). {cfg['requests_per_phase']} requests of Shakespeare, then
{cfg['requests_per_phase']} of English Wikipedia.

| | PSI | KS |
|---|---|---|
| Shakespeare traffic (largest) | {m['psi_calm_max'] or float('nan'):.3f} | {m['ks_calm_max'] or float('nan'):.3f} |
| after the switch (last) | {m['psi_final']:.3f} | {m['ks_final']:.3f} |

{alert}

{scraped}; {queries_ok} of the monitoring dashboard's {len(m['dashboard_queries'])} queries returned data.
"""
