"""A job's event log: `<job_dir>/events.jsonl`, one JSON object per line.

The pipeline driver writes stage start / end / skip / failure and metrics; long loops
(generation, training steps) add progress counts. The service reads the file to show a
job's stage, progress and metrics. The log is found through the environment variable
PRESAFE_EVENTS, so Ray workers started from the driver append to the same file; with
no log set, `emit` does nothing (stages run by hand stay quiet).

Every line carries `time` (unix seconds) and `event`; the rest depends on the event:
    job_start {job_id, config}     stage_start {stage}     stage_skip {stage, reason}
    progress {stage, done, total, unit}     metrics {stage, metrics}
    stage_end {stage, seconds, artifact}    stage_failed {stage, error}
    job_end {status, seconds, report}
    warning {stage, message}       something went wrong that does not fail the job (tracking)
    attempt {attempt, submission_id}   written by the service when it resumes the job
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

ENV = "PRESAFE_EVENTS"
_MIN_PROGRESS_INTERVAL = 1.0
_last_progress: dict[str, float] = {}


def log_path() -> Path | None:
    value = os.environ.get(ENV)
    return Path(value) if value else None


def emit(event: str, path: str | Path | None = None, **fields) -> None:
    """Append one event to `path` (default: this process's log, $PRESAFE_EVENTS, or the
    driver's sink on a worker that cannot see the job folder) in a single write of one
    line: appends from several processes do not interleave within a line."""
    line = json.dumps({"time": round(time.time(), 3), "event": event, **fields}, default=str) + "\n"
    path = path or log_path()
    if path is None:
        if _remote_sink is not None:
            _remote_sink.append.remote(line)
        return
    _append(path, line)


def _append(path: str | Path, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


class EventSink:
    """Runs as a Ray actor on the driver's node and appends the lines workers send it: how
    workers on nodes without the job folder (no shared filesystem) reach events.jsonl."""

    def __init__(self, path: str):
        self.path = path

    def append(self, line: str) -> None:
        _append(self.path, line)


_remote_sink = None  # set once per worker process by attach_worker


def driver_channel() -> dict:
    """What a Ray worker needs to log this driver's events: the log's path and, when Ray is
    up, a sink actor pinned to this node. Pass it to the worker and call attach_worker."""
    path = log_path()
    if path is None:
        return {}
    out: dict = {"path": str(path.resolve())}
    try:
        import ray

        if ray.is_initialized():
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
            out["sink"] = ray.remote(num_cpus=0)(EventSink).options(scheduling_strategy=here).remote(out["path"])
    except Exception:  # no Ray, or no node to pin to: the path alone (same machine, shared folder)
        pass
    return out


def attach_worker(channel: dict) -> None:
    """In a Ray worker: log to the driver's events.jsonl, directly where its folder is
    visible (same node, shared filesystem), else through the driver's sink actor. Ray does
    not pass the driver's environment to workers, so this is how they learn the path."""
    global _remote_sink
    path = channel.get("path")
    if not path or os.environ.get(ENV) == path:
        return
    if Path(path).parent.is_dir():
        os.environ[ENV] = path
    elif channel.get("sink") is not None:
        os.environ.pop(ENV, None)
        _remote_sink = channel["sink"]


def progress(stage: str, done: int, total: int | None, unit: str = "items") -> None:
    """A progress count, at most one per second per stage (and always the last one)."""
    now = time.monotonic()
    if total is not None and done < total and now - _last_progress.get(stage, 0.0) < _MIN_PROGRESS_INTERVAL:
        return
    _last_progress[stage] = now
    emit("progress", stage=stage, done=done, total=total, unit=unit)


def read_events(path: str | Path) -> list[dict]:
    """All events of a log; a torn last line (a writer killed mid-write) is ignored."""
    out = []
    p = Path(path)
    if not p.exists():
        return out
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out
