"""The REST API (`/v1`) as a FastAPI app built from plain objects: no Ray in here.

    app = create_api(settings, jobs=JobService(...), models=ModelRegistry(settings),
                     classify=async_fn, ready=fn)

The Serve ingress deployment (`service.ingress`) builds it with the Ray job launcher
and a handle to the classifier deployment; tests build it with fakes or in-process
objects. Every error is JSON `{"detail": ...}`: 401/403 name the token problem, 404
the missing thing, 409 the state that blocks the request, 413 the limit, 422 the field.
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
from service.auth import Authenticator
from service.classifiers import (
    ClassifierUnavailable,
    ModelRegistry,
    NoClassifier,
    UnknownModel,
)
from service.job_service import JobConflict, JobService, LaunchError
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
    ModelList,
)
from service.settings import ServiceSettings
from service.store import JobNotFound

log = logging.getLogger("presafe.service")

ClassifyFn = Callable[[str, list[str], list[str | None]], Awaitable[list[Decision]]]
ReadyFn = Callable[[], Awaitable[dict[str, str]]]
PLOTS = ("metrics.png", "probes.png", "sweep.png", "temperature.png")
_STATUS = {JobNotFound: 404, UnknownModel: 404, JobConflict: 409, NoClassifier: 409, LaunchError: 503,
           ClassifierUnavailable: 503}
_ERRORS = {code: {"model": ErrorBody} for code in (401, 403, 404, 409, 413, 422, 503)}


def create_api(settings: ServiceSettings, jobs: JobService, models: ModelRegistry, classify: ClassifyFn,
               ready: ReadyFn) -> FastAPI:
    app = FastAPI(title="presafe", version="0.1.0", responses=_ERRORS,
                  description="Safety decisions before chain-of-thought: alignment jobs and the decision classifier.")
    auth = Authenticator(settings)
    limits = settings.limits
    read, write, clf = (auth.dependency(s) for s in ("jobs:read", "jobs:write", "classify"))

    @app.middleware("http")
    async def body_limit(request: Request, call_next):
        size = request.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > limits.request_max_bytes:
            return JSONResponse({"detail": f"request body of {size} bytes is over the limit of "
                                           f"{limits.request_max_bytes} bytes"}, status_code=413)
        return await call_next(request)

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
    def submit_job(body: JobCreate, owner: str = Depends(write)):
        record, created = jobs.submit(body, owner)
        if created:
            return record
        return JSONResponse(record.model_dump(mode="json"), status_code=200)

    @app.get("/v1/jobs", response_model=JobPage, tags=["jobs"])
    def list_jobs(status: JobStatus | None = None, limit: int = Query(50, ge=1), offset: int = Query(0, ge=0),
                  _: str = Depends(read)):
        if limit > limits.page_max:
            raise RequestValidationError([{"loc": ("query", "limit"), "type": "less_than_equal",
                                           "msg": f"limit must be <= {limits.page_max}", "input": limit}])
        return jobs.list(status, limit, offset)

    @app.get("/v1/jobs/{job_id}", response_model=JobRecord, tags=["jobs"])
    def get_job(job_id: str, _: str = Depends(read)):
        return jobs.get(job_id)

    @app.get("/v1/jobs/{job_id}/logs", response_model=JobLogs, tags=["jobs"])
    def job_logs(job_id: str, tail: int = Query(200, ge=1), _: str = Depends(read)):
        return jobs.logs(job_id, min(tail, limits.logs_max_lines))

    @app.get("/v1/jobs/{job_id}/report", response_model=JobReport, tags=["jobs"])
    def job_report(job_id: str, request: Request, _: str = Depends(read)):
        import json

        folder = jobs.report_dir(job_id)
        base = f"/v1/jobs/{job_id}/report"
        plots = {Path(p).stem: f"{base}/plots/{p}" for p in PLOTS if (folder / p).is_file()}
        return JobReport(job_id=job_id, report=json.loads((folder / "report.json").read_text()), plots=plots,
                         markdown_url=f"{base}.md" if (folder / "report.md").is_file() else None)

    @app.get("/v1/jobs/{job_id}/report.md", response_class=PlainTextResponse, tags=["jobs"])
    def job_report_markdown(job_id: str, _: str = Depends(read)):
        return PlainTextResponse((jobs.report_dir(job_id) / "report.md").read_text(), media_type="text/markdown")

    @app.get("/v1/jobs/{job_id}/report/plots/{name}", response_class=FileResponse, tags=["jobs"])
    def job_plot(job_id: str, name: str, _: str = Depends(read)):
        if name not in PLOTS:
            raise JobNotFound(f"no plot {name!r}; plots: {', '.join(PLOTS)}")
        path = jobs.report_dir(job_id) / name
        if not path.is_file():
            raise JobNotFound(f"job {job_id} has no {name}")
        return FileResponse(path, media_type="image/png")

    @app.post("/v1/jobs/{job_id}/resume", response_model=JobRecord, tags=["jobs"],
              summary="Start a FAILED or CANCELLED job again; stages it completed are not redone")
    def resume_job(job_id: str, _: str = Depends(write)):
        return jobs.resume(job_id)

    @app.delete("/v1/jobs/{job_id}", response_model=JobRecord, tags=["jobs"])
    def cancel_job(job_id: str, _: str = Depends(write)):
        return jobs.cancel(job_id)

    # -- classifier -------------------------------------------------------------------------
    @app.get("/v1/models", response_model=ModelList, tags=["classifier"])
    def list_models(_: str = Depends(clf)):
        return models.models()

    @app.post("/v1/classify", response_model=ClassifyResponse, tags=["classifier"],
              responses={413: {"model": ErrorBody}})
    async def classify_items(body: ClassifyRequest, _: str = Depends(clf)):
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
        model_id, path = await asyncio.to_thread(models.resolve, body.model)  # reads the disk now and then
        decisions = await classify(path, [i.prompt for i in body.items], [i.response for i in body.items])
        return ClassifyResponse(model=model_id, decisions=decisions)

    # -- health -----------------------------------------------------------------------------
    @app.get("/v1/healthz", response_model=Health, tags=["health"])
    def healthz():
        return Health(status="ok")

    @app.get("/v1/readyz", response_model=Health, tags=["health"], responses={503: {"model": Health}})
    async def readyz():
        checks = await ready()
        ok = all(v == "ok" for v in checks.values())
        health = Health(status="ready" if ok else "not ready", checks=checks)
        return health if ok else JSONResponse(health.model_dump(), status_code=503)

    return app


def _key_path(key: str) -> list[str | int]:
    """`prompts.harmful[0].path` -> ["prompts", "harmful", 0, "path"] (FastAPI's `loc` style)."""
    return [int(part) if part.isdigit() else part for part in re.findall(r"[^.\[\]]+", key)]
