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
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

Scope = Literal["jobs:read", "jobs:write", "classify"]
ALL_SCOPES: tuple[Scope, ...] = ("jobs:read", "jobs:write", "classify")


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


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid")
    classify_max_items: int = Field(64, ge=1, description="items per POST /classify (over it: 413)")
    classify_max_chars: int = Field(8000, ge=1, description="characters per prompt or response (over it: 422)")
    request_max_bytes: int = Field(1_000_000, ge=1024, description="request body size (over it: 413)")
    logs_max_lines: int = Field(1000, ge=1, description="most lines GET /jobs/{id}/logs returns")
    page_max: int = Field(200, ge=1, description="most jobs per GET /jobs page")


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
    tokens_file: str | None = Field(None, description="YAML list of TokenSpec, read at start-up")
    classify_open: bool = Field(False, description="POST /classify and GET /models without a token")
    auth_disabled: bool = Field(False, description="no token checks at all (local experiments only)")
    limits: Limits = Field(default_factory=Limits)
    default_classifier: str | None = Field(None, description="model id or folder /classify uses when none is given")
    model_dirs: dict[str, str] = Field(default_factory=dict, description="extra classifiers: id -> folder")
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
