"""Labs, grading and submissions, jobs and the gradebook."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from llmlab.cli import AddressOpt, Fail, ServerOpt, TokenOpt, app, err, out

lab_app = typer.Typer(help="Show, run and start a lab.", no_args_is_help=True)
app.add_typer(lab_app, name="lab")


# --- labs ----------------------------------------------------------------------------------------------
@app.command("labs")
def labs_cmd(as_json: Annotated[bool, typer.Option("--json")] = False):
    """List the 20 labs and which are built."""
    from llmlab.labs import catalogue

    labs = catalogue()
    if as_json:
        out.print_json(json.dumps([lab.model_dump() for lab in labs]))
        return
    table = Table("id", "title", "topics", "state")
    for lab in labs:
        table.add_row(lab.id, lab.title, ", ".join(lab.topics),
                      "[green]built[/]" if lab.built else "[dim]not yet built[/]")
    out.print(table)


def _lab(lab_id: str):
    from llmlab.labs import LabNotBuilt, UnknownLab, get_lab

    try:
        return get_lab(lab_id)
    except (UnknownLab, LabNotBuilt) as e:
        raise Fail(str(e), 2) from None


@lab_app.command("show")
def lab_show(lab_id: Annotated[str, typer.Argument(metavar="ID")]):
    """Print the spec a learner implements, and the graded checks."""
    from llmlab.labs import BY_ID

    lab = _lab(lab_id)
    out.print(f"[bold]{lab.id}: {BY_ID[lab.id].title}[/]  (reference: {lab.reference})\n")
    out.print(lab.rules_text() + "\n", markup=False, highlight=False)
    out.print(lab.spec_text(), markup=False, highlight=False)
    entry = BY_ID[lab.id]
    out.print(f"graded deliverable: {'; '.join(entry.deliverable)}", markup=False, highlight=False)
    table = Table("check", "points", "grades (deliverable item or topic)", "what it checks", title="\nchecks")
    for c in lab.checks:
        table.add_row(c.name, f"{c.points:g}", c.grades + ("" if c.grades in entry.deliverable else " (topic)"),
                      c.description)
    out.print(table)
    out.print(f"limits: {lab.limits.call_timeout_s:g}s per call, {lab.limits.total_timeout_s:g}s in all, "
              f"{lab.limits.memory_mb} MB; start from `llmlab lab starter {lab.id}`")


@lab_app.command("starter")
def lab_starter(lab_id: Annotated[str, typer.Argument(metavar="ID")],
                path: Annotated[Path | None, typer.Option("--out", help="write here instead of stdout")] = None):
    """Write a skeleton submission with every spec signature."""
    source = _lab(lab_id).starter_source()
    if path is None:
        out.print(source, markup=False, highlight=False)
    elif path.exists():
        raise Fail(f"{path} exists; not overwriting it")
    else:
        path.write_text(source)
        out.print(f"wrote {path}")


@lab_app.command("run")
def lab_run(lab_id: Annotated[str, typer.Argument(metavar="ID")],
            profile: Annotated[str, typer.Option(help="quick (CI scale) or full (the course's scale)")] = "quick",
            out_dir: Annotated[Path | None, typer.Option("--out", help="default: runs/ID-PROFILE")] = None):
    """Run a lab's reference deliverable: metrics.json, PNG plots and report.md."""
    from llmlab.labs import run_deliverable

    lab = _lab(lab_id)
    out_dir = out_dir or Path("runs") / f"{lab.id}-{profile}"
    with out.status(f"running {lab.id} ({profile})"):
        try:
            record = run_deliverable(lab.id, profile, out_dir)
        except ValueError as e:
            raise Fail(str(e), 2) from None
    out.print(f"{lab.id} {profile}: {record['duration_s']:.1f}s; wrote {out_dir}/metrics.json, report.md, "
              f"{len(record['plots'])} plots")


# --- grading -------------------------------------------------------------------------------------------
def print_result(result, as_json: bool) -> None:
    if as_json:
        out.print_json(result.model_dump_json())
        return
    table = Table("check", "points", "result", "message", title=f"{result.lab} - learner {result.learner}")
    for c in result.checks:
        table.add_row(c.name, f"{c.points:g}/{c.max_points:g}", "[green]pass[/]" if c.passed else "[red]fail[/]",
                      c.message)
    out.print(table)
    out.print(f"[bold]score {result.score:g}/{result.max_score:g}[/] ({100 * result.fraction:.0f}%)  "
              f"seed {result.seed}  {result.duration_s:.1f}s  sha256 {result.submission_sha256[:12]}  "
              f"sandbox: {result.isolation}")
    if result.error:
        out.print(f"[red]{result.error}[/]")
    for finding in result.findings:
        out.print(f"[yellow]scan:[/] {finding}", markup=True, highlight=False)
    if result.output:
        out.print("[dim]the submission's output (escaped):[/]")
        out.print(result.output, markup=False, highlight=False)


def _record(result, source: str, enabled: bool) -> None:
    if enabled:
        from llmlab.platform.gradebook import Gradebook

        Gradebook().record(result, source=source)


@app.command("grade")
def grade_cmd(lab_id: Annotated[str, typer.Argument(metavar="ID")],
              path: Annotated[Path, typer.Argument(help="a .py file or a folder")],
              learner: Annotated[str, typer.Option(help="recorded in the result and the gradebook")] = "anonymous",
              seed: Annotated[int | None, typer.Option(help="reproduce a grading's inputs")] = None,
              timeout: Annotated[float | None, typer.Option(help="total wall-time limit, seconds")] = None,
              memory_mb: Annotated[int | None, typer.Option(help="memory limit of the submission")] = None,
              as_json: Annotated[bool, typer.Option("--json")] = False,
              record: Annotated[bool, typer.Option(help="store the result in the gradebook")] = True,
              first_failure: Annotated[bool, typer.Option("-x", "--stop-at-first-failure",
                                                          help="skip the checks after the first failed one")] = False,
              check: Annotated[list[str] | None, typer.Option("--check", "-k", metavar="NAME",
                                                              help="run only this check (repeatable)")] = None):
    """Grade a submission locally, in a sandboxed process. Exit 0 whenever grading happened."""
    from llmlab.platform.grading import grade, isolation
    from llmlab.platform.grading.runner import with_limits

    lab = _lab(lab_id)
    limits = with_limits(lab.limits, timeout=timeout, memory_mb=memory_mb)
    if (why := isolation.available()) is not None:
        err.print(f"[yellow]warning:[/] grading without OS isolation ({why}); the submission runs with your "
                  "rights. Grade only code you trust; the grading service and Ray jobs refuse to do this.")
    try:
        with contextlib.nullcontext() if as_json else out.status("grading") as status:
            result = grade(lab, path, learner=learner, seed=seed, limits=limits, allow_unisolated=True,
                           stop_at_first_failure=first_failure, checks=check,
                           progress=status and (lambda name: status.update(f"grading {lab.id}: {name}")))
    except (FileNotFoundError, ValueError) as e:
        raise Fail(str(e), 2) from None
    _record(result, "local", record)
    print_result(result, as_json)


@app.command("submit")
def submit_cmd(lab_id: Annotated[str, typer.Argument(metavar="ID")],
               path: Annotated[Path, typer.Argument(help="a .py file or a folder")],
               address: AddressOpt = None,
               learner: Annotated[str, typer.Option()] = "anonymous",
               seed: Annotated[int | None, typer.Option()] = None,
               wait: Annotated[bool, typer.Option("--wait/--no-wait", help="wait for the result")] = True,
               as_json: Annotated[bool, typer.Option("--json")] = False,
               record: Annotated[bool, typer.Option(help="store the result in the gradebook")] = True,
               server: Annotated[str | None, typer.Option(help="a grading service URL instead of Ray directly",
                                                          envvar="LLMLAB_SERVER")] = None,
               token: TokenOpt = None):
    """Submit a grading as a Ray job (Ray's Job Submission API), or to a grading service (--server)."""
    from llmlab.labs import LabNotBuilt, UnknownLab
    from llmlab.platform.jobs import client

    if server:
        return _submit_to_service(lab_id, path, server, token, wait, as_json)

    try:
        with out.status("submitting"):
            job_id, address = client.submit_grading(lab_id, path, address=address, learner=learner, seed=seed)
    except (FileNotFoundError, UnknownLab, LabNotBuilt) as e:
        raise Fail(str(e), 2) from None
    except (client.JobError, RuntimeError) as e:
        raise Fail(str(e)) from None
    if not wait:
        out.print(job_id) if as_json else out.print(f"submitted {job_id} to {address}; `llmlab job {job_id}`")
        return
    with out.status(f"job {job_id}") as status:
        state = client.wait(job_id, address, on_status=lambda s: status.update(f"job {job_id}: {s}"))
    if state != "SUCCEEDED":
        raise Fail(f"job {job_id} ended {state}; see `llmlab job {job_id} --logs`")
    result = client.result(job_id, address)
    _record(result, f"ray:{job_id}", record)
    print_result(result, as_json)


@contextlib.contextmanager
def _grading_service(server: str, token: str | None):
    """A client of the grading service; its refusals become errors for the user (exit 2 for the request's
    fault, 1 for the service's or the network's)."""
    from llmlab.platform.grading_client import GradingClient, ServiceError

    try:
        with GradingClient(server, token or "") as grader:
            yield grader
    except ServiceError as e:
        raise Fail(str(e), 2 if e.status and e.status < 500 else 1) from None


def _submit_to_service(lab_id: str, path: Path, server: str, token: str | None, wait: bool, as_json: bool):
    with _grading_service(server, token) as grader:
        if not wait:
            sub = grader.submit(lab_id, path)
            out.print(sub["id"] if as_json else f"submitted {sub['id']} to {server}")
            return
        with out.status("submitting") as status:
            sub = grader.submit(lab_id, path, wait=True, on_state=lambda state: status.update(f"submission: {state}"))
        result = grader.result(sub)
    print_result(result, as_json)


@app.command("jobs")
def jobs_cmd(address: AddressOpt = None, as_json: Annotated[bool, typer.Option("--json")] = False):
    """List llmlab's Ray jobs, newest first."""
    from llmlab.platform.jobs import client

    jobs = client.list_jobs(address)
    if as_json:
        out.print_json(json.dumps([j.model_dump(mode="json") for j in jobs]))
        return
    table = Table("job", "lab", "learner", "status", "submitted")
    for j in jobs:
        table.add_row(j.job_id, j.lab or "", j.learner or "", j.status,
                      j.submitted_at.strftime("%Y-%m-%d %H:%M:%S") if j.submitted_at else "")
    out.print(table)


@app.command("job")
def job_cmd(job_id: str, address: AddressOpt = None,
            show_logs: Annotated[bool, typer.Option("--logs", help="print the job's logs")] = False,
            as_json: Annotated[bool, typer.Option("--json")] = False):
    """Show one job: status and, once it succeeded, its grading result."""
    from llmlab.platform.jobs import client

    job = client.get_job(job_id, address)
    if show_logs:
        out.print(client.logs(job_id, address), markup=False, highlight=False)
        return
    if as_json:
        out.print_json(job.model_dump_json())
        return
    out.print(f"{job.job_id}  lab {job.lab}  learner {job.learner}  [bold]{job.status}[/]  {job.message or ''}")
    if job.result:
        print_result(job.result, False)


@app.command("gradebook")
def gradebook_cmd(learner: Annotated[str | None, typer.Option(help="one learner (default: all)")] = None,
                  db: Annotated[Path | None, typer.Option(help="SQLite file (default: user data dir)")] = None,
                  server: ServerOpt = None, token: TokenOpt = None,
                  as_json: Annotated[bool, typer.Option("--json")] = False):
    """Best score per lab with the course's assessment weights: from the local gradebook, or with --server
    from the grading service (your own; everyone's with an instructor's token)."""
    from llmlab.platform.gradebook import COMPONENT_NAMES, Gradebook

    if server:
        with _grading_service(server, token) as grader:
            grades = [g for g in grader.gradebook() if learner in (None, g.learner)]
        where = server
    else:
        book = Gradebook(db)
        grades = [book.summary(name) for name in ([learner] if learner else book.learners())]
        where = str(book.path)
    if as_json:
        out.print_json(json.dumps([g.model_dump(mode="json") for g in grades]))
        return
    if not grades:
        out.print(f"no grades yet in {where}")
    for g in grades:
        table = Table("lab", "best", "attempts", title=f"learner {g.learner}")
        for lab in g.labs:
            table.add_row(lab.lab, f"{lab.best:g}/{lab.max_score:g} ({100 * lab.fraction:.0f}%)", str(lab.attempts))
        out.print(table)
        comp = Table("component", "weight", "score", "graded")
        for k, c in g.components.items():
            comp.add_row(COMPONENT_NAMES[k], f"{100 * c.weight:.0f}%",
                         "[dim]pending[/]" if c.score is None else f"{100 * c.score:.1f}%",
                         f"{c.graded_items}/{c.items}" if c.items else "no items yet")
        out.print(comp)
        if g.overall is not None:
            out.print(f"overall so far: [bold]{100 * g.overall:.1f}%[/] over the graded components "
                      f"({100 * g.weight_covered:.0f}% of the course weight)\n")


