"""The pipeline driver: every stage of the method, in order, resumable.

    python -m jobs.pipeline --config jobs/configs/quickstart.yaml [key=value ...]
    presafe run jobs/configs/quickstart.yaml [key=value ...]

decide -> classifier (when signals.train is set) -> signals -> targets -> align
-> align_lambda0 (when align.ablation; more align_* stages for `seeds` and align.sweep,
see jobs.variants) -> evaluate (generation, when evaluate.enabled) -> judge (every judge
on every sample) -> report.

Each stage writes its artifact atomically under `<storage_path>/jobs/<job_id>/`, then a
completion record `stages/<stage>.json`. A rerun skips every stage whose record and
artifact are there (resume), unless `resume: false`. The job folder remembers the config
of its last run (`config.json`): when a rerun changes a section a completed stage read,
that stage and every later one are redone (the log names the changed keys); the same
when what the config names changed under it: the model's files or a prompt set's
contents (jobs.stage_inputs). `events.jsonl` gets stage
start / end / skip / failure, progress counts and metrics (see jobs.events).

Exit status: 0 done; 2 the config or the data is wrong (nothing ran); 1 a stage failed
(the message names the stage and the cause; its artifact is not left looking complete).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from jobs import events
from jobs.artifacts import write_json
from jobs.config import load_config, to_dict
from jobs.errors import ConfigError, PresafeError
from jobs.pipeline_config import PipelineConfig
from jobs.scale import use_torch_threads
from jobs.stage_inputs import signature
from jobs.tracking import JobTracker

STAGES_DIR = "stages"
CONFIG_RECORD = "config.json"
EVENTS = "events.jsonl"
# Keys that do not change what any stage computes: a resume may change them freely.
NEUTRAL_KEYS = {"resume", "storage_path", "torch_threads"}  # where and how fast: no stage reruns for them


@dataclass
class Stage:
    name: str
    artifact: str
    """Path under the job folder that the stage publishes (a file or a folder)."""
    run: Callable[[PipelineConfig], Path]
    keys: tuple[str, ...]
    """Config keys (sections or dotted paths) the stage reads: a resume that changes one
    of them redoes the stage and everything after it."""
    inputs: tuple[str, ...] = ()
    """What else it reads (jobs.stage_inputs: model files, prompt set contents): recorded
    when it completes; a resume that finds them changed redoes it and everything after."""


def _decide(cfg):
    from jobs.stages.decide import run_decide

    return run_decide(cfg)


def _classifier(cfg):
    from dataclasses import replace

    from jobs.classifier.train import train_classifier
    from jobs.stages.signals import classifier_dir

    return train_classifier(replace(cfg.signals.train, output_dir=str(classifier_dir(cfg))))


def _signals(cfg):
    from jobs.stages.signals import run_signals

    return run_signals(cfg)


def _targets(cfg):
    from jobs.stages.targets import run_targets

    return run_targets(cfg)


def _align(cfg):
    from jobs.align.train import run_align

    return run_align(cfg)


def _align_variant(variant):
    def run(cfg):
        from jobs.align.train import run_align
        from jobs.variants import variant_config

        return run_align(variant_config(cfg, variant))

    return run


def _evaluate(cfg):
    from jobs.stages.evaluate import run_evaluate

    return run_evaluate(cfg)


def _judge(cfg):
    from jobs.stages.judge import run_judge

    return run_judge(cfg)


def _report(cfg):
    from jobs.report import write_report

    return write_report(cfg)


_BASE = ("model", "dtype", "template", "prompts", "decide")


# What the evaluation's generation reads of the evaluate section: everything but the judges.
_EVAL_GENERATION = tuple(f"evaluate.{k}" for k in ("enabled", "harmful", "benign", "reasoning", "limit_per_set",
                                                   "cot_off", "decodings", "decoding_sweep", "attacks", "attack_decodings",
                                                   "max_new_tokens", "max_new_tokens_by_set", "batch_size_by_set", "batch_size", "probes"))
# An adapter depends on the align section except the sweep (which only adds variants).
_ALIGN = tuple(f"align.{k}" for k in ("lora", "aux", "train", "scale", "merge", "output_name"))


def plan(cfg: PipelineConfig) -> list[Stage]:
    """The stages this config runs, in order."""
    from jobs.variants import align_variants

    if cfg.kind == "eval":  # presafe eval: the given models only
        return [Stage("evaluate", "evaluation/samples.json", _evaluate, ("model", "dtype", "template")
                      + _EVAL_GENERATION + ("evaluate.adapters", "evaluate.endpoint"), ("model", "evaluate")),
                Stage("judge", "evaluation.json", _judge, ("evaluate.judges", "evaluate.headline")),
                Stage("report", "report.json", _report, ())]
    stages = [Stage("decide", "decisions.jsonl", _decide, _BASE, ("model", "prompts"))]
    if cfg.signals.train is not None:
        stages.append(Stage("classifier", "classifier", _classifier, ("signals.train",), ("classifier_data",)))
    stages += [
        Stage("signals", "signals.jsonl", _signals, _BASE + ("signals",)),
        # targets drops what would not fit align.train.max_length: that key is one of its inputs
        Stage("targets", "targets.jsonl", _targets, _BASE + ("signals", "targets", "align.train.max_length")),
    ]
    stages += [Stage(v.stage, v.folder, _align_variant(v), _BASE + ("signals", "targets") + _ALIGN)
               for v in align_variants(cfg)]
    if cfg.evaluate.enabled:
        upstream = _BASE + ("signals", "targets") + _ALIGN + ("align.ablation", "align.sweep", "seeds")
        stages.append(Stage("evaluate", "evaluation/samples.json", _evaluate, upstream + _EVAL_GENERATION,
                            ("model", "evaluate")))
        stages.append(Stage("judge", "evaluation.json", _judge, ("evaluate.judges", "evaluate.headline")))
    stages.append(Stage("report", "report.json", _report, ()))
    return stages


def _changed_keys(old: dict, new: dict, prefix: str = "", defaults: dict | None = None) -> list[str]:
    """Dotted keys whose values differ. With `defaults` (the config's defaults, same shape):
    a key the old record lacks and the new config holds at its default is unchanged: a
    setting a later presafe added, whose default keeps what the code did before it."""
    out = []
    for k in sorted(set(old) | set(new)):
        key = f"{prefix}{k}"
        a, b = old.get(k), new.get(k)
        d = defaults.get(k) if isinstance(defaults, dict) else None
        if k not in old and isinstance(defaults, dict) and k in defaults and b == d:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += _changed_keys(a, b, key + ".", d if isinstance(d, dict) else None)
        elif a != b:
            out.append(key)
    return out


class Pipeline:
    """Runs the planned stages of one job folder; plain Python, no Ray of its own (the
    stages use Ray Train / Ray Data where their config asks)."""

    def __init__(self, cfg: PipelineConfig, log: Callable[[str], None] = print):
        self.cfg = cfg
        self.job = Path(cfg.job_dir)
        self.log = log

    def completed(self, stage: Stage) -> bool:
        return (self.job / STAGES_DIR / f"{stage.name}.json").is_file() and (self.job / stage.artifact).exists()

    def changed_inputs(self, stage: Stage) -> list[str]:
        """The inputs of a completed stage that differ from what it read (a record
        without signatures, written before they existed, counts as unchanged)."""
        recorded = json.loads((self.job / STAGES_DIR / f"{stage.name}.json").read_text()).get("inputs", {})
        return [name for name in stage.inputs if name in recorded and recorded[name] != signature(self.cfg, name)]

    def _changed_stages(self, stages: list[Stage]) -> dict[str, list[str]]:
        """Completed stages whose config sections changed since the job folder's last
        run: stage name -> the changed keys. They (and every later stage) rerun."""
        record = self.job / CONFIG_RECORD
        if not record.is_file():
            return {}
        changed = [k for k in _changed_keys(json.loads(record.read_text()), to_dict(self.cfg),
                                            defaults=to_dict(PipelineConfig()))
                   if k.split(".")[0] not in NEUTRAL_KEYS]
        out = {}
        for st in stages:
            hit = [k for k in changed if any(k == sk or k.startswith(sk + ".") for sk in st.keys)]
            if hit and self.completed(st):
                out[st.name] = hit
        return out

    def run(self) -> Path:
        stages = plan(self.cfg)
        self.job.mkdir(parents=True, exist_ok=True)
        os.environ[events.ENV] = str((self.job / EVENTS).resolve())
        if not self.cfg.resume:
            shutil.rmtree(self.job / STAGES_DIR, ignore_errors=True)
        redo = self._changed_stages(stages) if self.cfg.resume else {}
        write_json(self.job / CONFIG_RECORD, to_dict(self.cfg))
        threads = use_torch_threads(self.cfg.torch_threads)
        self.log(f"[pipeline] torch uses {threads} CPU thread(s) in this process (torch_threads: "
                 f"{'the environment' if self.cfg.torch_threads is None else self.cfg.torch_threads})")
        t0 = time.monotonic()
        events.emit("job_start", job_id=self.cfg.job_id, stages=[s.name for s in stages], config=to_dict(self.cfg),
                    torch_threads=threads)
        tracker = JobTracker.start(self.cfg)  # MLflow, when installed; never fails the job
        dirty = False  # once a stage reruns, every later stage reruns too
        for i, st in enumerate(stages, 1):
            if self.cfg.resume and not dirty and st.name not in redo and self.completed(st):
                changed = self.changed_inputs(st)
                if not changed:
                    self.log(f"[pipeline] {i}/{len(stages)} {st.name}: complete, skipped (resume)")
                    events.emit("stage_skip", stage=st.name, reason="complete")
                    continue
                self.log(f"[pipeline] {st.name}: its {' and '.join(changed)} changed since it completed "
                         "(same config, other files or contents): redoing it and every later stage")
            if st.name in redo and not dirty:
                self.log(f"[pipeline] {st.name}: the config changed {redo[st.name]} since it completed: redoing it "
                         "and every later stage")
            dirty = True
            (self.job / STAGES_DIR / f"{st.name}.json").unlink(missing_ok=True)
            self.log(f"[pipeline] {i}/{len(stages)} {st.name} ...")
            events.emit("stage_start", stage=st.name, index=i, total=len(stages))
            start = time.monotonic()
            try:
                out = st.run(self.cfg)
            except BaseException as e:
                reason = "interrupted" if isinstance(e, KeyboardInterrupt) else f"{type(e).__name__}: {e}"
                events.emit("stage_failed", stage=st.name, error=reason)
                events.emit("job_end", status="FAILED", stage=st.name, error=reason,
                            seconds=round(time.monotonic() - t0, 1))
                tracker.finish("FAILED")
                raise StageError(st.name, e) from e
            seconds = time.monotonic() - start
            write_json(self.job / STAGES_DIR / f"{st.name}.json",
                       {"stage": st.name, "artifact": str(out), "seconds": round(seconds, 2), "finished": time.time(),
                        "inputs": {name: signature(self.cfg, name) for name in st.inputs}})
            events.emit("stage_end", stage=st.name, seconds=round(seconds, 2), artifact=str(out))
            tracker.stage_end(st.name, seconds)
            self.log(f"[pipeline] {i}/{len(stages)} {st.name}: done in {seconds:.1f} s -> {out}")
        report = self.job / "report.md"
        events.emit("job_end", status="SUCCEEDED", seconds=round(time.monotonic() - t0, 1), report=str(report))
        tracker.finish("FINISHED")
        return report


class StageError(PresafeError):
    def __init__(self, stage: str, cause: BaseException):
        self.stage, self.cause = stage, cause
        why = "interrupted" if isinstance(cause, KeyboardInterrupt) else f"{type(cause).__name__}: {cause}"
        super().__init__(f"stage {stage} failed: {why}")


def run_pipeline(config: str | Path, overrides: list[str] | None = None) -> Path:
    """Load, check against the model, run. Returns the report's path."""
    from jobs.align.model import check_against_model

    cfg = load_config(PipelineConfig, config, overrides or [])
    try:
        if cfg.kind == "pipeline":
            check_against_model(cfg.align, cfg.model)
    except ConfigError as e:
        raise ConfigError(f"{config}: {e} (model {cfg.model})") from None
    from jobs.memory import check_memory

    try:
        check_memory(cfg)  # raises naming the keys; writes the auto batch sizes into cfg
    except ConfigError as e:
        raise ConfigError(f"{config}: {e}", key=e.key) from None
    if cfg.kind == "pipeline":
        preflight_cluster(cfg, str(config))
    return Pipeline(cfg).run()


def preflight_cluster(cfg: PipelineConfig, source: str, include_classifier: bool = True) -> None:
    """Stages that train on Ray workers: join the cluster now and refuse checkpoint storage
    its nodes cannot share, before the first stage runs rather than hours into the job."""
    from jobs.scale import connect_ray

    job = Path(cfg.job_dir).resolve()
    scales = [("align.scale", cfg.align.scale, str(job / ".ray"))]
    if include_classifier and cfg.signals.train is not None:
        scales.append(("signals.train.scale", cfg.signals.train.scale, str(job / ".ray_results")))
    for key, scale, default in scales:
        try:
            connect_ray(scale, key, default)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}", key=e.key) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.pipeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="pipeline YAML (see jobs/configs/)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. align.aux.weight=0")
    args = parser.parse_args(argv)
    try:
        report = run_pipeline(args.config, args.overrides)
    except StageError as e:
        if not isinstance(e.cause, (PresafeError, KeyboardInterrupt)):
            traceback.print_exception(e.cause, file=sys.stderr)
        print(f"presafe: error: {e}", file=sys.stderr)
        return 130 if isinstance(e.cause, KeyboardInterrupt) else 1
    except PresafeError as e:
        print(f"presafe: error: {e}", file=sys.stderr)
        return 2
    print(f"\nreport: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
