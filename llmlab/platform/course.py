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


def run_course(profile: str = "quick", address: str | None = None, labs: list[str] | None = None,
               out_dir: Path | None = None, console: Console | None = None) -> Path:
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
    with console.status("starting or reusing the Ray head"):
        address = local.ensure(address)
    console.print(f"Ray: {address}  ->  {out_dir}")
    t0 = time.monotonic()
    jobs: dict[tuple[str, str], str] = {}
    for lab_id in labs:
        jobs[(lab_id, "deliverable")] = submit_deliverable(address, lab_id, profile, out_dir / lab_id)
        jobs[(lab_id, "grade")] = _submit(
            address, grade_entrypoint(lab_id, reference=True, learner=LEARNER),
            {"llmlab.kind": "grade", "llmlab.lab": lab_id, "llmlab.learner": LEARNER})
    status = {key: "PENDING" for key in jobs}
    ray = client.connect(address)

    def table() -> Table:
        t = Table("lab", "deliverable", "grading", title=f"llmlab run ({profile}), {time.monotonic() - t0:.0f}s")
        for lab_id in labs:
            t.add_row(f"{lab_id} {BY_ID[lab_id].title}", status[(lab_id, "deliverable")],
                      status[(lab_id, "grade")])
        return t

    with Live(table(), console=console, refresh_per_second=2) as live:
        while any(s not in client.TERMINAL for s in status.values()):
            time.sleep(1)
            for key, job_id in jobs.items():
                if status[key] not in client.TERMINAL:
                    status[key] = str(ray.get_job_status(job_id).value)
            live.update(table())

    book = Gradebook()
    rows = []
    for lab_id in labs:
        row = {"lab": lab_id, "title": BY_ID[lab_id].title,
               "jobs": {k: jobs[(lab_id, k)] for k in ("deliverable", "grade")}}
        try:
            row["deliverable"] = record.decode(ray.get_job_logs(jobs[(lab_id, "deliverable")]),
                                               DeliverableRecord).metrics
        except record.RecordError as e:
            row["deliverable_error"] = f"{status[(lab_id, 'deliverable')]}: {e}"
        try:
            grade = client.result(jobs[(lab_id, "grade")], address)
            book.record(grade, source=f"ray:{jobs[(lab_id, 'grade')]}")
            row["grade"] = {"score": grade.score, "max_score": grade.max_score,
                            "failed": [c.name for c in grade.checks if not c.passed]}
        except client.JobError as e:
            row["grade_error"] = str(e)
        rows.append(row)
    (out_dir / "index.json").write_text(json.dumps({"profile": profile, "address": address, "labs": rows,
                                                    "duration_s": round(time.monotonic() - t0, 1)}, indent=2))
    _write_index(out_dir, profile, rows, time.monotonic() - t0)
    failed = [r["lab"] for r in rows if "deliverable_error" in r or "grade_error" in r]
    if failed:
        raise RuntimeError(f"jobs failed for {', '.join(failed)}; see {out_dir / 'index.md'} and `llmlab jobs`")
    return out_dir / "index.html"


def _write_index(out_dir: Path, profile: str, rows: list[dict], seconds: float) -> None:
    md = [f"# llmlab run ({profile} profile, {seconds:.0f}s)\n", "| lab | deliverable | reference grade |",
          "|---|---|---|"]
    body = [f"<h1>llmlab run ({html.escape(profile)} profile, {seconds:.0f}s)</h1>"]
    for r in rows:
        d = r.get("deliverable")
        g = r.get("grade")
        dtext = f"{d['duration_s']:.1f}s, {len(d['plots'])} plots" if d else r.get("deliverable_error", "")
        gtext = f"{g['score']:g}/{g['max_score']:g}" if g else r.get("grade_error", "")
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
