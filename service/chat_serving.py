"""Serving a finished job's models from the job service (POST / GET / DELETE /v1/jobs/{id}/serve),
as plain objects; Ray Serve is behind the `ChatDeployer` protocol.

    serving = ChatServing(settings, store, jobs, RayChatDeployer(), metrics)
    serving.deploy("j1", ServeCreate(variant="aligned"), Principal("alice"))   # DEPLOYING
    serving.get("j1", Principal("alice")).status                              # READY once Serve says RUNNING
    serving.undeploy("j1", Principal("alice"))

Each served job is its own Ray Serve application on the service's cluster, `presafe-chat-<job>`
at route `/chat/<job>`: `presafe serve-model`'s app (service.chat_deployment: Ray Serve LLM's
vLLM engine behind the presafe chat ingress), so its OpenAI base URL is `<service>/chat/<job>/v1`.
The app checks the service's own tokens (inline and the tokens file, re-read when it changes)
and answers only the job's owner and admins. The records live in the store (`served_models`),
so every ingress replica and a restarted service see the same ones, and the limits count
them: `serving.max_models` on the service and `serving.max_models_per_owner` per principal
(over either: 409 naming the setting). Serving is off unless `serving.enabled`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
from collections import Counter
from pathlib import Path
from typing import Protocol

from jobs.errors import ConfigError, PresafeError
from service.auth import ANONYMOUS, Principal
from service.job_service import JobConflict, JobService, LaunchError
from service.metrics import ServiceMetrics
from service.schemas import JobRecord, JobStatus, ServeCreate, ServedRecord, ServeStatus
from service.settings import ServiceSettings
from service.store import JobNotFound, JobStore, ServedRow

log = logging.getLogger("presafe.service")
DEPLOY_GRACE_S = 120.0
"""How long a DEPLOYING record whose Serve application Ray does not list yet stays DEPLOYING
(the replica that took the request is still building it) before it reads FAILED."""


class ServingDisabled(PresafeError):
    """The operator has not enabled serving (404: the routes are as good as absent)."""


class ChatDeployer(Protocol):
    def deploy(self, name: str, route_prefix: str, args: dict) -> None:
        """Start deploying service.chat_deployment's app as application `name` at `route_prefix`
        (returns at once; the same name again updates the app in place)."""
        ...

    def status(self, name: str) -> tuple[str | None, str]:
        """Ray Serve's status of the application (RUNNING, DEPLOYING, DEPLOY_FAILED, UNHEALTHY,
        ...) and its message; None when the cluster has no such application."""
        ...

    def undeploy(self, name: str) -> None:
        ...


def app_name(job_id: str) -> str:
    return f"presafe-chat-{job_id}"


def route_prefix(job_id: str) -> str:
    return f"/chat/{job_id}"


class ChatServing:
    def __init__(self, settings: ServiceSettings, store: JobStore, jobs: JobService, deployer: ChatDeployer,
                 metrics: ServiceMetrics | None = None):
        self.settings, self.store, self.jobs, self.deployer, self.metrics = settings, store, jobs, deployer, metrics

    # -- deploy ---------------------------------------------------------------------------------
    def deploy(self, job_id: str, req: ServeCreate, caller: Principal) -> ServedRecord:
        """Record the job's app DEPLOYING (within the limits) and hand it to the deployer; a job
        served already is redeployed in place with the new variant, gate and thinking."""
        if not self.settings.serving.enabled:
            raise ServingDisabled(_DISABLED)
        job = self.jobs.get(job_id, caller)  # another principal's job: 404
        if job.status != JobStatus.SUCCEEDED:
            raise JobConflict(f"job {job_id} is {job.status.value}: only a SUCCEEDED job can be served")
        models = self._check(job, req)
        fields = dict(variant=req.variant, gate=req.gate, thinking=req.thinking, status=ServeStatus.DEPLOYING.value,
                      models=models, error=None)
        row = self.store.update_served(job_id, **fields) if self.store.served(job_id) else None
        if row is None:
            row = self._claim(ServedRow(job_id=job_id, owner=job.owner, **fields))
        try:
            self.deployer.deploy(app_name(job_id), route_prefix(job_id), self.app_args(job, req))
        except Exception as e:  # noqa: BLE001 - recorded on the served model, like a job's failed launch
            why = f"Ray Serve did not accept the app: {type(e).__name__}: {e}"
            log.error("presafe: serving job %s: %s", job_id, why)
            row = self.store.update_served(job_id, status=ServeStatus.FAILED.value, error=why) or row
        log.info("presafe: %s deploys job %s (%s, gate %s)", caller.name, job_id, req.variant, req.gate)
        self._gauge()
        return self.to_record(row)

    def _check(self, job: JobRecord, req: ServeCreate) -> list[str]:
        """The model names the app will serve; 422 naming `variant` or `gate` when the job
        trained no such adapter or no classifier for the gate."""
        from service.chat import ServedJob, field_error  # imports torch: only when a job is served

        try:
            served = ServedJob.load(job.job_dir, req.variant, resolve=False)
        except ConfigError as e:
            raise field_error(("variant",), str(e), value=req.variant) from None
        except (PresafeError, OSError, ValueError) as e:  # a SUCCEEDED job's folder has its config: changed since
            raise JobConflict(f"job {job.id}: its folder cannot be served: {type(e).__name__}: {e}") from None
        if req.gate != "off":
            classifier = Path(self.settings.serving.chat.get("gate_classifier") or Path(job.job_dir) / "classifier")
            if not (classifier / "meta.json").is_file():
                raise field_error(("gate",), f"{req.gate} needs a decision classifier, and job {job.id} has none "
                                             f"({classifier} holds no meta.json); use gate off", value=req.gate)
        return served.names()

    def _claim(self, row: ServedRow) -> ServedRow:
        """Insert the record, then count: two deploys racing for the last place cannot both
        get it (at worst both are refused, and a retry gets it)."""
        limits = self.settings.serving
        claimed = self.store.add_served(row)
        if claimed is None:
            raise JobConflict(f"job {row.job_id} is being deployed by another request; retry")
        others = [r for r in self.store.served() if r.job_id != row.job_id]
        mine = [r.job_id for r in others if r.owner == row.owner]
        why = None
        if len(others) >= limits.max_models:
            why = (f"the service serves its maximum of {limits.max_models} model(s) at once (serving.max_models); "
                   "undeploy one first (DELETE /v1/jobs/{id}/serve)")
        elif len(mine) >= limits.max_models_per_owner:
            why = (f"{row.owner or 'this principal'} serves {len(mine)} job(s) already ({', '.join(mine)}); the limit "
                   f"per principal is {limits.max_models_per_owner} (serving.max_models_per_owner): undeploy one "
                   "first (presafe jobs unserve JOB)")
        if why:
            self.store.remove_served(row.job_id)
            raise JobConflict(why)
        return claimed

    def app_args(self, job: JobRecord, req: ServeCreate) -> dict:
        """service.chat_deployment.ChatAppArgs of the job's app: the operator's serving.chat,
        the request, the job's owner as the app's only non-admin user (admins only for a job
        without an owner), the service's tokens."""
        s = self.settings
        # A job submitted while auth was disabled belongs to "anonymous", which is also who an
        # unauthenticated caller is where classify is open: such a job's app is for admins only.
        nobodys = job.owner in (None, "", ANONYMOUS)
        config = {**s.serving.chat, "job": job.job_dir, "variant": req.variant, "gate": req.gate,
                  "thinking": req.thinking, "owner": "" if nobodys else job.owner, "admins_only": nobodys,
                  "tokens_file": s.tokens_file or "",
                  "auth_disabled": s.auth_disabled}
        return {"config": config, "tokens": [t.model_dump(mode="json") for t in s.tokens]}

    # -- read, undeploy ---------------------------------------------------------------------------
    def get(self, job_id: str, caller: Principal) -> ServedRecord:
        return self.to_record(self.refresh(self._row(job_id, caller)))

    def undeploy(self, job_id: str, caller: Principal) -> ServedRecord:
        row = self._row(job_id, caller)
        try:
            self.deployer.undeploy(app_name(job_id))
        except Exception as e:
            raise LaunchError(f"Ray Serve did not delete {app_name(job_id)}: {type(e).__name__}: {e}") from e
        self.store.remove_served(job_id)
        log.info("presafe: %s undeployed job %s", caller.name, job_id)
        self._gauge()
        return self.to_record(dataclasses.replace(row, status=ServeStatus.DELETED.value))

    def _row(self, job_id: str, caller: Principal) -> ServedRow:
        self.jobs.row(job_id, caller)  # another principal's job: 404
        rows = self.store.served(job_id)
        if not rows:  # records made before serving was turned off stay readable and undeployable
            raise (JobNotFound(f"job {job_id} is not served (POST /v1/jobs/{job_id}/serve deploys it)")
                   if self.settings.serving.enabled else ServingDisabled(_DISABLED))
        return rows[0]

    def refresh(self, row: ServedRow) -> ServedRow:
        """Fold Ray Serve's status of the app into the record (stored when it changed)."""
        try:
            state, message = self.deployer.status(app_name(row.job_id))
        except Exception as e:  # noqa: BLE001 - Ray unreachable: the record as it was, retried on the next read
            log.warning("presafe: status of %s: %s", app_name(row.job_id), e)
            return row
        status, error = _serve_status(row, state, message)
        if (status, error) != (row.status, row.error):
            row = self.store.update_served(row.job_id, status=status, error=error) or row
        return row

    def to_record(self, row: ServedRow) -> ServedRecord:
        return ServedRecord(job_id=row.job_id, owner=row.owner, variant=row.variant, gate=row.gate,
                            thinking=row.thinking, status=ServeStatus(row.status),
                            url=f"{route_prefix(row.job_id)}/v1", models=row.models, error=row.error,
                            created_at=row.created_at, updated_at=row.updated_at)

    def _gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.served_counts(Counter(r.status for r in self.store.served()))


_DISABLED = ("this service does not serve models (serving.enabled is false in its settings): serving needs "
             "vLLM and resources on the cluster; ask its operator, or run `presafe serve-model JOB_DIR`")


def _serve_status(row: ServedRow, state: str | None, message: str) -> tuple[str, str | None]:
    """(record status, error) from Ray Serve's application status."""
    if state == "RUNNING":
        return ServeStatus.READY.value, None
    if state in ("DEPLOY_FAILED", "UNHEALTHY"):
        return ServeStatus.FAILED.value, f"Ray Serve: {state}: {message or 'no message'}"
    if state is not None:  # NOT_STARTED, DEPLOYING, DELETING (a redeploy right after a delete)
        return ServeStatus.DEPLOYING.value, None
    if row.status == ServeStatus.FAILED.value:
        return row.status, row.error
    age = (dt.datetime.now(dt.UTC) - row.updated_at).total_seconds() if row.updated_at else DEPLOY_GRACE_S
    if row.status == ServeStatus.DEPLOYING.value and age < DEPLOY_GRACE_S:
        return row.status, None
    return ServeStatus.FAILED.value, (f"Ray Serve has no application {app_name(row.job_id)} (its deploy failed on "
                                      "another replica, or the cluster restarted): POST .../serve again")


class RayChatDeployer:
    """ChatDeployer on the Ray cluster this process belongs to (the ingress replica's).
    `serve.run` returns once the app is RUNNING, a minute or more while vLLM loads the model,
    so it runs on a thread; a failure before Ray Serve lists the app (a folder that does not
    load, no vLLM on the node) is kept for status()."""

    def __init__(self):
        self._threads: dict[str, threading.Thread] = {}
        self._errors: dict[str, str] = {}

    def deploy(self, name: str, route_prefix: str, args: dict) -> None:
        self._errors.pop(name, None)
        thread = threading.Thread(target=self._run, args=(name, route_prefix, args), name=f"deploy-{name}",
                                  daemon=True)
        self._threads[name] = thread
        thread.start()

    def _run(self, name: str, route_prefix: str, args: dict) -> None:
        from ray import serve

        from service.chat_deployment import build_chat_app

        try:
            serve.run(build_chat_app(args), name=name, route_prefix=route_prefix)
        except Exception as e:  # noqa: BLE001 - the thread's only way to report: status()
            log.error("presafe: deploying %s failed: %s: %s", name, type(e).__name__, e)
            self._errors[name] = f"{type(e).__name__}: {e}"

    def status(self, name: str) -> tuple[str | None, str]:
        if name in self._errors:
            return "DEPLOY_FAILED", self._errors[name]
        from ray import serve

        app = serve.status().applications.get(name)
        if app is None:
            thread = self._threads.get(name)
            return ("DEPLOYING", "building the application") if thread and thread.is_alive() else (None, "")
        return str(getattr(app.status, "value", app.status)), app.message or ""

    def undeploy(self, name: str) -> None:
        from ray import serve

        self._errors.pop(name, None)
        serve.delete(name, _blocking=False)
