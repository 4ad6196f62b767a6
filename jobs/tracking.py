"""Experiment tracking with MLflow (`pip install presafe[tracking]`; the job config's `tracking`
section, jobs.pipeline_config.TrackingConfig): one run per job, nested runs per stage and
per evaluated model. The pipeline driver calls it in three places:

    tracker = JobTracker.start(cfg)          # at job start (a resumed job continues its run)
    tracker.stage_end("align", seconds)      # after each stage that ran
    tracker.finish("FINISHED" | "FAILED")    # at the end

- the job's run (named after the job id, tag `presafe.job_id`): params = the resolved config
  flattened (`align.aux.weight`, ...; lists as JSON); at the end the artifacts report.md,
  report.json, the plots, targets_summary.json and signals_summary.json, and the status.
- `stage:<name>`, nested, per stage that ran: `seconds`; an align stage also gets the training
  metrics per log step (lm_loss, aux_loss, head_accuracy, head_auroc, tokens_per_s, lr) as its
  rank-0 worker wrote them to events.jsonl. The workers never talk to the tracking store: on
  a cluster they may not reach it, and a slow store must not stall training.
- `model:<variant>`, nested, per evaluated model (base, aligned, lambda0, aligned@s1, ...):
  `<run>/<judge>/<asr|cot_asr|asr_any|over_refusal>` with `_lo`, `_hi` (95% Wilson) and `_n`,
  and `<run>/accuracy`, from evaluation.json.

The job's run id is kept in `<job_dir>/tracking.json`. Tracking never fails a job: any
error (MLflow missing while `tracking.uri` is set, a server down, a bad URI) emits one
`warning` event in events.jsonl and turns tracking off for the rest of the job.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
from pathlib import Path

from jobs import events
from jobs.config import to_dict
from jobs.pipeline_config import PipelineConfig

log = logging.getLogger("presafe.tracking")
RECORD = "tracking.json"
ARTIFACTS = ("report.md", "report.json", "metrics.png", "probes.png", "sweep.png", "temperature.png",
             "targets_summary.json", "signals_summary.json")
MAX_PARAM_LENGTH = 6000
"""MLflow's limit on a param value."""


def _guarded(method):
    """Run a tracking call; on any error warn once (an event) and stop tracking."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        if self.client is None:
            return None
        try:
            return method(self, *args, **kwargs)
        except Exception as e:  # noqa: BLE001 - tracking must never fail the job
            self.warn(f"experiment tracking failed ({type(e).__name__}: {_first_line(e)}); "
                      f"the job goes on untracked (tracking.uri {self.uri})")
            return None

    return wrapper


class JobTracker:
    """The job's MLflow run and its nested runs; every method is a no-op once tracking is off."""

    def __init__(self, cfg: PipelineConfig, client=None, uri: str = ""):
        self.cfg, self.client, self.uri = cfg, client, uri
        self.job = Path(cfg.job_dir)
        self.run_id: str | None = None
        self.experiment_id: str | None = None

    @classmethod
    def start(cls, cfg: PipelineConfig) -> JobTracker:
        t = cfg.tracking
        uri = t.uri or f"file:{Path(cfg.job_dir).resolve()}/mlruns"
        if not t.enabled:
            return cls(cfg, None, uri)
        try:
            from mlflow import MlflowClient
        except ImportError:
            tracker = cls(cfg, None, uri)
            if t.uri:  # asked for by name: say why nothing is tracked
                tracker.warn(f"tracking.uri is set but MLflow is not installed (pip install presafe[tracking]); "
                             "the job goes on untracked")
            return tracker
        if uri.startswith("file:"):
            # MLflow keeps its file store in maintenance mode behind this switch; it needs no server.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        # A server that is down should cost seconds, not MLflow's default minutes of retries.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        tracker = cls(cfg, MlflowClient(tracking_uri=uri), uri)
        tracker._open()
        return tracker

    def warn(self, message: str) -> None:
        log.warning("presafe: %s", message)
        events.emit("warning", stage="tracking", message=message)
        self.client = None

    @_guarded
    def _open(self) -> None:
        """The job's run: the one tracking.json names (a resumed job), else a new one with
        the config as params."""
        from mlflow.entities import Param

        c, t = self.client, self.cfg.tracking
        exp = c.get_experiment_by_name(t.experiment)
        self.experiment_id = exp.experiment_id if exp is not None else c.create_experiment(t.experiment)
        record = self.job / RECORD
        old = json.loads(record.read_text()) if record.is_file() else {}
        params = flatten(to_dict(self.cfg))
        if self.cfg.resume and old.get("uri") == self.uri and old.get("run_id"):
            self.run_id = old["run_id"]
            logged = c.get_run(self.run_id).data.params
            c.update_run(self.run_id, status="RUNNING")
            changed = sorted(k for k, v in params.items() if k in logged and logged[k] != v)
            if changed:  # MLflow params are immutable: say what the resumed run changed
                c.set_tag(self.run_id, "presafe.config_changed_on_resume", ", ".join(changed)[:MAX_PARAM_LENGTH])
            params = {k: v for k, v in params.items() if k not in logged}
        else:
            run = c.create_run(self.experiment_id, run_name=self.cfg.job_id,
                               tags={"presafe.job_id": self.cfg.job_id, "presafe.model": self.cfg.model})
            self.run_id = run.info.run_id
            self.job.mkdir(parents=True, exist_ok=True)
            record.write_text(json.dumps({"uri": self.uri, "run_id": self.run_id,
                                          "experiment_id": self.experiment_id}))
        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            c.log_batch(self.run_id, params=items[i:i + 100])

    def _child(self, name: str, metrics: list) -> None:
        """A finished nested run under the job's run with these metrics."""
        c = self.client
        run = c.create_run(self.experiment_id, run_name=name,
                           tags={"mlflow.parentRunId": self.run_id, "presafe.job_id": self.cfg.job_id})
        for i in range(0, len(metrics), 1000):  # MLflow takes at most 1000 metrics per batch
            c.log_batch(run.info.run_id, metrics=metrics[i:i + 1000])
        c.set_terminated(run.info.run_id)

    @_guarded
    def stage_end(self, stage: str, seconds: float) -> None:
        """A nested run for a stage that ran; an align stage's training metrics per step."""
        import time

        from mlflow.entities import Metric

        from jobs.variants import align_variants

        now = int(time.time() * 1000)
        metrics = [Metric("seconds", float(seconds), now, 0)]
        folder = next((v.folder for v in align_variants(self.cfg) if v.stage == stage), None)
        if folder is not None:
            label, rows = f"align:{folder}", []
            for e in events.read_events(self.job / "events.jsonl"):
                if e.get("event") == "stage_start" and e.get("stage") == stage:
                    rows = []  # this run of the stage only (a resumed stage logged again)
                elif e.get("event") == "metrics" and e.get("stage") == label:
                    rows.append(e)
            for e in rows:
                m = e.get("metrics") or {}
                step = int(m.get("step") or 0)
                metrics += [Metric(k, float(v), int(e.get("time", 0) * 1000), step)
                            for k, v in m.items() if k != "step" and _number(v)]
        self._child(f"stage:{stage}", metrics)

    @_guarded
    def finish(self, status: str) -> None:
        """Nested runs for the evaluated models, the report and summaries as artifacts, the
        job run's status (FINISHED | FAILED)."""
        import time

        from mlflow.entities import Metric

        ev = self.job / "evaluation.json"
        if ev.is_file():
            now = int(time.time() * 1000)
            for name, v in (json.loads(ev.read_text()).get("variants") or {}).items():
                self._child(f"model:{name}", [Metric(k, x, now, 0) for k, x in evaluation_metrics(v).items()])
        for name in ARTIFACTS:
            if (self.job / name).is_file():
                self.client.log_artifact(self.run_id, str(self.job / name))
        self.client.set_terminated(self.run_id, status=status)


def evaluation_metrics(variant: dict) -> dict[str, float]:
    """One evaluated model's numbers (evaluation.json `variants.<name>`) as flat metric names."""
    out: dict[str, float] = {}
    for run, r in (variant.get("runs") or {}).items():
        for judge, m in (r.get("judges") or {}).items():
            for key in ("asr", "cot_asr", "asr_any", "over_refusal"):
                cell = m.get(key)
                if isinstance(cell, dict) and cell.get("rate") is not None:
                    base = _key(f"{run}/{judge}/{key}")
                    out.update({base: cell["rate"], f"{base}_lo": cell["lo"], f"{base}_hi": cell["hi"],
                                f"{base}_n": float(cell["n"])})
        acc = r.get("accuracy_rate")
        if isinstance(acc, dict) and acc.get("rate") is not None:
            out[_key(f"{run}/accuracy")] = acc["rate"]
            out[_key(f"{run}/accuracy_n")] = float(acc["n"])
    return out


def flatten(data: dict, prefix: str = "") -> dict[str, str]:
    """A nested config as MLflow params: dotted keys; lists and empty dicts as JSON."""
    out: dict[str, str] = {}
    for k, v in data.items():
        key = _key(f"{prefix}{k}")
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = (v if isinstance(v, str) else json.dumps(v, default=str))[:MAX_PARAM_LENGTH]
    return out


def _key(name: str) -> str:
    """MLflow names allow letters, digits, _ - . space / only."""
    return re.sub(r"[^\w\-. /]", "_", name)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else ""
