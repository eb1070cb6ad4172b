"""The main job (``make run`` / ``llmlab run``): every built lab's reference deliverable and the grading of
its reference submission, as Ray jobs on a local head (or any ``--address``), then an index of the results.

Writes ``runs/<timestamp>/<lab>/`` (metrics.json, report.md, plots), ``runs/<timestamp>/index.md`` and
``index.html``, and records the gradings in the gradebook under the learner ``reference``.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import shlex
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from llmlab.data import catalog
from llmlab.labs import BY_ID, PROFILES, built_labs, get_lab
from llmlab.platform.gradebook import Gradebook
from llmlab.platform.jobs import client, local, record
from llmlab.platform.jobs.deliverable_job import DeliverableRecord
from llmlab.platform.jobs.grade_job import entrypoint as grade_entrypoint

LEARNER = "reference"


def _submit(address: str, entrypoint: str, meta: dict, cpus: float = 1) -> str:
    job_id = f"llmlab-{meta['llmlab.kind']}-{meta['llmlab.lab']}-{uuid.uuid4().hex[:8]}"
    client.connect(address).submit_job(entrypoint=entrypoint, submission_id=job_id, metadata=meta,
                                       entrypoint_num_cpus=cpus, runtime_env={"env_vars": client.ONE_CPU_ENV})
    return job_id


def submit_deliverable(address: str, lab_id: str, profile: str, out_dir: Path, learner: str = LEARNER) -> str:
    """A lab's reference deliverable as a Ray job writing into ``out_dir``; returns the job id."""
    return _submit(address, shlex.join(["python", "-m", "llmlab.platform.jobs.deliverable_job", lab_id, "--profile",
                                        profile, "--out", str(out_dir)]),
                   {"llmlab.kind": "deliverable", "llmlab.lab": lab_id, "llmlab.learner": learner},
                   cpus=0 if get_lab(lab_id).ray_workload else 1)


def reference_tokens_per_s() -> float:
    """How fast this machine is as the run starts: tokens/s of a training step of m19's character LM (vocabulary
    65, 16 x 128 tokens, d_model 96, 2 layers), one thread. A shared machine's speed varies by the hour (this
    one's by up to 2x): runs compare by their jobs' times against it."""
    from llmlab.distributed.throughput import step_tokens_per_s
    from llmlab.transformer import TransformerConfig

    return step_tokens_per_s(TransformerConfig(65, context=128, d_model=96, n_layers=2, n_heads=4), batch=16)


def cluster_cpus(address: str) -> int:
    """The CPUs of the cluster's live nodes (Ray's state API), at least 1."""
    from ray.util.state import list_nodes

    nodes = list_nodes(address=address, filters=[("state", "=", "ALIVE")], detail=True, raise_on_missing_output=False)
    return max(1, int(sum(n.resources_total.get("CPU", 0) for n in nodes)))


@dataclass
class _Job:
    lab: str
    kind: str  # "deliverable" or "grade"
    ray_workload: bool  # a deliverable that starts a Ray Train / Ray Data / actor run of its own
    id: str | None = None
    status: str = "WAITING"  # not submitted yet; then Ray's job status
    submitted: float = 0.0
    seconds: float | None = None  # from submission to a terminal status


def last_times(runs_dir: Path) -> dict[tuple[str, str], float]:
    """Each job's seconds, by (lab, "deliverable" or "grade"), in the newest run under ``runs_dir`` that has them."""
    for index in sorted(runs_dir.glob("*/index.json"), reverse=True):
        try:
            rows = json.loads(index.read_text())["labs"]
            times = {(r["lab"], kind): float(t) for r in rows for kind, t in r.get("seconds", {}).items() if t}
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if times:
            return times
    return {}


def _plan(labs: list[str], times: dict[tuple[str, str], float] | None = None) -> list[_Job]:
    """The submission order: deliverables before gradings, the longest first by the last run's ``times`` (so that a
    long job does not start last), and where none is known the later (heavier) labs first."""
    times = times or {}

    def longest_first(kind: str) -> list[str]:
        return sorted(labs, key=lambda lab: (-times.get((lab, kind), 0.0), -labs.index(lab)))

    return ([_Job(lab, "deliverable", get_lab(lab).ray_workload) for lab in longest_first("deliverable")]
            + [_Job(lab, "grade", False) for lab in longest_first("grade")])


def _startable(plan: list[_Job], parallel: int) -> list[_Job]:
    """The waiting jobs to submit now, in plan order: while fewer than ``parallel`` run, and a Ray workload
    only while no other one runs."""
    chosen = [j for j in plan if j.id and j.status not in client.TERMINAL]
    for job in plan:
        if job.id is None and len(chosen) < parallel and not (job.ray_workload and any(a.ray_workload for a in chosen)):
            chosen.append(job)
    return [j for j in chosen if j.id is None]


def run_course(profile: str = "quick", address: str | None = None, labs: list[str] | None = None,
               out_dir: Path | None = None, console: Console | None = None, parallel: int | None = None) -> Path:
    """Every lab's deliverable and reference grading as Ray jobs, at most ``parallel`` at a time (default: the
    cluster's CPUs) and one Ray workload at a time.

    The jobs are queued here rather than all submitted at once: Ray fails a job whose entrypoint waits for
    resources past ``RAY_JOB_START_TIMEOUT_SECONDS`` (900 s), and a Ray workload's driver takes no CPU of its
    own, so several would start together and contend for the CPUs their workers need."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}")
    console = console or Console()
    labs = labs or built_labs()
    for lab_id in labs:
        get_lab(lab_id)
    fetched = catalog.ensure(labs)  # a fresh machine: the public data the deliverables read
    if fetched:
        console.print(f"fetched {len(fetched)} data file(s) into {catalog.target_dir()}")
    out_dir = (out_dir or Path("runs") / dt.datetime.now().strftime("%Y%m%d-%H%M%S")).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    with console.status("timing a reference training step"):  # before a Ray head starts: its start-up is busy
        speed = reference_tokens_per_s()
    with console.status("starting or reusing the Ray head"):
        address = local.ensure(address)
    parallel = parallel or cluster_cpus(address)
    console.print(f"Ray: {address} ({parallel} jobs at a time)  ->  {out_dir}\n"
                  f"this machine now: {speed:,.0f} tokens/s in a reference training step (one thread)")
    t0 = time.monotonic()
    plan = _plan(labs, last_times(out_dir.parent))
    by_key = {(j.lab, j.kind): j for j in plan}
    ray = client.connect(address)

    def submit(job: _Job) -> None:
        if job.kind == "deliverable":
            job.id = submit_deliverable(address, job.lab, profile, out_dir / job.lab)
        else:
            job.id = _submit(address, grade_entrypoint(job.lab, reference=True, learner=LEARNER),
                             {"llmlab.kind": "grade", "llmlab.lab": job.lab, "llmlab.learner": LEARNER})
        job.status, job.submitted = "PENDING", time.monotonic()

    def table() -> Table:
        t = Table("lab", "deliverable", "grading", title=f"llmlab run ({profile}), {time.monotonic() - t0:.0f}s")
        for lab_id in labs:
            t.add_row(f"{lab_id} {BY_ID[lab_id].title}", by_key[(lab_id, "deliverable")].status,
                      by_key[(lab_id, "grade")].status)
        return t

    with Live(table(), console=console, refresh_per_second=2) as live:
        while any(j.status not in client.TERMINAL for j in plan):
            for job in _startable(plan, parallel):
                submit(job)
            time.sleep(1)
            for job in (j for j in plan if j.id and j.status not in client.TERMINAL):
                job.status = str(ray.get_job_status(job.id).value)
                if job.status in client.TERMINAL:
                    job.seconds = round(time.monotonic() - job.submitted, 1)
            live.update(table())

    book = Gradebook()
    rows = []
    for lab_id in labs:
        deliverable, grading = by_key[(lab_id, "deliverable")], by_key[(lab_id, "grade")]
        row = {"lab": lab_id, "title": BY_ID[lab_id].title, "jobs": {"deliverable": deliverable.id,
                                                                     "grade": grading.id},
               "seconds": {"deliverable": deliverable.seconds, "grade": grading.seconds}}
        try:
            row["deliverable"] = record.decode(ray.get_job_logs(deliverable.id), DeliverableRecord).metrics
        except record.RecordError as e:
            row["deliverable_error"] = f"{deliverable.status}: {e}"
        try:
            grade = client.result(grading.id, address)
            book.record(grade, source=f"ray:{grading.id}")
            row["grade"] = {"score": grade.score, "max_score": grade.max_score,
                            "failed": [c.name for c in grade.checks if not c.passed]}
        except client.JobError as e:
            row["grade_error"] = str(e)
        rows.append(row)
    (out_dir / "index.json").write_text(json.dumps({"profile": profile, "address": address, "labs": rows,
                                                    "duration_s": round(time.monotonic() - t0, 1),
                                                    "reference_tokens_per_s": round(speed)}, indent=2))
    _write_index(out_dir, profile, rows, time.monotonic() - t0, speed)
    failed = [r["lab"] for r in rows if "deliverable_error" in r or "grade_error" in r]
    if failed:
        raise RuntimeError(f"jobs failed for {', '.join(failed)}; see {out_dir / 'index.md'} and `llmlab jobs`")
    return out_dir / "index.html"


def _write_index(out_dir: Path, profile: str, rows: list[dict], seconds: float, speed: float) -> None:
    machine = f"the machine at the start: {speed:,.0f} tokens/s in a reference training step, one thread"
    md = [f"# llmlab run ({profile} profile, {seconds:.0f}s)\n", f"{machine}\n",
          "| lab | deliverable | reference grade |", "|---|---|---|"]
    body = [f"<h1>llmlab run ({html.escape(profile)} profile, {seconds:.0f}s)</h1><p>{html.escape(machine)}</p>"]
    for r in rows:
        d = r.get("deliverable")
        g = r.get("grade")
        dtext = f"{d['duration_s']:.1f}s, {len(d['plots'])} plots" if d else r.get("deliverable_error", "")
        gtext = (f"{g['score']:g}/{g['max_score']:g} ({r['seconds']['grade']:.0f}s)" if g
                 else r.get("grade_error", ""))
        md.append(f"| [{r['lab']} {r['title']}]({r['lab']}/report.md) | {dtext} | {gtext} |")
        body.append(f"<h2>{r['lab']}: {html.escape(r['title'])}</h2><p>deliverable: {html.escape(dtext)}; "
                    f"reference grade: {html.escape(gtext)}; <a href='{r['lab']}/report.md'>report</a>, "
                    f"<a href='{r['lab']}/metrics.json'>metrics</a></p>")
        for plot in (d or {}).get("plots", []):
            body.append(f"<figure><img src='{r['lab']}/{plot}' style='max-width:720px'>"
                        f"<figcaption>{html.escape(plot)}</figcaption></figure>")
    (out_dir / "index.md").write_text("\n".join(md) + "\n")
    (out_dir / "index.html").write_text("<!doctype html><meta charset='utf-8'><title>llmlab run</title>"
                                        "<body style='font-family:sans-serif'>" + "\n".join(body) + "</body>")
