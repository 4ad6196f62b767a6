"""What one job may ask of a shared cluster (ServiceSettings.job_limits), and what it
declares it needs (the scheduler admits it when Ray has that much available).

    check_limits(cfg, settings.job_limits)     # ConfigError (HTTP 422) naming the key and the limit
    demand(cfg, driver_cpus=1.0)               # {"CPU": 3.0, "GPU": 4.0}: the largest stage + the driver
"""

from __future__ import annotations

from jobs.errors import ConfigError
from jobs.pipeline_config import PipelineConfig
from jobs.scale import ScaleConfig
from service.settings import JobLimits


def _over(key: str, value, limit, name: str) -> None:
    if limit is not None and value is not None and value > limit:
        raise ConfigError(f"{key}: {value} is over this service's limit of {limit} (job_limits.{name})", key=key)


def _scales(cfg: PipelineConfig) -> list[tuple[str, ScaleConfig]]:
    out = [("align.scale", cfg.align.scale)]
    if cfg.signals.train is not None:
        out.append(("signals.train.scale", cfg.signals.train.scale))
    return out


def check_limits(cfg: PipelineConfig, limits: JobLimits) -> None:
    _over("align.train.max_steps", cfg.align.train.max_steps, limits.max_steps, "max_steps")
    _over("align.train.epochs", cfg.align.train.epochs, limits.max_epochs, "max_epochs")
    if cfg.signals.train is not None:
        _over("signals.train.train.epochs", cfg.signals.train.train.epochs, limits.max_epochs, "max_epochs")
    _over("decide.num_actors", cfg.decide.num_actors, limits.max_workers, "max_workers")
    for key, scale in _scales(cfg):
        _over(f"{key}.num_workers", scale.num_workers, limits.max_workers, "max_workers")
    for key, gpus in _stage_gpus(cfg):
        _over(key, gpus, limits.max_gpus, "max_gpus")
    for i, d in enumerate(cfg.evaluate.decodings):
        _over(f"evaluate.decodings[{i}].samples", d.samples, limits.max_samples, "max_samples")
    for key, n in (("decide.generation.max_new_tokens", cfg.decide.generation.max_new_tokens),
                   ("targets.self_generation.max_new_tokens", cfg.targets.self_generation.max_new_tokens),
                   ("evaluate.max_new_tokens", cfg.evaluate.max_new_tokens),
                   *((f"evaluate.judges[{i}].max_new_tokens", j.max_new_tokens)
                     for i, j in enumerate(cfg.evaluate.judges))):
        _over(key, n, limits.max_new_tokens, "max_new_tokens")
    if limits.max_prompts_per_set is not None:
        for key, n in (("prompts.limit_per_set", cfg.prompts.limit_per_set),
                       ("evaluate.limit_per_set", cfg.evaluate.limit_per_set)):
            if n is None and (key.startswith("prompts") or cfg.evaluate.enabled):
                raise ConfigError(f"{key}: required on this service (at most {limits.max_prompts_per_set}, "
                                  "job_limits.max_prompts_per_set)", key=key)
            _over(key, n, limits.max_prompts_per_set, "max_prompts_per_set")
    _over("seeds", len(cfg.seeds), limits.max_seeds, "max_seeds")
    _over("align.sweep", len(cfg.align.sweep.points()), limits.max_sweep_points, "max_sweep_points")


def _stage_gpus(cfg: PipelineConfig) -> list[tuple[str, float]]:
    out = [("decide.gpus_per_actor", cfg.decide.num_actors * cfg.decide.gpus_per_actor)]
    for key, scale in _scales(cfg):
        out.append((f"{key}.num_workers", float(scale.num_workers) if scale.use_gpu else 0.0))
    return out


def demand(cfg: PipelineConfig, driver_cpus: float) -> dict[str, float]:
    """Ray resources the job holds at its peak: the driver's CPUs plus its largest stage
    (stages run one after another, each releasing its workers). In-process stages
    (num_workers / num_actors 0) run inside the driver's reservation."""
    stages = [{"CPU": cfg.decide.num_actors * cfg.decide.cpus_per_actor,
               "GPU": cfg.decide.num_actors * cfg.decide.gpus_per_actor}]
    for _, scale in _scales(cfg):
        n = scale.num_workers
        stage = {"CPU": n * scale.cpus_per_worker, "GPU": float(n) if scale.use_gpu else 0.0}
        for name, amount in scale.resources_per_worker.items():
            stage[name] = n * amount
        stages.append(stage)
    peak: dict[str, float] = {}
    for stage in stages:  # the largest stage per resource: an upper bound of any one stage
        for name, amount in stage.items():
            peak[name] = max(peak.get(name, 0.0), amount)
    peak["CPU"] = peak.get("CPU", 0.0) + driver_cpus
    return {k: v for k, v in peak.items() if v > 0}
