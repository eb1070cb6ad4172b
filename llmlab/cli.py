"""The ``llmlab`` command. Thin: argument parsing and printing; the work is in the library.

Every verb exits non-zero on failure and prints the error without a traceback (``LLMLAB_DEBUG=1`` shows it).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="llmlab: the mathematics and engineering of LLMs, as 20 graded labs.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
lab_app = typer.Typer(help="Show, run and start a lab.", no_args_is_help=True)
app.add_typer(lab_app, name="lab")
out = Console()
err = Console(stderr=True)

AddressOpt = Annotated[str | None, typer.Option("--address", help="Ray dashboard URL, e.g. http://HOST:8265 "
                                                "(default: a local head started on demand)")]
ServerOpt = Annotated[str | None, typer.Option(help="a grading service URL", envvar="LLMLAB_SERVER")]
TokenOpt = Annotated[str | None, typer.Option(help="your token for --server", envvar="LLMLAB_TOKEN")]


class Fail(Exception):
    """An error for the user: printed without a traceback, exit code ``code``."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


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
        from llmlab.gradebook import Gradebook

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
                                                          help="skip the checks after the first failed one")] = False):
    """Grade a submission locally, in a sandboxed process. Exit 0 whenever grading happened."""
    from llmlab.grading import grade, isolation
    from llmlab.grading.runner import with_limits

    lab = _lab(lab_id)
    limits = with_limits(lab.limits, timeout=timeout, memory_mb=memory_mb)
    if (why := isolation.available()) is not None:
        err.print(f"[yellow]warning:[/] grading without OS isolation ({why}); the submission runs with your "
                  "rights. Grade only code you trust; the grading service and Ray jobs refuse to do this.")
    try:
        if as_json:
            result = grade(lab, path, learner=learner, seed=seed, limits=limits, allow_unisolated=True,
                           stop_at_first_failure=first_failure)
        else:
            with out.status("grading") as status:
                result = grade(lab, path, learner=learner, seed=seed, limits=limits, allow_unisolated=True,
                               stop_at_first_failure=first_failure,
                               progress=lambda name: status.update(f"grading {lab.id}: {name}"))
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
    from llmlab.jobs import client
    from llmlab.labs import LabNotBuilt, UnknownLab

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


def _grading_client(server: str, token: str | None):
    from llmlab.platform.grading_client import GradingClient, ServiceError

    try:
        return GradingClient(server, token or "")
    except ServiceError as e:
        raise Fail(str(e), 2) from None


def _submit_to_service(lab_id: str, path: Path, server: str, token: str | None, wait: bool, as_json: bool):
    from llmlab.platform.grading_client import ServiceError

    with _grading_client(server, token) as grader:
        try:
            if not wait:
                sub = grader.submit(lab_id, path)
                out.print(sub["id"] if as_json else f"submitted {sub['id']} to {server}")
                return
            with out.status("submitting") as status:
                sub = grader.submit(lab_id, path, wait=True,
                                    on_state=lambda state: status.update(f"submission: {state}"))
            result = grader.result(sub)
        except ServiceError as e:
            raise Fail(str(e), 2 if e.status and e.status < 500 else 1) from None
    print_result(result, as_json)


@app.command("jobs")
def jobs_cmd(address: AddressOpt = None, as_json: Annotated[bool, typer.Option("--json")] = False):
    """List llmlab's Ray jobs, newest first."""
    from llmlab.jobs import client

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
    from llmlab.jobs import client

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
    from llmlab.gradebook import COMPONENT_NAMES, Gradebook

    if server:
        from llmlab.platform.grading_client import ServiceError

        with _grading_client(server, token) as grader:
            try:
                grades = [g for g in grader.gradebook() if learner in (None, g.learner)]
            except ServiceError as e:
                raise Fail(str(e), 2 if e.status and e.status < 500 else 1) from None
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


@app.command("run")
def run_cmd(profile: Annotated[str, typer.Option(help="quick or full")] = "quick",
            address: AddressOpt = None,
            labs: Annotated[str | None, typer.Option(help="comma-separated lab ids (default: every built lab)")] = None,
            out_dir: Annotated[Path | None, typer.Option("--out", help="default: runs/<timestamp>")] = None):
    """The main job: every built lab's deliverable and grading as Ray jobs, an index, and the gradebook."""
    from llmlab.course import run_course

    index = run_course(profile=profile, address=address, labs=labs.split(",") if labs else None,
                       out_dir=out_dir, console=out)
    out.print(f"\nindex: {index}")
    gradebook_cmd(learner="reference", db=None, server=None, token=None, as_json=False)


serve_app = typer.Typer(help="Run llmlab's services.", no_args_is_help=True)
app.add_typer(serve_app, name="serve")
learners_app = typer.Typer(help="Learners and tokens of the grading service.", no_args_is_help=True)
app.add_typer(learners_app, name="learners")
DbOpt = Annotated[str | None, typer.Option("--db", help="database URL (default: the grading service's)")]


@serve_app.command("grader")
def serve_grader(host: Annotated[str, typer.Option()] = "127.0.0.1", port: Annotated[int, typer.Option()] = 8000,
                 db: DbOpt = None, ray_address: AddressOpt = None):
    """The grading service (submissions API, gradebook, /metrics), grading as Ray jobs."""
    import uvicorn

    from services.grader.app import create_app
    from services.grader.settings import GraderSettings

    overrides = {k: v for k, v in (("database_url", db), ("ray_address", ray_address)) if v}
    uvicorn.run(create_app(GraderSettings(**overrides)), host=host, port=port, log_level="warning")


@serve_app.command("inference")
def serve_inference(model: Annotated[Path, typer.Option("--model", help="a Hugging Face folder (Llama or GPT-2)")],
                    draft: Annotated[Path | None, typer.Option("--draft", help="draft model folder")] = None,
                    spec_tokens: Annotated[int, typer.Option("--spec-tokens", help="tokens proposed per step")] = 4,
                    ngram: Annotated[str | None, typer.Option("--ngram", help="lookup MAX,MIN: 4,2")] = None,
                    engine: Annotated[str, typer.Option("--engine", help="builtin or vllm")] = "builtin",
                    host: Annotated[str, typer.Option()] = "127.0.0.1", port: Annotated[int, typer.Option()] = 8001,
                    max_batch: Annotated[int, typer.Option("--max-batch")] = 8,
                    max_waiting: Annotated[int, typer.Option("--max-waiting")] = 32,
                    name: Annotated[str, typer.Option("--served-model-name")] = "",
                    api_key: Annotated[str | None, typer.Option("--api-key", envvar="LLMLAB_INFERENCE_API_KEY")] = None,
                    dtype: Annotated[str, typer.Option("--dtype", help="float32 or bfloat16")] = "float32",
                    device: Annotated[str, typer.Option("--device", help="cpu, cuda or cuda:N (builtin)")] = "cpu",
                    compile: Annotated[bool, typer.Option("--compile", help="builtin: torch.compile the decode "
                                                          "step (built at startup)")] = False):
    """Serve a model with an OpenAI-compatible API (builtin engine; --engine vllm hands over to `vllm serve`)."""
    if not (model / "config.json").exists():
        raise Fail(f"{model} is not a model folder (no config.json)", 2)
    if draft is not None and not (draft / "config.json").exists():
        raise Fail(f"{draft} is not a model folder (no config.json)", 2)
    if not api_key and not _loopback(host):
        raise Fail(f"--host {host} serves beyond this machine: give an API key (--api-key or "
                   "LLMLAB_INFERENCE_API_KEY; vLLM reads the same one)", 2)
    if api_key and engine == "vllm":
        os.environ["VLLM_API_KEY"] = api_key
    lookup = None
    if ngram:
        try:
            hi, lo = (int(x) for x in ngram.split(","))
        except ValueError:
            raise Fail("--ngram takes MAX,MIN, e.g. 4,2", 2) from None
        lookup = (hi, lo)
    if engine == "vllm":
        import shutil

        from llmlab.inference import vllm_args

        spec = None
        if draft or lookup:
            spec = vllm_args.speculative_config("ngram" if lookup else "draft_model", spec_tokens,
                                                str(draft) if draft else None, lookup)
        exe = shutil.which("vllm")
        if exe is None:
            raise Fail("vLLM is not installed here (it needs a CUDA GPU node); use --engine builtin", 2)
        import json as _json

        config = _json.loads((model / "config.json").read_text())
        max_len = config.get("max_position_embeddings") or config.get("n_positions", 2048)  # Llama / GPT-2
        os.execv(exe, [exe, "serve", *vllm_args.vllm_serve_args(str(model), served_model_name=name or model.name,
                                                                  max_model_len=max_len, port=port, host=host,
                                                                  speculative=spec, dtype=dtype)])
    import uvicorn

    from services.inference.app import create_app
    from services.inference.settings import InferenceSettings

    settings = InferenceSettings(model=model, draft_model=draft, ngram=lookup, spec_tokens=spec_tokens,
                                 max_batch=max_batch, max_waiting=max_waiting, served_model_name=name,
                                 api_key=api_key, dtype=dtype, device=device, compile=compile)
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise Fail(f"--device {device}: no CUDA GPU is visible to torch here", 2)
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning")


def _loopback(host: str) -> bool:
    import ipaddress

    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


@serve_app.command("operator")
def serve_operator(namespace: Annotated[list[str] | None, typer.Option(help="namespace(s) to watch")] = None,
                   all_namespaces: Annotated[bool, typer.Option("--all-namespaces")] = False,
                   liveness_port: Annotated[int | None, typer.Option(help="serve /healthz on this port")] = None):
    """The LabSubmission operator (kopf): LabSubmissions become KubeRay RayJobs, results come back."""
    import kopf

    import operators.labsubmission  # noqa: F401 - registers the handlers

    if not namespace and not all_namespaces:
        raise Fail("give --namespace NS (repeatable) or --all-namespaces", 2)
    kopf.run(standalone=True, clusterwide=all_namespaces, namespaces=namespace or [],
             liveness_endpoint=f"http://0.0.0.0:{liveness_port}/healthz" if liveness_port else None)


def _store(db: str | None):
    from llmlab.submissions import Store
    from services.grader.settings import GraderSettings

    settings = GraderSettings(**({"database_url": db} if db else {}))
    return Store(settings.resolved_database_url(), settings.files_dir, settings.token_ttl_days)


@learners_app.command("add")
def learners_add(name: str, instructor: Annotated[bool, typer.Option("--instructor")] = False, db: DbOpt = None):
    """Create a learner (or the first instructor) and print their token (shown once)."""
    try:
        token = _store(db).add_learner(name, "instructor" if instructor else "learner")
    except ValueError as e:
        raise Fail(str(e), 2) from None
    out.print(token, markup=False, highlight=False)


@learners_app.command("token")
def learners_token(name: str, rotate: Annotated[bool, typer.Option(help="revoke the learner's other tokens")] = False,
                   db: DbOpt = None):
    """Issue another token for a learner (tokens expire after LLMLAB_GRADER_TOKEN_TTL_DAYS, default 90)."""
    try:
        out.print(_store(db).issue_token(name, revoke_others=rotate), markup=False, highlight=False)
    except LookupError as e:
        raise Fail(str(e), 2) from None


@learners_app.command("revoke")
def learners_revoke(name: str, db: DbOpt = None):
    """Revoke every token of a learner."""
    try:
        out.print(f"revoked {_store(db).revoke_tokens(name)} token(s) of {name}")
    except LookupError as e:
        raise Fail(str(e), 2) from None


@learners_app.command("list")
def learners_list(db: DbOpt = None):
    table = Table("name", "role", "since")
    for person in _store(db).learners():
        table.add_row(person.name, person.role, person.created_at.strftime("%Y-%m-%d"))
    out.print(table)


def _print_parts(parts, as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps([vars(p) for p in parts]))
        return
    table = Table("part", "url", "health", "started by llmlab up")
    for p in parts:
        table.add_row(p.name, p.url, "[green]up[/]" if p.healthy else "[red]down[/]", "yes" if p.started_by_up else "")
    out.print(table)


@app.command("up")
def up_cmd(grader_port: Annotated[int, typer.Option()] = 8000,
           prometheus_port: Annotated[int, typer.Option()] = 9090,
           model: Annotated[Path | None, typer.Option("--model", envvar="LLMLAB_INFERENCE_MODEL",
                                                      help="also serve this model folder (inference service)")] = None,
           inference_port: Annotated[int, typer.Option()] = 8001,
           as_json: Annotated[bool, typer.Option("--json")] = False):
    """Start the embedded platform on 127.0.0.1: Ray head, grading service, the inference service (with
    --model), Prometheus (when installed)."""
    from llmlab import stack

    if model is not None and not (model / "config.json").exists():
        raise Fail(f"{model} is not a model folder (no config.json)", 2)
    with out.status("starting the local platform"):
        parts = stack.up(grader_port, prometheus_port, model, inference_port)
    _print_parts(parts, as_json)
    if not any(p.name == "prometheus" and p.healthy for p in parts) and not as_json:
        out.print("[dim]Prometheus is not installed: apt-get install prometheus (metrics are still at "
                  "the grader's /metrics)[/]")


@app.command("down")
def down_cmd():
    """Stop exactly what `llmlab up` started."""
    from llmlab import stack

    stopped = stack.down()
    out.print(f"stopped: {', '.join(stopped) or 'nothing (llmlab up started nothing that still runs)'}")


@app.command("status")
def status_cmd(as_json: Annotated[bool, typer.Option("--json")] = False):
    """Health of each part of the local platform."""
    from llmlab import stack

    _print_parts(stack.status(), as_json)


slo_app = typer.Typer(help="Service level objectives (loadtests/slos.yaml).", no_args_is_help=True)
app.add_typer(slo_app, name="slo")


@slo_app.command("rules")
def slo_rules(out_dir: Annotated[Path, typer.Option("--out")] = Path("dashboards/rules")):
    """Generate the Prometheus recording rules and burn-rate alerts from the SLO file."""
    from llmlab import slo

    for path in slo.write_rules(out_dir):
        out.print(f"wrote {path}")


@app.command("dashboards")
def dashboards_cmd(out_dir: Annotated[Path, typer.Option("--out")] = Path("dashboards")):
    """Generate the Grafana dashboards (JSON) from llmlab.dashboards."""
    from llmlab import dashboards

    for path in dashboards.write(out_dir):
        out.print(f"wrote {path}")


# --- text tools (labs m06 and m10) ---------------------------------------------------------------------
tokenizer_app = typer.Typer(help="Train and inspect tokenizers (lab m10).", no_args_is_help=True)
app.add_typer(tokenizer_app, name="tokenizer")


@tokenizer_app.command("train")
def tokenizer_train(inputs: Annotated[list[Path], typer.Argument(metavar="INPUT...", help="UTF-8 text files")],
                    out_dir: Annotated[Path, typer.Option("--out", help="folder for tokenizer.json and friends")],
                    model: Annotated[str, typer.Option("--model", help="bpe or unigram")] = "bpe",
                    vocab_size: Annotated[int, typer.Option("--vocab-size")] = 10_000,
                    special_tokens: Annotated[list[str] | None, typer.Option("--special-tokens",
                                                                            help="repeat for several")] = None,
                    as_json: Annotated[bool, typer.Option("--json")] = False):
    """Train a byte-level BPE or unigram tokenizer on text files; writes tokenizer.json (Hugging Face),
    plus vocab.json and merges.txt for BPE."""
    import time

    from llmlab import tokenization as tk

    if model not in ("bpe", "unigram"):
        raise Fail("--model must be bpe or unigram", 2)
    missing = [str(p) for p in inputs if not p.is_file()]
    if missing:
        raise Fail(f"no such file: {', '.join(missing)}", 2)
    try:
        text = "".join(p.read_text(encoding="utf-8") for p in inputs)
    except UnicodeDecodeError as e:
        raise Fail(f"input is not UTF-8 text: {e}", 2) from None
    specials = special_tokens or []
    t0 = time.perf_counter()
    try:
        cls = tk.BPETokenizer if model == "bpe" else tk.UnigramTokenizer
        tok = cls.train(text, vocab_size, specials, progress=not as_json)
    except ValueError as e:
        raise Fail(str(e), 2) from None
    seconds = time.perf_counter() - t0
    tok.save(out_dir)
    summary = {"model": model, "vocab_size": tok.vocab_size, "special_tokens": specials,
               "input_bytes": len(text.encode("utf-8")), "bytes_per_token": round(tk.compression_ratio(tok, text), 4),
               "seconds": round(seconds, 2), "out": str(out_dir)}
    if as_json:
        out.print_json(json.dumps(summary))
        return
    table = Table("", "", title=f"{model} tokenizer")
    for k, v in summary.items():
        table.add_row(k, str(v))
    out.print(table)


@app.command("suffix-tree")
def suffix_tree_cmd(text: Annotated[str, typer.Argument(help="the text (or --file)")] = "",
                    out_path: Annotated[Path, typer.Option("--out", help=".svg/.png/.pdf/.dot")] = Path("tree.svg"),
                    file: Annotated[Path | None, typer.Option("--file", help="read the text from a file")] = None,
                    max_nodes: Annotated[int, typer.Option("--max-nodes")] = 400):
    """Build a suffix tree (Ukkonen) and draw it with Graphviz; prints its statistics."""
    from llmlab import suffix

    if file is not None:
        if not file.is_file():
            raise Fail(f"no such file: {file}", 2)
        text = file.read_text(encoding="utf-8")
    if not text:
        raise Fail("give a text or --file", 2)
    tree = suffix.SuffixTree(text)
    try:
        suffix.render_dot(tree.to_dot(max_nodes), out_path)
    except (suffix.GraphvizMissing, ValueError) as e:
        raise Fail(str(e), 2) from None
    lrs = tree.longest_repeated_substring()
    out.print(f"{len(text)} characters, {tree.n_nodes} nodes, {tree.distinct_substrings()} distinct substrings, "
              f"longest repeated substring ({len(lrs)} chars): {lrs[:60]!r}\nwrote {out_path}")


@app.command("vocab-trie")
def vocab_trie_cmd(path: Annotated[Path, typer.Argument(help="tokenizer folder, tokenizer.json or vocab.json")],
                   out_path: Annotated[Path, typer.Option("--out", help=".svg, .png, .pdf or .dot")] = Path("trie.svg"),
                   max_nodes: Annotated[int, typer.Option("--max-nodes")] = 200):
    """Draw a prefix trie of a tokenizer's vocabulary (shortest tokens first, up to --max-nodes)."""
    from llmlab import suffix, tokenization

    if not path.exists():
        raise Fail(f"no such tokenizer: {path}", 2)
    try:
        tokens = tokenization.vocabulary_strings(path)
    except (OSError, ValueError, KeyError) as e:
        raise Fail(f"cannot read a vocabulary from {path}: {e}", 2) from None
    try:
        suffix.render_dot(suffix.vocab_trie_dot(sorted(tokens, key=len), max_nodes), out_path)
    except (suffix.GraphvizMissing, ValueError) as e:
        raise Fail(str(e), 2) from None
    out.print(f"{len(tokens)} tokens; wrote {out_path}")


def main() -> None:
    try:
        app(standalone_mode=False)
    except Fail as e:
        err.print(f"[red]error:[/] {e}")
        sys.exit(e.code)
    except (typer.Exit, SystemExit) as e:
        sys.exit(getattr(e, "exit_code", getattr(e, "code", 0)))
    except typer.Abort:
        sys.exit(130)
    except Exception as e:  # click usage errors and anything unexpected: one line, no traceback
        import click

        if isinstance(e, click.ClickException):
            e.show()
            sys.exit(e.exit_code)
        if os.environ.get("LLMLAB_DEBUG"):
            raise
        err.print(f"[red]error:[/] {type(e).__name__}: {e}")
        sys.exit(1)
