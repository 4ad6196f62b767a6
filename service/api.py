"""The REST API (`/v1`) as a FastAPI app built from plain objects: no Ray in here.

    app = create_api(settings, jobs=JobService(...), models=ModelRegistry(settings, store),
                     classify=async_fn, ready=fn, auth=Authenticator(settings), metrics=ServiceMetrics(),
                     serving=ChatServing(settings, store, jobs, RayChatDeployer()))

The Serve ingress deployment (`service.ingress`) builds it with the Ray job launcher
and a handle to the classifier deployment; tests build it with fakes or in-process
objects. Every error is JSON `{"detail": ...}`: 401/403 name the token problem, 404
the missing thing, 409 the state that blocks the request, 413 the limit, 422 the field.

Jobs and classifiers belong to the caller's principal: another principal's are 404, as
if they did not exist; an `admin` token sees and acts on all of them. /v1/jobs/{id}/serve
deploys a finished job's chat app through `serving` (service.chat_serving; 404 when absent
or disabled).
"""

from __future__ import annotations

import asyncio

import logging
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse

from jobs.errors import ConfigError, PresafeError
from service.auth import Authenticator, Principal
from service.classifiers import (
    ClassifierUnavailable,
    ModelRegistry,
    NoClassifier,
    UnknownModel,
)
from service.chat_serving import ChatServing, ServingDisabled
from service.job_service import JobConflict, JobService, LaunchError
from service.metrics import ServiceMetrics
from service.schemas import (
    ClassifyRequest,
    ClassifyResponse,
    Decision,
    ErrorBody,
    Health,
    JobCreate,
    JobLogs,
    JobPage,
    JobRecord,
    JobReport,
    JobStatus,
    ModelInfo,
    ModelList,
    ModelRegister,
    Promotion,
    QueuePage,
    ServeCreate,
    ServedRecord,
)
from service.settings import ServiceSettings
from service.store import JobNotFound, ModelTaken

log = logging.getLogger("presafe.service")

ClassifyFn = Callable[[str, list[str], list[str | None]], Awaitable[list[Decision]]]
ReadyFn = Callable[[], Awaitable[dict[str, str]]]
PLOTS = ("metrics.png", "probes.png", "sweep.png", "temperature.png")
_STATUS = {JobNotFound: 404, UnknownModel: 404, ServingDisabled: 404, JobConflict: 409, NoClassifier: 409, ModelTaken: 409, LaunchError: 503,
           ClassifierUnavailable: 503}
_ERRORS = {code: {"model": ErrorBody} for code in (401, 403, 404, 409, 413, 422, 503)}


def create_api(settings: ServiceSettings, jobs: JobService, models: ModelRegistry, classify: ClassifyFn,
               ready: ReadyFn, auth: Authenticator | None = None, metrics: ServiceMetrics | None = None,
               serving: ChatServing | None = None) -> FastAPI:
    app = FastAPI(title="presafe", version="0.1.0", responses=_ERRORS,
                  description="Safety decisions before chain-of-thought: alignment jobs and the decision classifier.")
    auth = auth or Authenticator(settings)
    limits = settings.limits
    read, write, clf, admin = (auth.dependency(s) for s in ("jobs:read", "jobs:write", "classify", "admin"))
    models_write = auth.dependency("models:write")
    app.add_middleware(BodyLimit, max_bytes=limits.request_max_bytes)

    @app.exception_handler(PresafeError)
    async def presafe_error(request: Request, exc: PresafeError):
        if isinstance(exc, ConfigError):
            loc = ["body", "config", *_key_path(exc.key)] if exc.key else ["body", "config"]
            return JSONResponse({"detail": [{"loc": loc, "msg": str(exc), "type": "config_error"}]}, status_code=422)
        status = _STATUS.get(type(exc), 400)
        headers = {"Retry-After": "5"} if status == 503 else None
        return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": f"internal error ({type(exc).__name__}); see the service log"},
                            status_code=500)

    # -- jobs -------------------------------------------------------------------------------
    @app.post("/v1/jobs", response_model=JobRecord, status_code=201, tags=["jobs"],
              responses={200: {"model": JobRecord, "description": "the job of an idempotency key used before"}})
    def submit_job(body: JobCreate, caller: Principal = Depends(write)):
        record, created = jobs.submit(body, caller)
        if created:
            return record
        return JSONResponse(record.model_dump(mode="json"), status_code=200)

    @app.get("/v1/jobs", response_model=JobPage, tags=["jobs"])
    def list_jobs(status: JobStatus | None = None, limit: int = Query(50, ge=1, le=2**31),
                  offset: int = Query(0, ge=0, le=2**62), caller: Principal = Depends(read)):
        for name, value, most in (("limit", limit, limits.page_max), ("offset", offset, limits.offset_max)):
            if value > most:
                raise RequestValidationError([{"loc": ("query", name), "type": "less_than_equal",
                                               "msg": f"{name} must be <= {most}", "input": value}])
        return jobs.list(status, limit, offset, caller)

    @app.get("/v1/queue", response_model=QueuePage, tags=["jobs"],
             summary="Queued jobs in admission order, with their position and why each waits")
    def job_queue(caller: Principal = Depends(read)):
        return jobs.queue(caller)

    @app.get("/v1/jobs/{job_id}", response_model=JobRecord, tags=["jobs"])
    def get_job(job_id: str, caller: Principal = Depends(read)):
        return jobs.get(job_id, caller)

    @app.get("/v1/jobs/{job_id}/logs", response_model=JobLogs, tags=["jobs"])
    def job_logs(job_id: str, tail: int = Query(200, ge=1, le=2**31), caller: Principal = Depends(read)):
        return jobs.logs(job_id, min(tail, limits.logs_max_lines), caller)

    @app.get("/v1/jobs/{job_id}/report", response_model=JobReport, tags=["jobs"])
    def job_report(job_id: str, request: Request, caller: Principal = Depends(read)):
        import json

        folder = jobs.report_dir(job_id, caller)
        base = f"/v1/jobs/{job_id}/report"
        plots = {Path(p).stem: f"{base}/plots/{p}" for p in PLOTS if (folder / p).is_file()}
        return JobReport(job_id=job_id, report=json.loads((folder / "report.json").read_text()), plots=plots,
                         markdown_url=f"{base}.md" if (folder / "report.md").is_file() else None)

    @app.get("/v1/jobs/{job_id}/report.md", response_class=PlainTextResponse, tags=["jobs"])
    def job_report_markdown(job_id: str, caller: Principal = Depends(read)):
        return PlainTextResponse((jobs.report_dir(job_id, caller) / "report.md").read_text(), media_type="text/markdown")

    @app.get("/v1/jobs/{job_id}/report/plots/{name}", response_class=FileResponse, tags=["jobs"])
    def job_plot(job_id: str, name: str, caller: Principal = Depends(read)):
        if name not in PLOTS:
            raise JobNotFound(f"no plot {name!r}; plots: {', '.join(PLOTS)}")
        path = jobs.report_dir(job_id, caller) / name
        if not path.is_file():
            raise JobNotFound(f"job {job_id} has no {name}")
        return FileResponse(path, media_type="image/png")

    @app.post("/v1/jobs/{job_id}/resume", response_model=JobRecord, tags=["jobs"],
              summary="Start a FAILED or CANCELLED job again; stages it completed are not redone")
    def resume_job(job_id: str, caller: Principal = Depends(write)):
        return jobs.resume(job_id, caller)

    @app.delete("/v1/jobs/{job_id}", response_model=JobRecord, tags=["jobs"],
                summary="Cancel a job: a queued one leaves the queue, a launched one is stopped in Ray")
    def cancel_job(job_id: str, caller: Principal = Depends(write)):
        return jobs.cancel(job_id, caller)

    # -- serving a job's models -------------------------------------------------------------
    def served() -> ChatServing:
        if serving is None:
            raise ServingDisabled("this service does not serve models (no deployer)")
        return serving

    @app.post("/v1/jobs/{job_id}/serve", response_model=ServedRecord, status_code=202, tags=["serving"],
              summary="Deploy a SUCCEEDED job's models as an OpenAI-compatible chat app at /chat/{job_id}/v1 "
                      "(its owner and admins only; serving.enabled, within serving.max_models*)")
    def serve_job(job_id: str, body: ServeCreate, caller: Principal = Depends(write)):
        return served().deploy(job_id, body, caller)

    @app.get("/v1/jobs/{job_id}/serve", response_model=ServedRecord, tags=["serving"],
             summary="The job's chat app: DEPLOYING, READY (its Serve app is RUNNING) or FAILED")
    def serve_status(job_id: str, caller: Principal = Depends(read)):
        return served().get(job_id, caller)

    @app.delete("/v1/jobs/{job_id}/serve", response_model=ServedRecord, tags=["serving"],
                summary="Undeploy the job's chat app (the record comes back DELETED)")
    def unserve_job(job_id: str, caller: Principal = Depends(write)):
        return served().undeploy(job_id, caller)

    # -- classifier -------------------------------------------------------------------------
    @app.get("/v1/models", response_model=ModelList, tags=["classifier"])
    def list_models(caller: Principal = Depends(clf)):
        return models.models(caller)

    @app.post("/v1/models", response_model=ModelInfo, status_code=201, tags=["classifier"],
              summary="Register a trained classifier folder under paths.model_roots: servable at once, owned by "
                      "the caller (scope models:write; admin implies it)")
    def register_model(body: ModelRegister, caller: Principal = Depends(models_write)):
        try:
            info = models.register(body.path, body.name, caller)
        except ConfigError as e:  # a body field, not a job config key
            raise RequestValidationError([{"loc": ("body", e.key or "path"), "type": "value_error",
                                           "msg": str(e), "input": None}]) from None
        log.info("presafe: %s registered classifier %s (%s) from %s", caller.name, info.id, info.version, info.path)
        return info

    @app.post("/v1/models/{model_id}/promote", response_model=Promotion, tags=["classifier"],
              summary="Make a classifier the default of /v1/classify and servable to every caller (admin)")
    def promote_model(model_id: str, caller: Principal = Depends(admin)):
        promotion = models.promote(model_id, caller.name)
        log.info("presafe: %s promoted classifier %s", caller.name, model_id)
        return promotion

    @app.post("/v1/classify", response_model=ClassifyResponse, tags=["classifier"],
              responses={413: {"model": ErrorBody}})
    async def classify_items(body: ClassifyRequest, caller: Principal = Depends(clf)):
        if len(body.items) > limits.classify_max_items:
            return JSONResponse({"detail": f"{len(body.items)} items: at most {limits.classify_max_items} "
                                           "per request (limits.classify_max_items)"}, status_code=413)
        errors = [{"loc": ("body", "items", i, field), "type": "string_too_long", "input": None,
                   "msg": f"{len(text)} characters; at most {limits.classify_max_chars} (limits.classify_max_chars)"}
                  for i, item in enumerate(body.items)
                  for field, text in (("prompt", item.prompt), ("response", item.response or ""))
                  if len(text) > limits.classify_max_chars]
        if errors:
            raise RequestValidationError(errors)
        info = await asyncio.to_thread(models.resolve_info, body.model, caller)  # reads the disk now and then
        decisions = await classify(info.path, [i.prompt for i in body.items], [i.response for i in body.items])
        if metrics is not None:
            metrics.classified(info.id, decisions)
        return ClassifyResponse(model=info.id, version=info.version, decisions=decisions)

    # -- health -----------------------------------------------------------------------------
    @app.get("/v1/healthz", response_model=Health, tags=["health"])
    def healthz():
        return Health(status="ok")

    @app.get("/v1/readyz", response_model=Health, tags=["health"], responses={503: {"model": Health}})
    async def readyz():
        # unauthenticated: "ok" or "error" per check; the cause goes to the service log only
        checks = {name: "ok" if v == "ok" else "error" for name, v in (await ready()).items()}
        ok = all(v == "ok" for v in checks.values())
        health = Health(status="ready" if ok else "not ready", checks=checks)
        return health if ok else JSONResponse(health.model_dump(), status_code=503)

    return app


class BodyLimit:
    """Refuses a request body over `max_bytes` with 413, counting the bytes actually read,
    so a chunked body (no Content-Length) or a lying Content-Length cannot get past it. The
    body is read here (at most max_bytes are held) and replayed to the app."""

    def __init__(self, app, max_bytes: int, key: str = "limits.request_max_bytes"):
        self.app, self.max_bytes, self.key = app, max_bytes, key

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            return await self._refuse(scope, send, f"request body of {int(declared)} bytes")
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                return await self._refuse(scope, send, "request body")
            chunks.append(body)
            more = message.get("more_body", False)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    async def _refuse(self, scope, send, what: str) -> None:
        await JSONResponse({"detail": f"{what} is over the limit of {self.max_bytes} bytes ({self.key})"},
                           status_code=413, headers={"Connection": "close"})(scope, None, send)


def _key_path(key: str) -> list[str | int]:
    """`prompts.harmful[0].path` -> ["prompts", "harmful", 0, "path"] (FastAPI's `loc` style)."""
    return [int(part) if part.isdigit() else part for part in re.findall(r"[^.\[\]]+", key)]
