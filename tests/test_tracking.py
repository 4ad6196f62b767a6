"""Experiment tracking (jobs.tracking) on a finished job folder built by hand: one MLflow
run per job in the job folder's file store, nested runs per stage and per evaluated model,
the report as an artifact; a tracking server that refuses connections costs a warning
event, never the job. Skipped where MLflow (the `tracking` extra) is not installed."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

pytest.importorskip("mlflow")

from jobs import events  # noqa: E402
from jobs.config import from_dict  # noqa: E402
from jobs.evaluation.stats import rate  # noqa: E402
from jobs.pipeline_config import PipelineConfig  # noqa: E402
from jobs.tracking import JobTracker, flatten  # noqa: E402


def _cfg(tmp_path: Path, **tracking) -> PipelineConfig:
    return from_dict(PipelineConfig, {"storage_path": str(tmp_path), "job_id": "j1", "align": {"ablation": True},
                                      "prompts": {"harmful": [{"path": "builtin:demo-harmful-train"}]},
                                      "tracking": tracking})


def _finished_job(cfg: PipelineConfig, monkeypatch) -> Path:
    """What the pipeline leaves: events with two align log steps, evaluation.json, the report."""
    job = Path(cfg.job_dir)
    job.mkdir(parents=True)
    monkeypatch.setenv(events.ENV, str(job / "events.jsonl"))
    events.emit("stage_start", stage="align")
    for step, lm in ((5, 2.0), (10, 1.2)):
        events.emit("metrics", stage="align:adapter", metrics={"step": step, "lm_loss": lm, "aux_loss": 0.6,
                                                               "head_auroc": None, "tokens_per_s": 90.0})
    events.emit("metrics", stage="align:adapter_lambda0", metrics={"step": 5, "lm_loss": 9.0})
    cell = lambda k, n: rate(k, n)  # noqa: E731
    run = lambda k: {"judges": {"string_match": {"asr": cell(k, 16), "cot_asr": cell(k + 1, 16),  # noqa: E731
                                                 "over_refusal": cell(1, 16)}}, "accuracy_rate": cell(5, 10)}
    ev = {"headline": "string_match", "variants": {"base": {"group": "base", "runs": {"cot_on/greedy": run(14)}},
                                                   "aligned": {"group": "aligned", "runs": {"cot_on/greedy": run(2)}}}}
    (job / "evaluation.json").write_text(json.dumps(ev))
    (job / "report.md").write_text("# report\n")
    (job / "report.json").write_text("{}")
    (job / "targets_summary.json").write_text(json.dumps({"refuse": 3}))
    return job


def test_job_logs_one_run_with_nested_stage_and_model_runs(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    cfg = _cfg(tmp_path)
    job = _finished_job(cfg, monkeypatch)
    tracker = JobTracker.start(cfg)
    tracker.stage_end("align", 12.5)
    tracker.stage_end("report", 0.2)
    tracker.finish("FINISHED")
    assert not [e for e in events.read_events(job / "events.jsonl") if e["event"] == "warning"]

    c = MlflowClient(tracking_uri=f"file:{job.resolve()}/mlruns")
    exp = c.get_experiment_by_name("presafe")
    runs = c.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].info.run_name == "j1" and parents[0].info.status == "FINISHED"
    parent = parents[0]
    assert parent.data.params["align.aux.weight"] == "0.2" and parent.data.params["model"] == cfg.model
    assert json.loads(parent.data.params["align.lora.target_modules"]) == cfg.align.lora.target_modules
    children = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert set(children) == {"stage:align", "stage:report", "model:base", "model:aligned"}
    align = children["stage:align"]
    history = c.get_metric_history(align.info.run_id, "lm_loss")
    assert [(m.step, m.value) for m in history] == [(5, 2.0), (10, 1.2)]  # its own variant's steps only
    assert align.data.metrics["seconds"] == 12.5 and "head_auroc" not in align.data.metrics
    aligned = children["model:aligned"].data.metrics
    assert aligned["cot_on/greedy/string_match/asr"] == 2 / 16
    assert aligned["cot_on/greedy/string_match/asr_lo"] == rate(2, 16)["lo"]
    assert aligned["cot_on/greedy/string_match/cot_asr_n"] == 16 and aligned["cot_on/greedy/accuracy"] == 0.5
    assert {"report.md", "report.json", "targets_summary.json"} <= {a.path for a in c.list_artifacts(parent.info.run_id)}

    # a resumed job continues its run: still one parent run
    again = JobTracker.start(cfg)
    assert again.run_id == parent.info.run_id
    again.finish("FINISHED")
    assert len([r for r in c.search_runs([exp.experiment_id]) if "mlflow.parentRunId" not in r.data.tags]) == 1


def test_unreachable_tracking_server_is_a_warning_event_not_a_failure(tmp_path, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: connections are refused
    cfg = _cfg(tmp_path, uri=f"http://127.0.0.1:{port}")
    job = _finished_job(cfg, monkeypatch)
    start = time.monotonic()
    tracker = JobTracker.start(cfg)
    tracker.stage_end("align", 1.0)
    tracker.finish("FAILED")
    assert time.monotonic() - start < 60
    warnings = [e for e in events.read_events(job / "events.jsonl") if e["event"] == "warning"]
    assert len(warnings) == 1 and warnings[0]["stage"] == "tracking"
    assert f"127.0.0.1:{port}" in warnings[0]["message"] and "untracked" in warnings[0]["message"]
    assert not (job / "tracking.json").exists()


def test_tracking_off_writes_nothing_and_flatten(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path, enabled=False)
    job = _finished_job(cfg, monkeypatch)
    tracker = JobTracker.start(cfg)
    tracker.stage_end("align", 1.0)
    tracker.finish("FINISHED")
    assert not (job / "mlruns").exists() and not (job / "tracking.json").exists()
    assert flatten({"a": {"b": 1, "c": [1, 2], "d": {}}, "e[0]": "x"}) == {"a.b": "1", "a.c": "[1, 2]", "a.d": "{}",
                                                                          "e_0_": "x"}
