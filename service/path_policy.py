"""Every path-like key of a submitted job config, confined (ServiceSettings.paths).

A config reaches the service from the network and runs with the cluster's permissions,
so nothing in it may name a file, folder, model or URI the operator did not allow:

- data files: under `data_roots` (service.data_policy); `hf:` datasets only those in
  `paths.hub_datasets`; `builtin:` sets always;
- models (`model`, `decide.safe_model`, `signals.classifier`, `signals.train.model.backbone`,
  `evaluate.judges[].path`, `evaluate.adapters[]`): `embedded:` names always; hub ids only those in
  `paths.hub_models`; local folders only under `paths.model_roots` (made absolute);
- Ray Train checkpoint storage (`*.scale.storage_path`): a plain name (a folder in the
  job's own folder), a folder inside the job's folder, or a URI / folder that starts with
  one of `paths.storage_uris`, query included, so a job cannot point `endpoint_override`
  at a host of its choosing;
- evaluation endpoints (`evaluate.endpoint.url`, an eval job's OpenAI-compatible server):
  only URL prefixes in `paths.endpoints`;
- DeepSpeed (`*.scale.deepspeed`): keys that write files or reach the network (monitors,
  profilers, NVMe offload paths, autotuning, ...) only when listed in `paths.deepspeed_keys`;
- names the stages turn into paths under the job folder (`align.output_name`, decoding
  names, judge names) are checked by the config itself; `signals.train.output_dir` is
  replaced by the pipeline with `<job_dir>/classifier`.

Each refusal is a ConfigError naming the key (HTTP 422).
"""

from __future__ import annotations

import fnmatch
import os
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from jobs.errors import ConfigError
from jobs.pipeline_config import PipelineConfig
from service.data_policy import confine_data_paths, exists, real_path
from service.settings import PathPolicy

EMBEDDED = "embedded:"
SIGNALS_JUDGE = "signals"
HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")
# DeepSpeed sections that write files or reach the network wherever they point.
DS_SECTIONS = {"tensorboard", "wandb", "csv_monitor", "comet", "flops_profiler", "autotuning", "elasticity",
               "nebula", "checkpoint", "aio", "data_efficiency", "curriculum_learning", "compression_training",
               "comms_logger", "monitor_config"}
DS_PATHISH = re.compile(r"(path|dir|file|folder|url|uri|host|endpoint|project|team)$", re.IGNORECASE)


def confine_config(cfg: PipelineConfig, data_roots: list[str], policy: PathPolicy) -> None:
    """Check (and make absolute) every path-like key of `cfg` in place; ConfigError names the key."""
    confine_data_paths(cfg, data_roots, policy.hub_datasets)
    for key, value in model_keys(cfg):
        setter_key, resolved = key, confine_model(key, value, policy)
        _set(cfg, setter_key, resolved)
    scales = [("align.scale", cfg.align.scale)]
    if cfg.signals.train is not None:
        scales.append(("signals.train.scale", cfg.signals.train.scale))
    for key, scale in scales:
        if scale.storage_path is not None:
            scale.storage_path = confine_storage(f"{key}.storage_path", scale.storage_path, cfg.job_dir, policy)
        if scale.deepspeed is not None:
            confine_deepspeed(f"{key}.deepspeed", scale.deepspeed, policy)
    confine_endpoint("evaluate.endpoint.url", cfg.evaluate.endpoint.url, policy)
    uri = cfg.tracking.uri
    if uri and not any(_uri_under(uri, p) for p in policy.tracking_uris):
        # the driver writes to it (a file: store anywhere, or any server): the operator's choice
        raise ConfigError(f"tracking.uri: {uri!r} is not one of this service's tracking URIs "
                          f"({', '.join(policy.tracking_uris) or 'none: leave it empty for the job folder store'})",
                          key="tracking.uri")


def model_keys(cfg: PipelineConfig) -> list[tuple[str, str]]:
    """(key, value) of every model the config names that the job will load."""
    out = [("model", cfg.model)]
    if cfg.kind == "pipeline":  # an eval job runs no decide, signals or classifier stage
        if cfg.decide.safe_model is not None:
            out.append(("decide.safe_model", cfg.decide.safe_model))
        if cfg.signals.train is None:
            out.append(("signals.classifier", cfg.signals.classifier))
        else:
            out.append(("signals.train.model.backbone", cfg.signals.train.model.backbone))
    for i, judge in enumerate(cfg.evaluate.judges):
        if judge.kind != "string_match" and judge.path != SIGNALS_JUDGE:
            out.append((f"evaluate.judges[{i}].path", judge.path))
    out += [(f"evaluate.adapters[{i}]", path) for i, path in enumerate(cfg.evaluate.adapters)]
    return out


def _allowed(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def confine_model(key: str, value: str, policy: PathPolicy) -> str:
    """The value to load: an embedded name or allowed hub id unchanged, a local folder
    under a model root made absolute (symlinks followed); ConfigError otherwise."""
    if value.startswith(EMBEDDED):
        return value
    if HUB_ID.fullmatch(value) and _allowed(value, policy.hub_models):
        return value
    local = _under_model_roots(value, policy.model_roots)
    if local is not None:
        return str(local)
    allowed = [f"embedded: models", f"hub ids {policy.hub_models}" if policy.hub_models else "no hub ids",
               f"folders under {policy.model_roots}" if policy.model_roots else "no local folders"]
    raise ConfigError(f"{key}: {value!r} is not an allowed model ({'; '.join(allowed)}): ask the operator to add "
                      "it to paths.hub_models or paths.model_roots", key=key)


def _under_model_roots(value: str, model_roots: list[str]) -> Path | None:
    """The real path (symlinks followed) of `value`, absolute or relative to a root, when it
    exists inside one of the roots; None otherwise."""
    roots = [Path(os.path.realpath(r)) for r in model_roots]
    raw = Path(value)  # no `~`: the service's home is not the caller's
    candidates = [raw] if raw.is_absolute() else [Path(r) / raw for r in model_roots]
    for c in candidates:
        real = real_path(c)
        if real is not None and any(_inside(real, r) for r in roots) and exists(real):
            return real
    return None


def confine_model_dir(key: str, value: str, policy: PathPolicy) -> str:
    """A local classifier folder to register (POST /v1/models): confined like a job's local
    model (under paths.model_roots, symlinks followed, made absolute); no hub ids or
    embedded names. ConfigError names the key otherwise."""
    local = _under_model_roots(value, policy.model_roots)
    if local is None or not local.is_dir():
        roots = f"folders under {policy.model_roots}" if policy.model_roots else "none: paths.model_roots is empty"
        raise ConfigError(f"{key}: {value!r} is not a folder under the service's model roots ({roots})", key=key)
    return str(local)


def confine_storage(key: str, value: str, job_dir: str, policy: PathPolicy) -> str:
    """Checkpoint storage: inside the job's folder, or under an allow-listed URI/folder."""
    for allowed in policy.storage_uris:
        if _uri_under(value, allowed):
            return value
    if "://" not in value:
        job = Path(os.path.realpath(job_dir))
        if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", value):  # a plain name: a folder in the job's
            return str(job / value)
        real = real_path(value)
        if Path(value).is_absolute() and real is not None and _inside(real, job):
            return str(real)
    raise ConfigError(f"{key}: {value!r} is not allowed: use a folder name (it goes in the job's folder) or a "
                      f"location under the operator's paths.storage_uris ({policy.storage_uris or 'none'})", key=key)


def _uri_under(value: str, allowed: str) -> bool:
    v, a = urlsplit(value), urlsplit(allowed)
    if (v.scheme, v.netloc) != (a.scheme, a.netloc) or parse_qs(v.query) != parse_qs(a.query):
        return False
    if not v.scheme:  # a local folder prefix
        real = real_path(value)
        return real is not None and _inside(real, Path(os.path.realpath(allowed)))
    vp, ap = v.path.rstrip("/").split("/"), a.path.rstrip("/").split("/")
    return vp[:len(ap)] == ap and ".." not in vp


def confine_deepspeed(key: str, ds: dict, policy: PathPolicy) -> None:
    for path in _ds_reaching_out(ds):
        if not any(path == k or path.startswith(k + ".") for k in policy.deepspeed_keys):
            raise ConfigError(f"{key}.{path}: DeepSpeed keys that write files or reach the network are not allowed "
                              f"unless the operator lists them in paths.deepspeed_keys", key=f"{key}.{path}")


def _ds_reaching_out(obj, prefix: str = "") -> list[str]:
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            path = f"{prefix}.{k}" if prefix else str(k)
            if (not prefix and k in DS_SECTIONS) or (DS_PATHISH.search(str(k)) and v not in (None, "", False)):
                out.append(path)
            else:
                out += _ds_reaching_out(v, path)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _ds_reaching_out(v, f"{prefix}[{i}]")
    return out


def confine_endpoint(key: str, url: str, policy: PathPolicy) -> None:
    """An endpoint to evaluate is a request the job sends from inside the cluster: only to
    servers the operator listed (`paths.endpoints`, URL prefixes)."""
    if url and not any(_uri_under(url, allowed) for allowed in policy.endpoints):
        raise ConfigError(f"{key}: {url!r} is not an allowed endpoint ({policy.endpoints or 'none are'}): ask the "
                          "operator to add it to paths.endpoints", key=key)


def _set(cfg, key: str, value: str) -> None:
    *parents, last = re.findall(r"[^.\[\]]+", key)
    obj = cfg
    for part in parents:
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    if last.isdigit():  # a list item (evaluate.adapters[0])
        obj[int(last)] = value
    else:
        setattr(obj, last, value)
