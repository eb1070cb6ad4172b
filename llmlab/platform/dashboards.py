"""Grafana dashboards generated with grafana-foundation-sdk and checked in under ``dashboards/`` as JSON.

Every panel reads the Prometheus data source chosen in the ``datasource`` variable (no hard-coded uids),
rates use ``rate()`` and latencies ``histogram_quantile`` over histogram buckets, with the metric names
of ``llmlab.platform.metrics`` (grading service) and vLLM's own names (inference, served by vLLM or llmlab's engine).
"""

from __future__ import annotations

import json
from pathlib import Path

from grafana_foundation_sdk.builders.dashboard import Dashboard, DatasourceVariable, Row
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.builders.stat import Panel as Stat
from grafana_foundation_sdk.builders.timeseries import Panel as Timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef, GridPos

from llmlab.monitoring import queries as queries_
from llmlab.platform import metrics as m
from llmlab.platform import slo

DS = DataSourceRef(type_val="prometheus", uid="${datasource}")
OUT_DIR = Path(__file__).resolve().parents[2] / "dashboards"


def _panel(kind, title: str, queries: list[tuple[str, str]], unit: str, x: int, y: int, w: int = 12, h: int = 8):
    panel = kind().title(title).datasource(DS).unit(unit).grid_pos(GridPos(h=h, w=w, x=x, y=y))
    for ref, (expr, legend) in zip("ABCDEFGH", queries, strict=False):
        panel = panel.with_target(Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(DS))
    return panel


def _quantiles(metric: str, by: str = "", window: str = "$__rate_interval") -> list[tuple[str, str]]:
    group = f"le{', ' + by if by else ''}"
    return [(f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket[{window}])))",
             f"p{int(q * 100)}" + (f" {{{{{by}}}}}" if by else "")) for q in (0.5, 0.95, 0.99)]


def _dashboard(title: str, tags: list[str], panels: list) -> Dashboard:
    d = (Dashboard(title).tags(["llmlab", *tags]).refresh("30s").time("now-1h", "now").timezone("browser")
         .with_variable(DatasourceVariable("datasource").label("Prometheus").type("prometheus")))
    for p in panels:
        d = d.with_row(p) if isinstance(p, Row) else d.with_panel(p)
    return d


def platform() -> Dashboard:
    return _dashboard("llmlab / platform", ["platform", "grader"], [
        Row("Grading").grid_pos(GridPos(h=1, w=24, x=0, y=0)),
        _panel(Timeseries, "Submissions by outcome",
               [(f"sum by (outcome) (rate({m.SUBMISSIONS_TOTAL}[$__rate_interval]))", "{{outcome}}")], "reqps", 0, 1),
        _panel(Timeseries, "Grading latency (accepted to graded)", _quantiles(m.GRADING_DURATION), "s", 12, 1),
        _panel(Timeseries, "Grading failures by reason (Ray jobs)",
               [(f"sum by (reason) (rate({m.RAY_JOB_FAILURES}[$__rate_interval]))", "{{reason}}")], "reqps", 0, 9),
        _panel(Stat, "Queue depth (accepted, not yet graded)", [(f"max({m.QUEUE_DEPTH})", "queued")], "short", 12, 9,
               w=6),
        _panel(Stat, "Submissions graded (range)",
               [(f'sum(increase({m.SUBMISSIONS_TOTAL}{{outcome="graded"}}[$__range]))', "graded")], "short", 18, 9,
               w=6),
        Row("HTTP").grid_pos(GridPos(h=1, w=24, x=0, y=17)),
        _panel(Timeseries, "Requests by route and status",
               [(f"sum by (route, status) (rate({m.HTTP_DURATION}_count[$__rate_interval]))", "{{route}} {{status}}")],
               "reqps", 0, 18),
        _panel(Timeseries, "HTTP latency p95 by route",
               [(f"histogram_quantile(0.95, sum by (le, route) (rate({m.HTTP_DURATION}_bucket[$__rate_interval])))",
                 "{{route}}")], "s", 12, 18),
    ])


def inference() -> Dashboard:
    """vLLM's metric names, so one dashboard serves vLLM pods and llmlab's builtin engine alike."""
    rate = "$__rate_interval"
    return _dashboard("llmlab / inference", ["inference", "vllm"], [
        _panel(Timeseries, "Tokens per second",
               [(f"sum(rate(vllm:generation_tokens_total[{rate}]))", "generated"),
                (f"sum(rate(vllm:prompt_tokens_total[{rate}]))", "prompt")], "short", 0, 0),
        _panel(Timeseries, "Requests running and waiting",
               [("sum(vllm:num_requests_running)", "running"), ("sum(vllm:num_requests_waiting)", "waiting")],
               "short", 12, 0),
        _panel(Timeseries, "Time to first token and inter-token latency (p95)",
               [(f"histogram_quantile(0.95, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket[{rate}])))",
                 "TTFT p95"),
                (f"histogram_quantile(0.95, sum by (le) (rate(vllm:inter_token_latency_seconds_bucket[{rate}])))",
                 "ITL p95")], "s", 0, 8),
        _panel(Timeseries, "End-to-end request latency (p95)",
               [(f"histogram_quantile(0.95, sum by (le) (rate(vllm:e2e_request_latency_seconds_bucket[{rate}])))",
                 "e2e p95")], "s", 12, 8),
        _panel(Timeseries, "KV-cache usage", [("avg(vllm:kv_cache_usage_perc)", "used")], "percentunit", 0, 16),
        _panel(Timeseries, "Speculative decoding: acceptance rate and mean acceptance length",
               [(f"sum(rate(vllm:spec_decode_num_accepted_tokens_total[{rate}])) / "
                 f"sum(rate(vllm:spec_decode_num_draft_tokens_total[{rate}]))", "acceptance rate"),
                (f"1 + sum(rate(vllm:spec_decode_num_accepted_tokens_total[{rate}])) / "
                 f"sum(rate(vllm:spec_decode_num_drafts_total[{rate}]))", "mean acceptance length")], "short", 12, 16),
    ])


def retrieval() -> Dashboard:
    """The retrieval service: requests and latency on the shared HTTP histogram, FAISS time, the index."""
    rate, job = "$__rate_interval", 'job="llmlab-retrieval"'
    return _dashboard("llmlab / retrieval", ["retrieval", "faiss"], [
        _panel(Timeseries, "Requests by route and status",
               [(f"sum by (route, status) (rate({m.HTTP_DURATION}_count{{{job}}}[{rate}]))", "{{route}} {{status}}")],
               "reqps", 0, 0),
        _panel(Timeseries, "Search latency over HTTP (query embedded, then searched)",
               [(f'histogram_quantile({q}, sum by (le) (rate({m.HTTP_DURATION}_bucket{{{job},route="/v1/search"}}'
                 f"[{rate}])))", f"p{int(q * 100)}") for q in (0.5, 0.95, 0.99)], "s", 12, 0),
        _panel(Timeseries, "FAISS search time by index", _quantiles(m.SEARCH_DURATION, by="index"), "s", 0, 8),
        _panel(Timeseries, "Recall@10 canary (against exact search)", [(f"min({m.RECALL_CANARY})", "recall@10")],
               "percentunit", 12, 8),
        _panel(Stat, "Live documents", [(f"sum({m.DOCUMENTS})", "documents")], "short", 0, 16, w=6),
        _panel(Timeseries, "Refused for overload (429)", [(f"sum(rate({m.REJECTED}[{rate}]))", "429/s")], "reqps",
               6, 16, w=18),
    ])


def slos() -> Dashboard:
    panels = []
    for i, o in enumerate(slo.load()):
        y = 8 * i
        panels.append(_panel(Stat, f"{o.service} {o.name}: error budget remaining (30d)",
                             [(f"1 - {o.record}:ratio_rate30d / {o.budget:g}", "remaining")], "percentunit", 0, y, w=8))
        panels.append(_panel(Timeseries, f"{o.service} {o.name}: burn rate",
                             [(f"{o.record}:ratio_rate{w} / {o.budget:g}", w) for w in ("5m", "1h", "6h", "3d")],
                             "short", 8, y, w=16))
    return _dashboard("llmlab / SLOs", ["slo"], panels)


def rlhf() -> Dashboard:
    """Lab m13's KL tracker, from the gauges an RLHF job exports (``llmlab rlhf --metrics-port``)."""
    r = m.RLHF
    return _dashboard("llmlab / RLHF (KL tracker)", ["rlhf", "ppo"], [
        _panel(Timeseries, "Reward-model score and gold score of the replies",
               [(f"max by (run) ({r['reward']})", "reward {{run}}"), (f"max by (run) ({r['gold_train']})",
                                                                       "gold {{run}}")], "short", 0, 0),
        _panel(Timeseries, "KL to the reference policy (nats per reply) and its target",
               [(f"max by (run) ({r['kl']})", "KL {{run}}"), (f"max by (run) ({m.RLHF_KL_TARGET})", "target {{run}}")],
               "short", 12, 0),
        _panel(Timeseries, "KL coefficient (adaptive controller)", [(f"max by (run) ({r['kl_coef']})", "{{run}}")],
               "short", 0, 8),
        _panel(Timeseries, "Policy entropy (nats per token)", [(f"max by (run) ({r['entropy']})", "{{run}}")],
               "short", 12, 8),
        _panel(Timeseries, "Clip fraction", [(f"max by (run) ({r['clip_fraction']})", "{{run}}")], "percentunit", 0,
               16),
        _panel(Timeseries, "Value loss", [(f"max by (run) ({r['value_loss']})", "{{run}}")], "short", 12, 16),
        _panel(Stat, "PPO iteration", [(f"max by (run) ({r['iteration']})", "{{run}}")], "short", 0, 24, w=6),
    ])


def monitoring() -> Dashboard:
    """Lab m19's exporter (Triton, vLLM and llmlab normalized), perplexity drift and the inference SLOs' burn."""
    panels = [_panel(Timeseries, title, exprs, unit, 12 * (i % 2), 8 * (i // 2))
              for i, ((title, exprs), unit) in enumerate(zip(queries_.PANELS.items(), (
                  "short", "reqps", "s", "s", "percentunit", "short", "short", "short"), strict=True))]
    burn = [(f"{o.record}:ratio_rate1h / {o.budget:g}", f"{o.name} (1h)")
            for o in slo.load() if o.service == "inference" and o.threshold_seconds is not None]
    panels.append(_panel(Timeseries, "Inference latency SLOs: burn rate over 1h", burn, "short", 0,
                         8 * ((len(panels) + 1) // 2), w=24))
    return _dashboard("llmlab / monitoring", ["monitoring", "triton", "vllm", "drift"], panels)


DASHBOARDS = {"platform": platform, "inference": inference, "retrieval": retrieval, "slos": slos, "rlhf": rlhf,
              "monitoring": monitoring}
STACK_DASHBOARDS = ("platform", "inference", "retrieval", "slos")  # over the services `llmlab up` starts


def render(name: str) -> str:
    return json.dumps(json.loads(JSONEncoder(sort_keys=True, indent=2).encode(DASHBOARDS[name]().build())),
                      indent=2, sort_keys=True) + "\n"


def write(out_dir: Path = OUT_DIR) -> list[Path]:
    paths = []
    for name in DASHBOARDS:
        path = Path(out_dir) / f"{name}.json"
        path.write_text(render(name))
        paths.append(path)
    return paths


def queries(name: str) -> list[str]:
    """Every PromQL expression of a dashboard, with Grafana's variables given values Prometheus accepts."""
    doc = json.loads(render(name))
    exprs = [t["expr"] for p in doc.get("panels", []) for t in p.get("targets", [])]
    return [e.replace("$__rate_interval", "1m").replace("$__range", "1h") for e in exprs]


class PushError(RuntimeError):
    pass


def push(grafana_url: str, token: str, folder: str = "llmlab", names: list[str] | None = None,
         timeout: float = 10.0) -> list[dict]:
    """Upload dashboards through Grafana's HTTP API (grafana-client): the folder (uid = its name) created when
    missing, then each dashboard saved into it with ``overwrite`` under the uid "llmlab-NAME", so a push replaces
    the previous version instead of adding one (the checked-in JSON pins no uid: provisioning assigns its own).
    ``token``: a service-account token (Bearer). Returns Grafana's answer per dashboard."""
    import requests
    from grafana_client import GrafanaApi
    from grafana_client.client import GrafanaClientError, GrafanaException

    api = GrafanaApi.from_url(grafana_url.rstrip("/"), credential=token, timeout=timeout)
    out = []
    try:
        try:
            api.folder.get_folder(folder)
        except GrafanaClientError as e:
            if e.status_code != 404:
                raise
            api.folder.create_folder(title=folder, uid=folder)
        for name in names or list(DASHBOARDS):
            dashboard = {**json.loads(render(name)), "id": None, "uid": f"llmlab-{name}"}
            answer = api.dashboard.update_dashboard({"dashboard": dashboard,
                                                     "folderUid": folder, "overwrite": True,
                                                     "message": "llmlab dashboards push"})
            out.append({"name": name, **answer})
    except GrafanaException as e:
        raise PushError(f"Grafana at {grafana_url} refused: HTTP {e.status_code}: {e}") from None
    except requests.exceptions.RequestException as e:
        raise PushError(f"Grafana at {grafana_url} is unreachable: {e}") from None
    return out
