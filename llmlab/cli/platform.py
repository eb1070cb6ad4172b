"""The course run, the services, learners and tokens, the local stack, SLOs and dashboards."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from llmlab.cli import AddressOpt, Fail, app, out
from llmlab.cli.labs import gradebook_cmd
from llmlab.platform import logs


@app.command("run")
def run_cmd(profile: Annotated[str, typer.Option(help="quick or full")] = "quick",
            address: AddressOpt = None,
            labs: Annotated[str | None, typer.Option(help="comma-separated lab ids (default: every built lab)")] = None,
            out_dir: Annotated[Path | None, typer.Option("--out", help="default: runs/<timestamp>")] = None,
            parallel: Annotated[int | None, typer.Option(min=1, help="jobs at a time (default: the cluster's "
                                                                     "CPUs)")] = None):
    """The main job: every built lab's deliverable and grading as Ray jobs, an index, and the gradebook."""
    from llmlab.platform.course import run_course

    index = run_course(profile=profile, address=address, labs=labs.split(",") if labs else None,
                       out_dir=out_dir, console=out, parallel=parallel)
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
    uvicorn.run(create_app(GraderSettings(**overrides)), host=host, port=port, log_level="warning",
                log_config=logs.uvicorn_config("grader"), access_log=False)


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
    lookup = None
    if ngram:
        try:
            hi, lo = (int(x) for x in ngram.split(","))
        except ValueError:
            raise Fail("--ngram takes MAX,MIN, e.g. 4,2", 2) from None
        lookup = (hi, lo)
    from services.inference.settings import InferenceSettings

    settings = InferenceSettings(engine=engine, model=model, draft_model=draft, ngram=lookup, spec_tokens=spec_tokens,
                                 max_batch=max_batch, max_waiting=max_waiting, served_model_name=name,
                                 api_key=api_key, dtype=dtype, device=device, compile=compile)
    if settings.engine == "vllm":
        from services.inference import vllm

        try:
            vllm.launch(settings, host, port)  # does not return
        except vllm.VLLMUnavailable as e:
            raise Fail(str(e), 2) from None
    import uvicorn

    from services.inference.app import create_app

    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise Fail(f"--device {device}: no CUDA GPU is visible to torch here", 2)
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning",
                log_config=logs.uvicorn_config("inference"), access_log=False)


@serve_app.command("retrieval")
def serve_retrieval(data: Annotated[Path | None, typer.Option("--data", help="the store's folder (created if "
                                                                 "missing)")] = None,
                    shard: Annotated[list[str] | None, typer.Option(
                        "--shard", help="instead of --data: a shard's URL (repeat for each): route to them")] = None,
                    index: Annotated[str, typer.Option(help="flat, hnsw, ivf_flat, ivf_pq or ivf_pq_refine")] = "hnsw",
                    host: Annotated[str, typer.Option()] = "127.0.0.1", port: Annotated[int, typer.Option()] = 8002,
                    ef_search: Annotated[int, typer.Option("--ef-search")] = 64,
                    nprobe: Annotated[int, typer.Option()] = 16,
                    max_inflight: Annotated[int, typer.Option("--max-inflight")] = 16,
                    api_key: Annotated[str | None, typer.Option("--api-key", envvar="LLMLAB_RETRIEVAL_API_KEY")] = None,
                    model: Annotated[Path | None, typer.Option("--model", help="a sentence-transformers folder "
                                                               "(default: all-MiniLM-L6-v2 from its wheel)")] = None):
    """Serve embeddings (OpenAI-compatible) and vector search over a durable FAISS index (--data), or route the
    same API over shards that do (--shard URL, repeated: searches fan out and merge, writes go round robin)."""
    from pydantic import ValidationError

    from services.retrieval.settings import RetrievalSettings

    if not api_key and not _loopback(host):
        raise Fail(f"--host {host} serves beyond this machine: give an API key (--api-key or "
                   "LLMLAB_RETRIEVAL_API_KEY) for document writes", 2)
    try:
        settings = RetrievalSettings(data_dir=data, shards=shard or [], index=index, ef_search=ef_search,
                                     nprobe=nprobe, max_inflight=max_inflight, api_key=api_key, model=model)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(map(str, err["loc"])) or "--data or --shard"
        raise Fail(f"invalid setting: {where}: {err['msg']}", 2) from None
    import uvicorn

    from services.retrieval.app import create_app

    try:
        app = create_app(settings)
    except ValueError as e:
        raise Fail(str(e), 2) from None
    uvicorn.run(app, host=host, port=port, log_level="warning", log_config=logs.uvicorn_config("retrieval"),
                access_log=False)


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
    from llmlab.platform.submissions import Store
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
           retrieval: Annotated[bool, typer.Option("--retrieval", help="also run the retrieval service (its store "
                                                   "in the stack's folder)")] = False,
           retrieval_port: Annotated[int, typer.Option()] = 8002,
           as_json: Annotated[bool, typer.Option("--json")] = False):
    """Start the embedded platform on 127.0.0.1: Ray head, grading service, the inference service (with
    --model), the retrieval service (with --retrieval), Prometheus (when installed)."""
    from llmlab.platform import stack

    if model is not None and not (model / "config.json").exists():
        raise Fail(f"{model} is not a model folder (no config.json)", 2)
    with out.status("starting the local platform"):
        parts = stack.up(grader_port, prometheus_port, model, inference_port, retrieval, retrieval_port)
    _print_parts(parts, as_json)
    if not any(p.name == "prometheus" and p.healthy for p in parts) and not as_json:
        out.print("[dim]Prometheus is not installed: apt-get install prometheus (metrics are still at "
                  "the grader's /metrics)[/]")


@app.command("down")
def down_cmd():
    """Stop exactly what `llmlab up` started."""
    from llmlab.platform import stack

    stopped = stack.down()
    out.print(f"stopped: {', '.join(stopped) or 'nothing (llmlab up started nothing that still runs)'}")


@app.command("status")
def status_cmd(as_json: Annotated[bool, typer.Option("--json")] = False):
    """Health of each part of the local platform."""
    from llmlab.platform import stack

    _print_parts(stack.status(), as_json)


slo_app = typer.Typer(help="Service level objectives (loadtests/slos.yaml).", no_args_is_help=True)
app.add_typer(slo_app, name="slo")


@slo_app.command("rules")
def slo_rules(out_dir: Annotated[Path, typer.Option("--out")] = Path("dashboards/rules")):
    """Generate the Prometheus recording rules and burn-rate alerts from the SLO file."""
    from llmlab.platform import slo

    for path in slo.write_rules(out_dir):
        out.print(f"wrote {path}")


dashboards_app = typer.Typer(help="Grafana dashboards: generate the JSON (no subcommand), or push them.",
                             invoke_without_command=True)
app.add_typer(dashboards_app, name="dashboards")


@dashboards_app.callback()
def dashboards_cmd(ctx: typer.Context, out_dir: Annotated[Path, typer.Option("--out")] = Path("dashboards")):
    """Generate the Grafana dashboards (JSON) from llmlab.platform.dashboards."""
    if ctx.invoked_subcommand is not None:
        return
    from llmlab.platform import dashboards

    for path in dashboards.write(out_dir):
        out.print(f"wrote {path}")


@dashboards_app.command("push")
def dashboards_push(grafana: Annotated[str, typer.Option("--grafana", help="Grafana's base URL")],
                    token: Annotated[str, typer.Option("--token", envvar="GRAFANA_TOKEN",
                                                       help="a service-account token")],
                    folder: Annotated[str, typer.Option(help="the folder (its uid and title)")] = "llmlab",
                    name: Annotated[list[str] | None, typer.Option("--name", help="only these dashboards")] = None):
    """Upload the dashboards through Grafana's HTTP API (into FOLDER, replacing earlier versions)."""
    from llmlab.platform import dashboards

    unknown = sorted(set(name or []) - set(dashboards.DASHBOARDS))
    if unknown:
        raise Fail(f"unknown dashboards {unknown}; they are {sorted(dashboards.DASHBOARDS)}", 2)
    try:
        for answer in dashboards.push(grafana, token, folder, name):
            out.print(f"{answer['name']}: {answer.get('status', '?')} {answer.get('url', '')} "
                      f"(version {answer.get('version', '?')})")
    except dashboards.PushError as e:
        raise Fail(str(e), 1) from None


# --- text tools (labs m06 and m10) ---------------------------------------------------------------------
