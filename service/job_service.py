"""The job API's logic as a plain object: validate, queue, admit, launch, watch, cancel.

    jobs = JobService(settings, JobStore(settings.db_url), RayJobLauncher(...))
    record, created = jobs.submit(JobCreate(config={...}), Principal("alice"))   # QUEUED
    jobs.schedule()                                   # the ingress runs this in a loop
    jobs.get(record.id, Principal("alice")).progress

Jobs belong to the principal (token name) that submitted them: every read and action
takes the caller, and another principal's job is "not found" (404) unless the caller is
an admin. New jobs are QUEUED in the store; `schedule()` admits them in priority order
(FIFO within a priority) while their owner is under quota and the cluster has the
resources the config declares (service.limits.demand), enforces each job's wall-clock
deadline, and launches admitted jobs through the Ray Jobs API. The queue is the store,
so it survives a restart; a conditional update (QUEUED -> PENDING) makes each launch
happen once even with two schedulers (a redeploy overlaps the old and new replica).

A job's status comes from Ray (is the driver alive, did it exit 0) and its stage,
progress, metrics and artifacts from the `events.jsonl` the driver appends; both are
folded into the store's record whenever a job is read, and for every unfinished job on
start-up (`resync`), so records survive a service restart and catch up with drivers
that kept running or died while no service was watching.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import secrets
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import yaml

from jobs.config import from_dict, to_dict
from jobs.errors import ConfigError, PresafeError
from jobs.events import emit as emit_event
from jobs.events import read_events
from jobs.pipeline_config import PipelineConfig
from service.auth import Principal
from service.launcher import DriverState, RayJobLauncher, attempt_of, submission_id_for
from service.limits import check_limits, demand
from service.metrics import ServiceMetrics
from service.path_policy import confine_config
from service.schemas import JobCreate, JobLogs, JobPage, JobRecord, JobStatus, Progress, QueueEntry, QueuePage
from service.settings import ServiceSettings
from service.store import JobNotFound, JobRow, JobStore

log = logging.getLogger("presafe.service")
REQUEST_CONFIG = "request.yaml"
"""The config as the service validated it (storage_path and job_id set), in the job folder."""
LOST = "driver lost: "
"""How a record Ray forgot begins its error; such a record is corrected if Ray reports the job later."""
ACTIVE = (JobStatus.PENDING.value, JobStatus.RUNNING.value)
LOST_RECHECK_S = 24 * 3600.0
"""How long a lost record keeps asking Ray (one call per read) whether the job came back."""


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
    def __init__(self, settings: ServiceSettings, store: JobStore, launcher: RayJobLauncher,
                 quota: Callable[[str | None], int] | None = None, wake: Callable[[], None] | None = None,
                 metrics: ServiceMetrics | None = None):
        """`quota(owner)`: jobs the owner may run at once (default: queue.max_running_per_owner);
        `wake()`: called when the queue changed (the ingress wakes its scheduler thread);
        `metrics`: gets the job counts per status after every scheduler pass."""
        self.settings, self.store, self.launcher = settings, store, launcher
        self.metrics = metrics
        self.quota = quota or (lambda owner: settings.queue.max_running_per_owner)
        self.wake = wake or (lambda: None)
        self.before_launch: Callable[[JobRow], None] | None = None
        """Test hook: runs after a job is recorded as launched and before Ray is asked to start it."""

    # -- submit -----------------------------------------------------------------------------
    def validate(self, config: dict, job_id: str) -> PipelineConfig:
        """The driver's own config checks, the operator's limits and the path policy;
        ConfigError names the key path. `storage_path` and `job_id` belong to the service: a
        config file's own values (every shipped YAML has them) are replaced, not refused."""
        cfg = from_dict(PipelineConfig, {**config, "storage_path": self.settings.storage_path, "job_id": job_id},
                        source="config")
        check_limits(cfg, self.settings.job_limits)
        confine_config(cfg, self.settings.data_roots, self.settings.paths)
        return cfg

    def submit(self, req: JobCreate, caller: Principal) -> tuple[JobRecord, bool]:
        """Record the job QUEUED (201), or return the job an earlier request with the same
        idempotency key made (200); the same key with another body is a 409."""
        cap = 100 if caller.admin else caller.max_priority
        if req.priority > cap:
            raise ConfigError(f"priority: {req.priority} is over this token's maximum of {cap}", key="priority")
        digest = hashlib.sha256(json.dumps(req.model_dump(mode="json", exclude={"idempotency_key"}),
                                           sort_keys=True).encode()).hexdigest()
        if req.idempotency_key is not None:
            earlier = self.store.by_key(caller.name, req.idempotency_key)
            if earlier is not None:
                return self._same_request(earlier, digest), False
        job_id = new_job_id()
        cfg = self.validate(req.config, job_id)
        row = JobRow(id=job_id, owner=caller.name, name=req.name, idempotency_key=req.idempotency_key,
                     status=JobStatus.QUEUED.value, config=to_dict(cfg), submission_id=submission_id_for(job_id),
                     job_dir=cfg.job_dir, priority=req.priority, request_sha256=digest,
                     queue_reason="waiting for the scheduler")
        row, created = self.store.create(row)
        if not created:  # a concurrent request with the same key won the insert
            return self._same_request(row, digest), False
        self.wake()
        return self.to_record(row), True

    def _same_request(self, row: JobRow, digest: str) -> JobRecord:
        if row.request_sha256 is not None and row.request_sha256 != digest:
            raise JobConflict(f"idempotency key {row.idempotency_key!r} was used for job {row.id} with a different "
                              "request body; use a new key for a new job")
        return self.refresh(row)

    # -- read -------------------------------------------------------------------------------
    def row(self, job_id: str, caller: Principal) -> JobRow:
        """The job when the caller may see it: its own, or any for an admin. Another
        principal's job is "not found", exactly like a job that does not exist."""
        row = self.store.get(job_id)
        if row is None or not (caller.admin or row.owner == caller.name):
            raise JobNotFound(f"no job {job_id!r}")
        return row

    def get(self, job_id: str, caller: Principal) -> JobRecord:
        return self.refresh(self.row(job_id, caller))

    def list(self, status: JobStatus | None, limit: int, offset: int, caller: Principal) -> JobPage:
        rows, total = self.store.list(status.value if status else None, limit, offset,
                                      owner=None if caller.admin else caller.name)
        return JobPage(items=[self.refresh(r) for r in rows], total=total, limit=limit, offset=offset)

    def refresh(self, row: JobRow) -> JobRecord:
        """Fold Ray's view and the event log into the record (stored when it changed).
        QUEUED jobs are not in Ray yet; finished ones are final, except a record that
        called its driver lost: Ray may report that job later (a slow cluster, a network
        partition), and then the record follows Ray again."""
        status = JobStatus(row.status)
        lost = (status == JobStatus.FAILED and (row.error or "").startswith(LOST) and row.ended_at is not None
                and (_now() - row.ended_at).total_seconds() < LOST_RECHECK_S)
        if status == JobStatus.QUEUED or (status.finished and not lost):
            return self.to_record(row)
        summary = summarize_events(read_events(Path(row.job_dir) / "events.jsonl"))
        try:
            driver = self.launcher.state(row.submission_id)
        except Exception as e:  # noqa: BLE001 - Ray unreachable: show what the log says, retry on next read
            driver = DriverState(JobStatus(row.status), f"Ray unreachable: {e}")
        if lost and driver.status is None:
            return self.to_record(row)
        changes = _changes(row, summary, driver, self.settings.queue.launch_grace_s)
        if changes:
            # only from the status read, so a cancel or a deadline landing meanwhile is not overwritten
            row = self.store.transition(row.id, (row.status,), **changes) or self.store.get(row.id)
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
                         priority=row.priority, queue_reason=row.queue_reason if row.status == "QUEUED" else None,
                         launched_at=row.launched_at,
                         stages_done=s.get("stages_done", []),
                         progress=Progress(**s["progress"]) if s.get("progress") else None,
                         metrics=s.get("metrics", {}), error=row.error, created_at=row.created_at,
                         updated_at=row.updated_at, started_at=row.started_at, ended_at=row.ended_at,
                         job_dir=row.job_dir, artifacts=s.get("artifacts", {}), submission_id=row.submission_id,
                         idempotency_key=row.idempotency_key, config=row.config)

    def logs(self, job_id: str, tail: int, caller: Principal) -> JobLogs:
        row = self.row(job_id, caller)
        if row.status == JobStatus.QUEUED.value:
            raise JobConflict(f"job {job_id} is QUEUED: no driver, no logs yet ({row.queue_reason})")
        try:
            text = self.launcher.logs(row.submission_id)
        except Exception as e:
            raise JobConflict(f"job {job_id}: no driver logs available from Ray ({type(e).__name__}: {e})") from e
        lines = text.splitlines()
        return JobLogs(job_id=job_id, lines=lines[-tail:], truncated=len(lines) > tail)

    def report_dir(self, job_id: str, caller: Principal) -> Path:
        row = self.row(job_id, caller)
        path = Path(row.job_dir)
        if not (path / "report.json").is_file():
            raise JobConflict(f"job {job_id} has no report yet (status {row.status}, stage {row.stage})")
        return path

    # -- resume -----------------------------------------------------------------------------
    def resume(self, job_id: str, caller: Principal) -> JobRecord:
        """Queue a FAILED or CANCELLED job again in its own folder: the driver skips every
        stage the earlier attempts completed (the pipeline's resume) and goes on from the
        one that was cut off. Each attempt is a new Ray job (`submission_id_for(id, n)`)."""
        record = self.get(job_id, caller)
        if record.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
            raise JobConflict(f"job {job_id} is {record.status.value}: only a FAILED or CANCELLED job can be resumed")
        row = self.row(job_id, caller)
        if row.launched_at is not None:
            try:
                previous = self.launcher.state(row.submission_id).status
            except Exception as e:
                raise LaunchError(f"job {job_id}: Ray did not say whether the previous attempt has stopped: "
                                  f"{type(e).__name__}: {e}") from e
            if previous in (JobStatus.PENDING, JobStatus.RUNNING):  # a cancel Ray has not finished yet
                raise JobConflict(f"job {job_id}: its previous attempt ({row.submission_id}) is still stopping; "
                                  "retry in a few seconds")
        cfg = from_dict(PipelineConfig, {**row.config, "resume": True}, source=f"job {job_id}")
        try:  # the operator's limits and roots may have narrowed since
            check_limits(cfg, self.settings.job_limits)
            confine_config(cfg, self.settings.data_roots, self.settings.paths)
        except ConfigError as e:
            raise JobConflict(f"job {job_id} cannot be resumed: {e}") from None
        # A job cancelled while queued never reached Ray: its first submission id is unused.
        attempt = attempt_of(row.submission_id) + (row.launched_at is not None)
        submission = submission_id_for(job_id, attempt)
        # Marks where this attempt's events begin: until its driver writes job_start, the
        # record must not show the previous attempt's end and error.
        Path(row.job_dir).mkdir(parents=True, exist_ok=True)
        emit_event("attempt", path=Path(row.job_dir) / "events.jsonl", attempt=attempt, submission_id=submission)
        row = self.store.transition(job_id, (row.status,), status=JobStatus.QUEUED.value, submission_id=submission,
                                    error=None, ended_at=None, launched_at=None, config=to_dict(cfg),
                                    queue_reason="waiting for the scheduler")
        if row is None:
            raise JobConflict(f"job {job_id} changed while resuming; retry")
        self.wake()
        return self.to_record(row)

    # -- cancel -----------------------------------------------------------------------------
    def cancel(self, job_id: str, caller: Principal) -> JobRecord:
        record = self.get(job_id, caller)
        if record.status.finished:
            return record
        if record.status == JobStatus.QUEUED:
            row = self.store.transition(job_id, (JobStatus.QUEUED.value,), status=JobStatus.CANCELLED.value,
                                        ended_at=_now(), error="cancelled while queued")
            if row is not None:
                return self.to_record(row)
        row = self.row(job_id, caller)  # launched (maybe this instant): stop it in Ray
        try:
            self.launcher.stop(row.submission_id)
        except Exception as e:  # noqa: BLE001 - not in Ray yet: the launch sees CANCELLED and stops it
            log.warning("presafe: stopping %s: %s", row.submission_id, e)
        row = self.store.transition(job_id, ACTIVE, status=JobStatus.CANCELLED.value, ended_at=_now(),
                                    error=f"cancelled during stage {row.stage or 'start-up'}")
        return self.to_record(row) if row is not None else self.get(job_id, caller)

    # -- the queue ----------------------------------------------------------------------------
    def schedule(self) -> dict[str, int]:
        """One scheduler pass: stop jobs past their deadline, catch up with Ray, then admit
        queued jobs in order while quotas and resources allow. Returns counts."""
        out = {"stopped": self._enforce_deadlines(), "launched": 0}
        for r in self.store.unfinished():  # finished jobs free their owner's quota and their resources
            if self.refresh(r).status == JobStatus.PENDING:
                self._relaunch_if_orphaned(r)
        active = self.store.unfinished()
        per_owner = Counter(r.owner for r in active)
        free = self._free_resources(active)
        cap = self.settings.queue.max_running
        blocked_by: str | None = None
        launches: list[JobRow] = []
        for row in self.store.queued():
            quota = self.quota(row.owner)
            need = self._demand(row)
            if cap is not None and len(active) >= cap:
                reason = f"the service runs its maximum of {cap} jobs at once (queue.max_running)"
            elif per_owner[row.owner] >= quota:
                reason = f"owner {row.owner!r} has {per_owner[row.owner]} job(s) running; its quota is {quota}"
            elif blocked_by is not None:
                reason = f"behind job {blocked_by}, which waits for cluster resources"
            else:
                short = _short(need, free, self.settings.queue.driver_num_cpus)
                reason = f"waiting for cluster resources: {short}" if short else None
                if short:
                    blocked_by = row.id  # no overtaking on resources: a big job would starve
            if reason is not None:
                if reason != row.queue_reason:
                    self.store.transition(row.id, (JobStatus.QUEUED.value,), queue_reason=reason)
                continue
            claimed = self._claim(row)
            if claimed is not None:
                launches.append(claimed)
                active.append(row)
                per_owner[row.owner] += 1
                if free is not None:
                    free.take(need)
        # Every admission of this pass is recorded (launched_at) before the first Ray submit,
        # so the order the records show is the order decided from this pass's one read of the
        # queue; a submit takes a while, and a job queued meanwhile waits for the next pass.
        for row in launches:
            self._start(row)
            out["launched"] += 1
        if self.metrics is not None:
            self.metrics.job_counts(self.store.count_by_status())
        return out

    def queue(self, caller: Principal) -> QueuePage:
        """The queue in admission order; positions count every owner's jobs, entries show
        the caller's own (an admin sees all)."""
        items = [QueueEntry(position=i + 1, id=r.id, owner=r.owner, name=r.name, priority=r.priority,
                            reason=r.queue_reason, created_at=r.created_at)
                 for i, r in enumerate(self.store.queued())]
        mine = [e for e in items if caller.admin or e.owner == caller.name]
        return QueuePage(items=mine, total=len(items))

    def _demand(self, row: JobRow) -> dict[str, float]:
        try:
            cfg = from_dict(PipelineConfig, row.config, source=f"job {row.id}")
        except ConfigError:
            return {"CPU": self.settings.queue.driver_num_cpus}
        return demand(cfg, self.settings.queue.driver_num_cpus)

    def _free_resources(self, active: list[JobRow]) -> dict[str, float] | None:
        """What a new job may take: Ray's available resources, but never more than the
        cluster's total less what the running jobs declared (their workers may not hold
        it yet). A resource the cluster lacks entirely counts as free while none of our
        jobs holds it: an autoscaler adds such nodes only when a job asks."""
        if not self.settings.queue.check_resources:
            return None
        try:
            got = self.launcher.resources()
        except Exception as e:  # noqa: BLE001 - Ray unreachable: admit on quotas alone this pass
            log.warning("presafe: cluster resources unknown: %s", e)
            return None
        if got is None:
            return None
        total, available = got
        held = Counter()
        for r in active:
            held.update(self._demand(r))
        free = {name: min(available.get(name, 0.0), amount - held[name]) for name, amount in total.items()}
        return _Free(free, held)

    def _launch(self, row: JobRow) -> bool:
        """QUEUED -> PENDING (once: a conditional update), write request.yaml, submit to Ray."""
        row = self._claim(row)
        if row is None:
            return False  # cancelled, or another scheduler took it
        self._start(row)
        return True

    def _claim(self, row: JobRow) -> JobRow | None:
        """QUEUED -> PENDING with launched_at, once (a conditional update); None when the job
        was cancelled or another scheduler took it."""
        return self.store.transition(row.id, (JobStatus.QUEUED.value,), status=JobStatus.PENDING.value,
                                     launched_at=_now(), queue_reason=None)

    def _start(self, row: JobRow) -> None:
        """Write request.yaml and submit a claimed job to Ray (a failure is recorded on it)."""
        if self.before_launch is not None:
            self.before_launch(row)
        if self.settings.queue.test_launch_delay_s:
            time.sleep(self.settings.queue.test_launch_delay_s)
        self._submit(row)

    def _relaunch_if_orphaned(self, row: JobRow) -> None:
        """A PENDING job Ray has never heard of, launched a while ago: the process that
        claimed it died between the record and the submit (a redeploy). Submit it again;
        the submission id makes that idempotent if the first submit did arrive meanwhile."""
        age = (_now() - row.launched_at).total_seconds() if row.launched_at else 0.0
        if age < 5.0 + self.settings.queue.test_launch_delay_s:
            return
        try:
            if self.launcher.state(row.submission_id).status is not None:
                return
        except Exception:  # noqa: BLE001 - Ray unreachable: try on a later pass
            return
        log.warning("presafe: job %s was claimed but never reached Ray; submitting it again", row.id)
        self._submit(row)

    def _submit(self, row: JobRow) -> None:
        config_path = Path(row.job_dir) / REQUEST_CONFIG
        try:
            _write_yaml(config_path, row.config)
            self.launcher.submit(row.submission_id, str(config_path), {"PRESAFE_JOB_ID": row.id},
                                 num_cpus=self.settings.queue.driver_num_cpus)
        except Exception as e:  # noqa: BLE001 - any failure to launch is recorded on the job
            why = f"Ray did not accept the job: {type(e).__name__}: {e}"
            log.error("presafe: job %s: %s", row.id, why)
            self.store.transition(row.id, ACTIVE, status=JobStatus.FAILED.value, error=why, ended_at=_now())
            return
        now = self.store.get(row.id)
        if now is not None and now.status == JobStatus.CANCELLED.value:  # cancelled while we submitted
            try:
                self.launcher.stop(row.submission_id)
            except Exception as e:  # noqa: BLE001
                log.warning("presafe: stopping cancelled job %s: %s", row.id, e)

    def _enforce_deadlines(self) -> int:
        limit = self.settings.job_limits.max_wall_clock_s
        if limit is None:
            return 0
        stopped = 0
        for row in self.store.unfinished():
            if row.launched_at is None or (_now() - row.launched_at).total_seconds() <= limit:
                continue
            try:
                self.launcher.stop(row.submission_id)
            except Exception as e:  # noqa: BLE001 - recorded either way; a lost driver is gone already
                log.warning("presafe: stopping %s past its deadline: %s", row.submission_id, e)
            why = (f"stopped: ran past this service's wall-clock limit of {limit:g} s "
                   f"(job_limits.max_wall_clock_s), during stage {row.stage or 'start-up'}")
            if self.store.transition(row.id, ACTIVE, status=JobStatus.FAILED.value, error=why, ended_at=_now()):
                stopped += 1
        return stopped


class _Free(dict):
    """Free resources, and what our running jobs hold (for resources the cluster lacks)."""

    def __init__(self, free: dict[str, float], held: Counter):
        super().__init__(free)
        self.held = held

    def take(self, need: dict[str, float]) -> None:
        self.held.update(need)
        for name, amount in need.items():
            if name in self:
                self[name] -= amount


def _short(need: dict[str, float], free: dict[str, float] | None, driver_cpus: float) -> str:
    """'' when `need` fits in `free`, else what is missing ("CPU 2 (0.5 free)"). A job whose
    stage needs a resource the cluster has none of (GPUs before the autoscaler adds a GPU
    node) is the autoscaler's to place: only its driver must fit now, and only while no
    running job of ours holds that resource (one scale-up at a time)."""
    if free is None:
        return ""
    absent = [name for name in need if name not in free]
    if absent:
        busy = [name for name in absent if getattr(free, "held", {}).get(name, 0) > 0]
        if busy:
            return ", ".join(f"{name} {need[name]:g} (none in the cluster yet; a running job holds the ones being "
                             "added)" for name in busy)
        need = {"CPU": driver_cpus}
    missing = [f"{name} {amount:g} ({max(free[name], 0):g} free)" for name, amount in need.items()
               if amount > free.get(name, 0.0) + 1e-9]
    return ", ".join(missing)


def _changes(row: JobRow, summary: dict, driver: DriverState, grace_s: float = 0.0) -> dict:
    changes: dict = {}
    end = summary.pop("end")
    just_launched = (row.status == JobStatus.PENDING.value and row.launched_at is not None
                     and (_now() - row.launched_at).total_seconds() < grace_s)
    if driver.status is None and not end and just_launched:
        # Recorded as launched, not in Ray yet (the submit is on its way): still PENDING.
        status, error = JobStatus.PENDING, None
    elif driver.status is None:
        # Ray no longer knows the driver: trust the log's last word, or call it lost.
        status = JobStatus(end["status"]) if end else JobStatus.FAILED
        error = (end or {}).get("error") or (None if end else f"{LOST}{driver.message}")
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
        elif row.ended_at is not None:  # a record that called its driver lost, corrected
            changes["ended_at"] = None
    if error and error != row.error:
        changes["error"] = error
    elif not error and (row.error or "").startswith(LOST):
        changes["error"] = None
    return changes


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write_yaml(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(data, f, sort_keys=False)
    os.replace(tmp, path)
