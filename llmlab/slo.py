"""SLOs from ``loadtests/slos.yaml``, turned into Prometheus rules and the load-test gate.

Alerts follow the multi-window, multi-burn-rate recipe of the Google SRE workbook (chapter 5): page when
the error budget burns at 14.4x over 1h and 5m, or 6x over 6h and 30m; open a ticket at 1x over 3d and 6h.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from llmlab import metrics

SLO_FILE = Path(__file__).resolve().parents[1] / "loadtests" / "slos.yaml"
WINDOWS = ("5m", "30m", "1h", "6h", "3d", "30d")  # 30d: the error-budget window
BURN_ALERTS = (  # (severity, long window, short window, burn rate)
    ("page", "1h", "5m", 14.4),
    ("page", "6h", "30m", 6.0),
    ("ticket", "3d", "6h", 1.0),
)


@dataclass(frozen=True)
class Objective:
    service: str
    name: str  # "availability" or a latency objective's name
    objective: float
    job: str
    histogram: str
    method: str | None = None
    route: str | None = None
    threshold_seconds: float | None = None

    @property
    def budget(self) -> float:
        return 1 - self.objective

    @property
    def record(self) -> str:
        return f"llmlab:slo_errors:{self.service}_{self.name}"


def load(path: Path = SLO_FILE) -> list[Objective]:
    spec = yaml.safe_load(Path(path).read_text())
    if spec.get("version") != 1:
        raise ValueError(f"{path}: unsupported SLO file version {spec.get('version')!r}")
    out = []
    for service, s in spec["services"].items():
        out.append(Objective(service, "availability", s["availability"]["objective"], s["job"], s["histogram"]))
        for lat in s.get("latency", []):
            if s["histogram"] == metrics.HTTP_DURATION and lat["threshold_seconds"] not in metrics.HTTP_BUCKETS:
                raise ValueError(f"{service}/{lat['name']}: {lat['threshold_seconds']}s is not a bucket boundary "
                                 f"of {s['histogram']} {metrics.HTTP_BUCKETS}")
            out.append(Objective(service, lat["name"], lat["objective"], s["job"], s["histogram"], lat["method"],
                                 lat["route"], lat["threshold_seconds"]))
    return out


def error_ratio(o: Objective, window: str) -> str:
    """PromQL for the fraction of bad events over ``window``."""
    sel = f'job="{o.job}"'
    if o.threshold_seconds is None:
        # "or vector(0)": with no 5xx series at all the ratio is 0, not absent
        return (f'(sum(rate({o.histogram}_count{{{sel},status=~"5.."}}[{window}])) or vector(0)) / '
                f"sum(rate({o.histogram}_count{{{sel}}}[{window}]))")
    sel += f',method="{o.method}",route="{o.route}"'
    return (f"1 - sum(rate({o.histogram}_bucket{{{sel},le=\"{o.threshold_seconds:g}\"}}[{window}])) / "
            f"sum(rate({o.histogram}_count{{{sel}}}[{window}]))")


def rules(objectives: list[Objective]) -> dict:
    """A Prometheus rule file: error ratios recorded per window, and burn-rate alerts on them."""
    groups = []
    for o in objectives:
        recording = [{"record": f"{o.record}:ratio_rate{w}", "expr": error_ratio(o, w),
                      "labels": {"service": o.service, "slo": o.name}} for w in WINDOWS]
        alerts = []
        for severity, long, short, rate in BURN_ALERTS:
            threshold = round(rate * o.budget, 10)
            alerts.append({
                "alert": _alert_name(o, long),
                "expr": f"{o.record}:ratio_rate{long} > {threshold:g} and {o.record}:ratio_rate{short} > {threshold:g}",
                "for": "2m" if severity == "page" else "15m",
                "labels": {"severity": severity, "service": o.service, "slo": o.name},
                "annotations": _annotations(o, severity, long, short, rate),
            })
        groups.append({"name": f"llmlab-slo-{o.service}-{o.name}", "rules": recording + alerts})
    return {"groups": groups}


def _annotations(o: Objective, severity: str, long: str, short: str, rate: float) -> dict[str, str]:
    what = "non-5xx responses" if o.threshold_seconds is None else (
        f"{o.method} {o.route} within {o.threshold_seconds:g}s")
    return {"summary": f"{o.service} {o.name} SLO burning its error budget at {rate:g}x or more",
            "description": f"Objective: {o.objective:.2%} of requests are {what}. The error ratio over both {long} "
                           f"and {short} exceeds {rate:g}x the budget of {o.budget:.2%} ({severity})."}


def _alert_name(o: Objective, long: str) -> str:
    return f"LLMLab{o.service.title()}{o.name.title()}BurnRate{long}"


def promtool_tests(objectives: list[Objective], rule_file: str) -> dict:
    """A ``promtool test rules`` file: for each objective, a series that burns its budget fires every one of
    its alerts (page and ticket), and a healthy series fires none. One request a second for 90 minutes."""
    minutes = 90

    def series(o: Objective, bad: bool) -> list[dict]:
        lab = f'job="{o.job}",method="{o.method or "GET"}",route="{o.route or "/v1/labs"}"'
        ok = [{"series": f'{o.histogram}_count{{{lab},status="200"}}', "values": f"0+60x{minutes}"}]
        if o.threshold_seconds is None:
            errors = "0+60x" if bad else "0+0x"
            return ok + [{"series": f'{o.histogram}_count{{{lab},status="500"}}', "values": f"{errors}{minutes}"}]
        under = "0+0x" if bad else "0+60x"  # bad: no request within the threshold
        return ok + [{"series": f'{o.histogram}_bucket{{{lab},status="200",le="{o.threshold_seconds:g}"}}',
                      "values": f"{under}{minutes}"}]

    tests = []
    for o in objectives:
        for bad in (True, False):
            checks = []
            for severity, long, short, rate in BURN_ALERTS:
                expected = [{"exp_labels": {"severity": severity, "service": o.service, "slo": o.name},
                             "exp_annotations": _annotations(o, severity, long, short, rate)}] if bad else []
                checks.append({"eval_time": f"{minutes}m", "alertname": _alert_name(o, long), "exp_alerts": expected})
            tests.append({"name": f"{o.service}/{o.name} {'burning' if bad else 'healthy'}", "interval": "1m",
                          "input_series": series(o, bad), "alert_rule_test": checks})
    return {"rule_files": [rule_file], "evaluation_interval": "1m", "tests": tests}


def write_rules(out_dir: Path, objectives: list[Objective] | None = None) -> list[Path]:
    objectives = objectives or load()
    written = []
    for service in sorted({o.service for o in objectives}):
        path = Path(out_dir) / f"{service}-slo.rules.yaml"
        header = "# Generated by `llmlab slo rules` from loadtests/slos.yaml; do not edit by hand.\n"
        path.write_text(header + yaml.safe_dump(rules([o for o in objectives if o.service == service]),
                                                sort_keys=False, width=200))
        written.append(path)
    return written


def locust_gate(service: str, objectives: list[Objective] | None = None) -> dict:
    """What a load test must meet: p95 per endpoint (seconds) and the largest failure ratio."""
    objectives = [o for o in (objectives or load()) if o.service == service]
    availability = next(o for o in objectives if o.threshold_seconds is None)
    return {"max_failure_ratio": availability.budget,
            "p95_seconds": {f"{o.method} {o.route}": o.threshold_seconds for o in objectives if o.threshold_seconds}}
