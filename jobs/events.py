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
    """Append one event to `path` (default: this process's log, $PRESAFE_EVENTS) in a single
    write of one line: appends from several processes do not interleave within a line."""
    path = path or log_path()
    if path is None:
        return
    line = json.dumps({"time": round(time.time(), 3), "event": event, **fields}, default=str) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


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
