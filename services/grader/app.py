"""The grading service: submissions API, gradebook, learners and tokens, /health and /metrics.

Thin: requests are parsed and authorised here; storage, limits, grading and reconciliation live in
``llmlab.platform.submissions``. Run it with ``llmlab serve grader`` or ``uvicorn services.grader.app:app --factory``.
"""

# no "from __future__ import annotations": FastAPI resolves the closures' dependency annotations at runtime

import json
import logging
import threading
from contextlib import asynccontextmanager
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, File, Form, Header, HTTPException, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, Field

from llmlab import __version__
from llmlab.contracts import CourseGrade
from llmlab.labs import LAB_PATTERN, built_labs
from llmlab.platform.asgi import BodyLimit, Observe
from llmlab.platform.gradebook import course_grade
from llmlab.platform.logs import RequestLog
from llmlab.platform.metrics import GraderMetrics
from llmlab.platform.submissions import (
    NAME_PATTERN,
    NAME_RULE,
    GradingService,
    KubernetesBackend,
    Learner,
    RayBackend,
    SourceLinks,
    Store,
    Submission,
    SubmissionRejected,
    integrity_report,
    normalize_name,
    source_zip,
)
from services.grader.settings import GraderSettings

log = logging.getLogger(__name__)


class SubmissionOut(BaseModel):
    id: str
    lab: str
    learner: str
    state: str
    filename: str
    sha256: str
    score: float | None = None
    max_score: float | None = None
    error: str | None = None
    created_at: str
    finished_at: str | None = None
    result: dict | None = None
    integrity: dict | None = None  # instructors only: similarity to the reference and to other learners


class NewLearner(BaseModel):
    name: str = Field(description=f"{NAME_RULE}; pattern {NAME_PATTERN}")
    role: Literal["learner", "instructor"] = "learner"


MULTIPART_OVERHEAD = 64 * 1024  # form fields and part headers around the file


def create_app(settings: GraderSettings | None = None, backend=None) -> FastAPI:
    settings = settings or GraderSettings()
    store = Store(settings.resolved_database_url(), settings.files_dir, settings.token_ttl_days)
    registry = CollectorRegistry()
    metrics = GraderMetrics(registry, labs=built_labs())
    links = SourceLinks(settings.source_base_url, settings.source_signing_key.get_secret_value()) \
        if settings.source_signing_key.get_secret_value() else None
    service = GradingService(store, backend or _backend(settings, links), metrics,
                             settings.max_upload_bytes, settings.rate_limit_per_minute)
    stop = threading.Event()

    def reconcile_loop():
        while not stop.is_set():
            try:
                service.reconcile()
            except Exception:  # the database or backend blinked: log and keep going
                log.exception("reconcile pass failed")
            stop.wait(settings.reconcile_interval_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        thread = threading.Thread(target=reconcile_loop, name="reconciler", daemon=True)
        thread.start()  # the first pass picks up whatever a previous process left unfinished
        yield
        stop.set()
        thread.join(timeout=10)

    app = FastAPI(title="llmlab grading service", version=__version__, lifespan=lifespan,
                  description="Submit lab work, get it graded as Ray jobs, read the gradebook.")
    app.state.service, app.state.store = service, store

    def authorized(header: str | None) -> bool:
        return bool(header and header.lower().startswith("bearer ") and store.authenticate(header[7:].strip()))

    app.add_middleware(Observe, observe=lambda method, route, status, seconds: metrics.http_duration.labels(
        method, route, str(status)).observe(seconds))
    app.add_middleware(BodyLimit, limit=settings.max_upload_bytes + MULTIPART_OVERHEAD,
                       guarded={("POST", "/v1/submissions")}, authorized=authorized)
    app.add_middleware(RequestLog, service="grader")  # outermost: request ids and JSON access lines

    @app.exception_handler(SubmissionRejected)
    async def rejected(request: Request, exc: SubmissionRejected):
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
        return JSONResponse({"detail": str(exc)}, status_code=exc.status, headers=headers)

    def current(authorization: Annotated[str | None, Header()] = None) -> Learner:
        if not authorization or not authorization.lower().startswith("bearer "):
            raise HTTPException(401, "send 'Authorization: Bearer <token>'", headers={"WWW-Authenticate": "Bearer"})
        learner = store.authenticate(authorization.split(" ", 1)[1].strip())
        if learner is None:
            raise HTTPException(401, "unknown or revoked token", headers={"WWW-Authenticate": "Bearer"})
        return learner

    def instructor(learner: Annotated[Learner, Depends(current)]) -> Learner:
        if learner.role != "instructor":
            raise HTTPException(403, "instructors only")
        return learner

    def out(sub: Submission) -> SubmissionOut:
        return SubmissionOut(id=sub.id, lab=sub.lab, learner=store.learner_name(sub.learner_id), state=sub.state,
                             filename=sub.filename, sha256=sub.sha256, score=sub.score, max_score=sub.max_score,
                             error=sub.error, created_at=sub.created_at.isoformat(),
                             finished_at=sub.finished_at.isoformat() if sub.finished_at else None,
                             result=json.loads(sub.result_json) if sub.result_json else None)

    @app.post("/v1/submissions", status_code=202, response_model=SubmissionOut)
    async def submit(learner: Annotated[Learner, Depends(current)],
                     lab: Annotated[str, Form(pattern=LAB_PATTERN, description="a lab id, m01..m20")],
                     file: Annotated[UploadFile, File()], response: Response,
                     idempotency_key: Annotated[str | None, Header()] = None):
        """Accept a .py file or a .zip for a lab; answered once the upload is durably stored."""
        data = await file.read(settings.max_upload_bytes + 1)
        # unpacking and fsync are blocking work: off the event loop, so /health answers meanwhile
        sub, created = await run_in_threadpool(service.submit, learner, lab, file.filename or "submission.py", data,
                                               idempotency_key)
        if not created:
            response.headers["Idempotent-Replayed"] = "true"
        response.headers["Location"] = f"/v1/submissions/{sub.id}"
        return out(sub)

    @app.get("/v1/submissions/{submission_id}", response_model=SubmissionOut)
    def get_submission(submission_id: str, learner: Annotated[Learner, Depends(current)]):
        sub = store.get(submission_id)
        if sub is None or (learner.role != "instructor" and sub.learner_id != learner.id):
            raise HTTPException(404, "no such submission")  # others' submissions do not exist for a learner
        view = out(sub)
        if learner.role == "instructor":
            view.integrity = integrity_report(store, sub)
        return view

    @app.get("/v1/submissions", response_model=list[SubmissionOut])
    def list_submissions(learner: Annotated[Learner, Depends(current)],
                         limit: Annotated[int, Query(ge=1, le=1000)] = 100):
        mine = None if learner.role == "instructor" else learner.id
        return [out(s) for s in store.list(mine, limit)]

    @app.get("/v1/labs")
    def labs():
        from llmlab.labs import catalogue

        return [lab.model_dump() for lab in catalogue()]

    @app.get("/v1/gradebook", response_model=list[CourseGrade])
    def gradebook(learner: Annotated[Learner, Depends(current)]):
        """Best score per lab with the course weights: your own, or everyone's for an instructor."""
        people = store.learners() if learner.role == "instructor" else [learner]
        return [course_grade(person.name, store.scores(person.id)) for person in people]

    @app.post("/v1/learners", status_code=201)
    def add_learner(body: NewLearner, _: Annotated[Learner, Depends(instructor)]):
        """Create a learner (or instructor); the token is shown once."""
        try:
            token = store.add_learner(body.name, body.role)
        except ValueError as e:
            raise HTTPException(409 if "exists" in str(e) else 422, str(e)) from None
        return {"name": normalize_name(body.name), "role": body.role, "token": token}

    @app.post("/v1/learners/{name}/tokens", status_code=201)
    def new_token(name: str, _: Annotated[Learner, Depends(instructor)], rotate: bool = False):
        """A new token for a learner; ``rotate`` revokes the others."""
        try:
            return {"name": name, "token": store.issue_token(name, revoke_others=rotate)}
        except LookupError as e:
            raise HTTPException(404, str(e)) from None

    @app.delete("/v1/learners/{name}/tokens")
    def revoke(name: str, _: Annotated[Learner, Depends(instructor)]):
        try:
            return {"name": name, "revoked": store.revoke_tokens(name)}
        except LookupError as e:
            raise HTTPException(404, str(e)) from None

    @app.post("/v1/tokens/rotate", status_code=201)
    def rotate(learner: Annotated[Learner, Depends(current)]):
        """Your own token, rotated: a new one (shown once) and every other one revoked."""
        return {"name": learner.name, "token": store.issue_token(learner.name, revoke_others=True)}

    @app.get("/v1/sources/{submission_id}.zip", include_in_schema=False)
    def source(submission_id: str, expires: int, sig: str):
        """A submission for the Ray cluster that grades it (Kubernetes mode), behind a signed, expiring link."""
        if links is None or not links.verify(submission_id, expires, sig) or store.get(submission_id) is None:
            raise HTTPException(403, "invalid or expired source link")
        return FileResponse(source_zip(store, submission_id), media_type="application/zip")

    @app.get("/health")
    def health():
        with store.engine.connect():
            pass
        return {"status": "ok", "version": __version__}

    @app.get("/metrics")
    def prometheus():
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _backend(settings: GraderSettings, links: SourceLinks | None):
    if settings.backend == "ray":
        return RayBackend(settings.ray_address, settings.grading_deadline_seconds)
    from llmlab.platform.k8s import KubeClient

    kube = KubeClient(settings.kube_server, kubeconfig=settings.kube_config, context=settings.kube_context)
    return KubernetesBackend(kube, settings.kube_namespace, links, settings.ray_cluster,
                             settings.grading_deadline_seconds)
