"""The job API's logic as a plain object: validate, record, launch, watch, cancel.

    jobs = JobService(settings, JobStore(settings.db_url), RayJobLauncher(...))
    record, created = jobs.submit(JobCreate(config={...}), owner="alice")
    jobs.get(record.id).progress

A job's status comes from Ray (is the driver alive, did it exit 0) and its stage,
progress, metrics and artifacts from the `events.jsonl` the driver appends; both are
folded into the store's record whenever a job is read, and for every unfinished job on
start-up (`resync`), so records survive a service restart and catch up with drivers
that kept running or died while no service was watching.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import tempfile
from pathlib import Path

import yaml

from jobs.config import from_dict, to_dict
from jobs.errors import ConfigError, PresafeError
from jobs.events import emit as emit_event
from jobs.events import read_events
from jobs.pipeline_config import PipelineConfig
from service.data_policy import confine_data_paths
from service.launcher import DriverState, RayJobLauncher, attempt_of, submission_id_for
from service.schemas import JobCreate, JobLogs, JobPage, JobRecord, JobStatus, Progress
from service.settings import ServiceSettings
from service.store import JobNotFound, JobRow, JobStore

REQUEST_CONFIG = "request.yaml"
"""The config as the service validated it (storage_path and job_id set), in the job folder."""


class JobConflict(PresafeError):
    """The request cannot be served in the job's current state (e.g. no report yet)."""


class LaunchError(PresafeError):
    """Ray did not accept the job (the record says FAILED with this reason)."""


def new_job_id(now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now(dt.UTC)
    return f"j{now:%Y%m%d}-{secrets.token_hex(4)}"


def summarize_events(events: list[dict]) -> dict:
    """What a record shows from a job's event log: the stage now, finished stages, the
    latest progress and metrics per stage, artifacts, and how the driver ended."""
    out: dict = {"stage": None, "stages_done": [], "progress": None, "metrics": {}, "artifacts": {}, "end": None}
    for e in events:
        kind, stage = e.get("event"), e.get("stage")
        if kind in ("job_start", "attempt"):  # a resumed run starts over in the same log
            out.update(stage=None, progress=None, end=None, stages_done=[])
        elif kind == "stage_start":
            out["stage"], out["progress"] = stage, None
        elif kind in ("stage_end", "stage_skip"):
            out["stages_done"].append(stage)
            if e.get("artifact"):
                out["artifacts"][stage] = e["artifact"]
        elif kind == "progress":  # the running stage's latest count, labelled by its loop ("evaluate aligned cot_on/greedy")
            out["progress"] = {k: e.get(k) for k in ("stage", "done", "total", "unit")}
        elif kind == "metrics" and stage:
            out["metrics"][stage] = e.get("metrics", {})
        elif kind == "stage_failed":
            out["stage"] = stage
        elif kind == "job_end":
            out["end"] = {k: e.get(k) for k in ("status", "error", "report", "stage")}
            if e.get("report"):
                out["artifacts"]["report"] = e["report"]
    return out


class JobService:
    def __init__(self, settings: ServiceSettings, store: JobStore, launcher: RayJobLauncher):
        self.settings, self.store, self.launcher = settings, store, launcher

    # -- submit -----------------------------------------------------------------------------
    def validate(self, config: dict, job_id: str) -> PipelineConfig:
        """The driver's own config checks plus the data-root policy; ConfigError names
        the key path. `storage_path` and `job_id` belong to the service: a config file's
        own values (every shipped YAML has them) are replaced, not refused."""
        cfg = from_dict(PipelineConfig, {**config, "storage_path": self.settings.storage_path, "job_id": job_id},
                        source="config")
        confine_data_paths(cfg, self.settings.data_roots)
        return cfg

    def submit(self, req: JobCreate, owner: str | None) -> tuple[JobRecord, bool]:
        job_id = new_job_id()
        cfg = self.validate(req.config, job_id)
        row = JobRow(id=job_id, owner=owner, name=req.name, idempotency_key=req.idempotency_key,
                     status=JobStatus.PENDING.value, config=to_dict(cfg), submission_id=submission_id_for(job_id),
                     job_dir=cfg.job_dir)
        row, created = self.store.create(row)
        if not created:  # the same idempotency key (per owner) was used before: that job
            return self.refresh(row), False
        config_path = Path(cfg.job_dir) / REQUEST_CONFIG
        _write_yaml(config_path, to_dict(cfg))
        try:
            self.launcher.submit(row.submission_id, str(config_path), {"PRESAFE_JOB_ID": job_id})
        except Exception as e:  # any failure to launch is recorded, then reported
            why = f"Ray did not accept the job: {type(e).__name__}: {e}"
            self.store.update(job_id, status=JobStatus.FAILED.value, error=why, ended_at=_now())
            raise LaunchError(why) from e
        return self.to_record(row), True

    # -- read -------------------------------------------------------------------------------
    def row(self, job_id: str) -> JobRow:
        row = self.store.get(job_id)
        if row is None:
            raise JobNotFound(f"no job {job_id!r}")
        return row

    def get(self, job_id: str) -> JobRecord:
        return self.refresh(self.row(job_id))

    def list(self, status: JobStatus | None, limit: int, offset: int) -> JobPage:
        rows, total = self.store.list(status.value if status else None, limit, offset)
        return JobPage(items=[self.refresh(r) for r in rows], total=total, limit=limit, offset=offset)

    def refresh(self, row: JobRow) -> JobRecord:
        """Fold Ray's view and the event log into the record (stored when it changed)."""
        if JobStatus(row.status).finished:
            return self.to_record(row)
        summary = summarize_events(read_events(Path(row.job_dir) / "events.jsonl"))
        try:
            driver = self.launcher.state(row.submission_id)
        except Exception as e:  # noqa: BLE001 - Ray unreachable: show what the log says, retry on next read
            driver = DriverState(JobStatus(row.status), f"Ray unreachable: {e}")
        changes = _changes(row, summary, driver)
        if changes:
            row = self.store.update(row.id, **changes)
        return self.to_record(row)

    def resync(self) -> int:
        """Refresh every unfinished job (service start-up); returns how many."""
        rows = self.store.unfinished()
        for r in rows:
            self.refresh(r)
        return len(rows)

    def to_record(self, row: JobRow) -> JobRecord:
        s = row.summary or {}
        return JobRecord(id=row.id, name=row.name, owner=row.owner, status=JobStatus(row.status), stage=row.stage,
                         stages_done=s.get("stages_done", []),
                         progress=Progress(**s["progress"]) if s.get("progress") else None,
                         metrics=s.get("metrics", {}), error=row.error, created_at=row.created_at,
                         updated_at=row.updated_at, started_at=row.started_at, ended_at=row.ended_at,
                         job_dir=row.job_dir, artifacts=s.get("artifacts", {}), submission_id=row.submission_id,
                         idempotency_key=row.idempotency_key, config=row.config)

    def logs(self, job_id: str, tail: int) -> JobLogs:
        row = self.row(job_id)
        try:
            text = self.launcher.logs(row.submission_id)
        except Exception as e:
            raise JobConflict(f"job {job_id}: no driver logs available from Ray ({type(e).__name__}: {e})") from e
        lines = text.splitlines()
        return JobLogs(job_id=job_id, lines=lines[-tail:], truncated=len(lines) > tail)

    def report_dir(self, job_id: str) -> Path:
        row = self.row(job_id)
        path = Path(row.job_dir)
        if not (path / "report.json").is_file():
            raise JobConflict(f"job {job_id} has no report yet (status {row.status}, stage {row.stage})")
        return path

    # -- resume -----------------------------------------------------------------------------
    def resume(self, job_id: str) -> JobRecord:
        """Start a FAILED or CANCELLED job again in its own folder: the driver skips every
        stage the earlier attempts completed (the pipeline's resume) and goes on from the
        one that was cut off. Each attempt is a new Ray job (`submission_id_for(id, n)`)."""
        record = self.get(job_id)
        if record.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
            raise JobConflict(f"job {job_id} is {record.status.value}: only a FAILED or CANCELLED job can be resumed")
        row = self.row(job_id)
        try:
            previous = self.launcher.state(row.submission_id).status
        except Exception as e:
            raise LaunchError(f"job {job_id}: Ray did not say whether the previous attempt has stopped: "
                              f"{type(e).__name__}: {e}") from e
        if previous in (JobStatus.PENDING, JobStatus.RUNNING):  # a cancel Ray has not finished yet
            raise JobConflict(f"job {job_id}: its previous attempt ({row.submission_id}) is still stopping; "
                              "retry in a few seconds")
        cfg = from_dict(PipelineConfig, {**row.config, "resume": True}, source=f"job {job_id}")
        try:
            confine_data_paths(cfg, self.settings.data_roots)  # the data roots may have narrowed since
        except ConfigError as e:
            raise JobConflict(f"job {job_id} cannot be resumed: {e}") from None
        attempt = attempt_of(row.submission_id) + 1
        submission = submission_id_for(job_id, attempt)
        config_path = Path(row.job_dir) / REQUEST_CONFIG
        _write_yaml(config_path, to_dict(cfg))
        try:
            self.launcher.submit(submission, str(config_path), {"PRESAFE_JOB_ID": job_id})
        except Exception as e:  # the record stays as it was: FAILED / CANCELLED
            raise LaunchError(f"Ray did not accept attempt {attempt} of job {job_id}: {type(e).__name__}: {e}") from e
        # Marks where this attempt's events begin: until its driver writes job_start, the
        # record must not show the previous attempt's end and error.
        emit_event("attempt", path=Path(row.job_dir) / "events.jsonl", attempt=attempt, submission_id=submission)
        row = self.store.update(job_id, status=JobStatus.PENDING.value, submission_id=submission, error=None,
                                ended_at=None, config=to_dict(cfg))
        return self.to_record(row)

    # -- cancel -----------------------------------------------------------------------------
    def cancel(self, job_id: str) -> JobRecord:
        record = self.get(job_id)
        if record.status.finished:
            return record
        row = self.row(job_id)
        self.launcher.stop(row.submission_id)
        row = self.store.update(job_id, status=JobStatus.CANCELLED.value, ended_at=_now(),
                                error=f"cancelled during stage {row.stage or 'start-up'}")
        return self.to_record(row)


def _changes(row: JobRow, summary: dict, driver: DriverState) -> dict:
    changes: dict = {}
    end = summary.pop("end")
    if driver.status is None:
        # Ray no longer knows the driver: trust the log's last word, or call it lost.
        status = JobStatus(end["status"]) if end else JobStatus.FAILED
        error = (end or {}).get("error") or (None if end else f"driver lost: {driver.message}")
    else:
        status = driver.status
        error = None
        if status == JobStatus.FAILED:
            if end:
                error = end.get("error") or driver.message or "the driver failed"
                if end.get("stage"):
                    error = f"stage {end['stage']} failed: {error}"
            else:  # the driver died without a word (killed, out of memory, node lost)
                where = f"during stage {summary['stage']}" if summary["stage"] else "before its first stage"
                error = f"the driver exited {where} without finishing: {driver.message or 'no message from Ray'}"
    stage = summary["stage"]
    if summary != (row.summary or {}):
        changes["summary"] = summary
    if stage != row.stage:
        changes["stage"] = stage
    if status.value != row.status:
        changes["status"] = status.value
        if status != JobStatus.PENDING and row.started_at is None:
            changes["started_at"] = _now()
        if status.finished:
            changes["ended_at"] = _now()
    if error and error != row.error:
        changes["error"] = error
    return changes


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write_yaml(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(data, f, sort_keys=False)
    os.replace(tmp, path)
