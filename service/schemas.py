"""Request and response models of the REST API (`/v1`): the HTTP boundary's types.

The Python client (`clients.client`) returns these same models, so a field renamed here
is renamed for every caller at once.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class JobStatus(str, Enum):
    QUEUED = "QUEUED"
    """Recorded, waiting for the scheduler (owner quota, cluster resources); not in Ray yet."""
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class JobCreate(BaseModel):
    """POST /v1/jobs: a pipeline config (the content of a `jobs/configs/*.yaml`)."""

    model_config = ConfigDict(extra="forbid")
    config: dict[str, Any] = Field(description="pipeline config; the service sets `storage_path` and `job_id` (any given are replaced)")
    name: str | None = Field(None, max_length=200, description="a label for people")
    idempotency_key: str | None = Field(None, min_length=1, max_length=200,
                                        description="the same key (per token) returns the same job; "
                                                    "the same key with another body is 409")
    priority: int = Field(0, ge=0, le=100, description="higher runs first; at most the token's max_priority")


class Progress(BaseModel):
    stage: str
    done: int
    total: int | None = None
    unit: str = "items"


class JobRecord(BaseModel):
    id: str
    name: str | None = None
    owner: str | None = None
    status: JobStatus
    stage: str | None = Field(None, description="the stage running now (or the one that failed)")
    stages_done: list[str] = Field(default_factory=list)
    progress: Progress | None = None
    metrics: dict[str, dict[str, Any]] = Field(default_factory=dict, description="latest metrics per stage")
    error: str | None = None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    ended_at: datetime | None = None
    job_dir: str
    artifacts: dict[str, str] = Field(default_factory=dict, description="name -> path under job_dir")
    submission_id: str = Field(description="the Ray job submission id")
    idempotency_key: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    priority: int = 0
    queue_reason: str | None = Field(None, description="QUEUED: why it waits")
    launched_at: datetime | None = Field(None, description="when the scheduler handed it to Ray")


class QueueEntry(BaseModel):
    position: int = Field(description="1 = admitted next (all owners' queued jobs count)")
    id: str
    owner: str | None = None
    name: str | None = None
    priority: int
    reason: str | None = Field(None, description="why it waits")
    created_at: datetime


class QueuePage(BaseModel):
    items: list[QueueEntry] = Field(description="the caller's queued jobs (an admin's: all), in admission order")
    total: int = Field(description="queued jobs of all owners")


class JobPage(BaseModel):
    items: list[JobRecord]
    total: int
    limit: int
    offset: int


class JobLogs(BaseModel):
    job_id: str
    lines: list[str]
    truncated: bool = Field(description="older lines were left out")


class JobReport(BaseModel):
    job_id: str
    report: dict[str, Any] = Field(description="report.json")
    plots: dict[str, str] = Field(default_factory=dict, description="plot name -> URL of the PNG")
    markdown_url: str | None = None


class ClassifyItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt: str
    response: str | None = Field(None, description="absent: the decision a safe model should make for the prompt")


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[ClassifyItem] = Field(min_length=1)
    model: str | None = Field(None, description="a model id from GET /v1/models; default: the service's")


class Decision(BaseModel):
    decision: str = Field(description='"refuse" or "comply"')
    p_refuse: float


class ClassifyResponse(BaseModel):
    model: str
    version: str | None = Field(None, description="the version of the model that decided: "
                                "<model id>@<first 12 hex digits of its training data's fingerprint>")
    decisions: list[Decision]


class ModelInfo(BaseModel):
    id: str
    version: str | None = Field(None, description="<id>@<first 12 hex digits of meta.json's data fingerprint> "
                                "(a folder without one: of meta.json itself); changes when the folder is retrained")
    path: str
    source: str = Field(description='"job" (trained by a job) or "registered" (settings.model_dirs, or '
                                    'POST /v1/models)')
    owner: str | None = Field(None, description="the principal whose job trained it, or who registered it")
    promoted: bool = Field(False, description="an admin made it servable to everyone (POST /v1/models/{id}/promote)")
    backbone: str | None = None
    threshold: float | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)


class ModelRegister(BaseModel):
    """POST /v1/models: record a trained classifier folder so /v1/classify can serve it."""

    model_config = ConfigDict(extra="forbid")
    path: str = Field(min_length=1, max_length=4096,
                      description="the folder (with meta.json): absolute, or relative to a paths.model_roots entry; "
                                  "it must resolve under one")
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
                             description="the model id; default: the folder's name")


class ModelList(BaseModel):
    items: list[ModelInfo]
    default: str | None = Field(None, description="the latest promoted classifier, else the settings' "
                                                  "default_classifier; never simply the newest")


class Promotion(BaseModel):
    model: str
    promoted_by: str
    promoted_at: datetime


class ServeCreate(BaseModel):
    """POST /v1/jobs/{id}/serve: which of the job's models the bare name `<job>` answers with,
    and the defaults of a chat request's `safety_gate` and `thinking` (a request may override)."""

    model_config = ConfigDict(extra="forbid")
    variant: str = Field("aligned", pattern=r"^[A-Za-z0-9][A-Za-z0-9@._-]{0,99}$",
                         description="aligned | lambda0 | base | any variant the job trained (aligned@s1, sweep_...)")
    gate: Literal["off", "classify", "enforce"] = Field("off", description="classify / enforce need the job's "
                                                         "decision classifier (or serving.chat.gate_classifier)")
    thinking: Literal["on", "off"] = "on"


class ServeStatus(str, Enum):
    DEPLOYING = "DEPLOYING"
    """Sent to Ray Serve; the engine is loading the base model and adapters."""
    READY = "READY"
    """The Serve application is RUNNING: the chat routes answer."""
    FAILED = "FAILED"
    """The deploy failed or the application went away; `error` says why (POST again to retry)."""
    DELETED = "DELETED"
    """Undeployed (the DELETE's answer; the record is gone after it)."""


class ServedRecord(BaseModel):
    job_id: str
    owner: str | None = Field(None, description="the job's owner: with admins, the only principal the chat "
                                                "routes answer")
    variant: str
    gate: str
    thinking: str
    status: ServeStatus
    url: str = Field(description="the OpenAI base URL on this service: /chat/<job_id>/v1")
    models: list[str] = Field(default_factory=list, description="model names GET <url>/models lists; the first, "
                                                                "the job id, is `variant`")
    error: str | None = None
    created_at: datetime
    updated_at: datetime


class Health(BaseModel):
    status: str
    checks: dict[str, str] = Field(default_factory=dict)


class ErrorBody(BaseModel):
    """Every error the API returns: `detail` says what was wrong and where."""

    detail: Any
