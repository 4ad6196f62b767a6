"""`presafe preflight`: will this config work here, and does it fit the GPUs? Nothing is
generated or trained and no weights are loaded (config.json, the tokenizer, a
meta-device skeleton), so it runs in seconds on a CPU machine, even for an 8B model.

    presafe preflight --config jobs/configs/gpu/qwen3_8b.yaml resources.gpu_memory_gb=24

Checks, in order (the first that fails exits 2 with one line naming the key):
1. every model the job generates with (`model`, `decide.safe_model`) resolves: an embedded
   name, a local folder with weights, or a hub id (offline: it must be in the local cache);
   its tokenizer loads;
2. the prompts: one rendered with CoT on and one with CoT off per model; t* is the last
   token of the CoT-ON prompt, the CoT-OFF prompt extends it with a closed think block,
   and the CoT-ON prompt holds exactly the `<think>` its family writes (r1: one, at the
   end; qwen3: none, the model opens it; generic: what `template.cot_on_prefix` holds);
3. LoRA target modules and aux layers exist in the model;
4. the memory plan (jobs.memory): every stage's batch x length against
   `resources.gpu_memory_gb`, auto batch sizes picked.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from jobs.config import load_config
from jobs.errors import ConfigError, PresafeError
from jobs.memory import GB, PlanRow, model_shape_of, plan_memory
from jobs.pipeline_config import PipelineConfig
from jobs.templates import render_prompt

SAMPLE_PROMPT = "What is 2 + 3?"
WEIGHT_FILES = ("*.safetensors", "*.bin", "*.pt")


@dataclass
class ModelCheck:
    key: str
    name: str
    resolved: str
    """The folder `from_pretrained` reads, or the hub id."""
    note: str = ""


@dataclass
class PromptCheck:
    key: str
    name: str
    family: str
    on_tokens: int
    off_tokens: int
    t_star: int
    t_star_token: str
    tail: str
    """The end of the CoT-ON prompt text."""
    think_open_in_on: int
    think_token: str
    """How the tokenizer holds `<think>`: one special token, or pieces."""


@dataclass
class Preflight:
    source: str
    models: list[ModelCheck] = field(default_factory=list)
    prompts: list[PromptCheck] = field(default_factory=list)
    plan: list[PlanRow] = field(default_factory=list)
    gpu_memory_gb: float | None = None


def run_preflight(config: str, overrides: list[str] | None = None, out=print) -> int:
    """The CLI's `presafe preflight`: print the checks and the plan; 0 when all is well.
    A problem raises ConfigError (the CLI prints it as one line, exit 2)."""
    cfg = load_config(PipelineConfig, config, overrides or [])
    report = Preflight(source=config, gpu_memory_gb=cfg.resources.gpu_memory_gb)
    try:
        problem = preflight(cfg, report)
    except PresafeError as e:
        out(format_report(report))
        raise type(e)(f"{config}: {e}") from None
    out(format_report(report))
    if problem:
        raise ConfigError(f"{config}: {problem.problem}", key=problem.batch_key)
    out("preflight: ok")
    return 0


def preflight(cfg: PipelineConfig, report: Preflight) -> PlanRow | None:
    """Fill `report`; raise PresafeError for a model, tokenizer or template that will not
    work; return the first plan row that does not fit (None when all fit)."""
    from jobs.align.model import check_against_model

    names = [("model", cfg.model)] + ([("decide.safe_model", cfg.decide.safe_model)] if cfg.decide.safe_model else [])
    for key, name in names:
        check = resolve(key, name)
        report.models.append(check)
        report.prompts.append(check_prompts(key, name, check.resolved, cfg))
    try:
        check_against_model(cfg.align, cfg.model)
    except ConfigError as e:
        raise ConfigError(f"{e} (model {cfg.model})", key=e.key) from None
    report.plan = plan_memory(cfg, model_shape_of)
    template_tokens = max(p.on_tokens for p in report.prompts)
    if template_tokens >= cfg.resources.prompt_tokens:
        raise ConfigError(f"resources.prompt_tokens={cfg.resources.prompt_tokens}: the chat template alone takes "
                          f"{template_tokens} tokens; raise it", key="resources.prompt_tokens")
    return next((row for row in report.plan if row.problem), None)


def resolve(key: str, name: str) -> ModelCheck:
    """Where `name` comes from; raise PresafeError (naming `key`) when it cannot be had."""
    from jobs.models.embedded import PREFIX, architecture_source, resolve_model

    if name.startswith(PREFIX):
        try:
            return ModelCheck(key, name, resolve_model(name, prepare=False), "embedded")
        except PresafeError as e:
            if "unknown embedded model" in str(e):
                raise ConfigError(f"{key}: {e}", key=key) from None
            # Not prepared yet: it is built on first use; its architecture is known now.
            return ModelCheck(key, name, architecture_source(name), f"embedded, prepared on first use ({e})")
    path = Path(name).expanduser()
    if path.is_dir():
        if not any(next(path.glob(p), None) for p in WEIGHT_FILES):
            raise ConfigError(f"{key}: folder {name} holds no weights ({', '.join(WEIGHT_FILES)})", key=key)
        if not (path / "config.json").is_file():
            raise ConfigError(f"{key}: folder {name} has no config.json", key=key)
        return ModelCheck(key, name, str(path), "local folder")
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ConfigError(f"{key}: {name} is neither a folder nor a hub id (org/name)", key=key)
    return _hub(key, name)


def _hub(key: str, name: str) -> ModelCheck:
    from huggingface_hub import try_to_load_from_cache
    from transformers import AutoConfig

    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes") or \
        os.environ.get("TRANSFORMERS_OFFLINE", "").lower() in ("1", "true", "yes")
    try:
        AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as e:
        if offline:
            raise ConfigError(f"{key}: {name!r}: cannot reach the hub (HF_HUB_OFFLINE is set) and it is not in the "
                              f"local cache; download it where the hub is reachable (`hf download {name}`) or set "
                              f"{key} to a local folder", key=key) from None
        raise ConfigError(f"{key}: {name!r}: cannot reach the hub or not a model there: "
                          f"{str(e).splitlines()[0]}", key=key) from None
    cached = [f for f in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                          "pytorch_model.bin.index.json") if isinstance(try_to_load_from_cache(name, f), str)]
    if not cached:
        if offline:
            raise ConfigError(f"{key}: {name!r}: its config is cached but not its weights, and the hub cannot be "
                              f"reached (HF_HUB_OFFLINE is set); download them first (`hf download {name}`)", key=key)
        return ModelCheck(key, name, name, "hub id; weights download on first use")
    return ModelCheck(key, name, name, "hub id, in the local cache")


def check_prompts(key: str, name: str, resolved: str, cfg: PipelineConfig) -> PromptCheck:
    """Render one prompt with CoT on and off; raise ConfigError when t* or the think
    block is not where the method needs it."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(resolved)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{key}: {name!r}: cannot load its tokenizer: {str(e).splitlines()[0]}", key=key) from None
    t = cfg.template
    on = render_prompt(tok, SAMPLE_PROMPT, cot=True, cfg=t)
    off = render_prompt(tok, SAMPLE_PROMPT, cot=False, cfg=t)
    opens = on.text.count(t.think_open)
    expected = {"r1": 1, "qwen3": 0}.get(on.family, t.cot_on_prefix.count(t.think_open))
    fkey = "template.family" if on.family in ("r1", "qwen3") else "template.cot_on_prefix"
    if opens != expected:
        raise ConfigError(f"{fkey}: the CoT-ON prompt of {name} (family {on.family}) holds {opens} "
                          f"{t.think_open!r}, expected {expected}: {on.text[-80:]!r}", key=fkey)
    if on.family == "r1" and not on.text.endswith(t.think_open + "\n"):
        raise ConfigError(f"template.family: the r1 CoT-ON prompt of {name} must end with "
                          f"{t.think_open + chr(10)!r}: {on.text[-80:]!r}", key="template.family")
    if on.t_star != len(on.input_ids) - 1:
        raise ConfigError(f"template: t* of {name} is token {on.t_star}, not the last CoT-ON prompt token "
                          f"({len(on.input_ids) - 1})", key="template")
    if not off.text.startswith(on.text) or t.think_close not in off.text[len(on.text):]:
        okey = "template.family" if on.family in ("r1", "qwen3") else "template.cot_off_prefix"
        raise ConfigError(f"{okey}: the CoT-OFF prompt of {name} does not extend the CoT-ON prompt with a closed "
                          f"think block: {off.text[-80:]!r}", key=okey)
    think_ids = tok(t.think_open, add_special_tokens=False)["input_ids"]
    return PromptCheck(key=key, name=name, family=on.family, on_tokens=len(on.input_ids),
                       off_tokens=len(off.input_ids), t_star=on.t_star,
                       t_star_token=tok.decode([on.input_ids[on.t_star]]), tail=on.text[-24:], think_open_in_on=opens,
                       think_token="one token" if len(think_ids) == 1 else f"{len(think_ids)} tokens")


def format_report(r: Preflight) -> str:
    lines = [f"preflight: {r.source}"]
    for m in r.models:
        lines.append(f"  {m.key:18} {m.name} -> {m.resolved} ({m.note})")
    for p in r.prompts:
        lines.append(f"  {'prompts':18} {p.name}: family {p.family}; CoT on {p.on_tokens} tokens, CoT off "
                     f"{p.off_tokens}; t* = {p.t_star} (last CoT-ON prompt token {p.t_star_token!r}); "
                     f"<think> in the CoT-ON prompt: {p.think_open_in_on} ({p.think_token}); it ends {p.tail!r}")
    if not r.plan:
        return "\n".join(lines)
    lines.append(f"  {'GPU memory':18} " + (f"{r.gpu_memory_gb:g} GB per GPU (resources.gpu_memory_gb)"
                                            if r.gpu_memory_gb else
                                            "none declared (resources.gpu_memory_gb): sizes shown, nothing checked"))
    header = ("stage", "engine / resources", "batch", "tokens", "weights", "KV cache", "other", "total", "budget", "")
    table = [header]
    for row in r.plan:
        weights = row.parts.get("weights", 0) + row.parts.get("gathered_layers", 0)
        kv = row.parts.get("kv_cache")
        other = row.total - weights - (kv or 0)
        tokens = f"{row.prompt_tokens}+{row.new_tokens}" if row.new_tokens else f"{row.prompt_tokens}"
        verdict = "-" if row.budget is None else ("NO" if row.problem else "ok")
        table.append((row.stage, row.where, f"{row.batch}{' (auto)' if row.auto else ''}", tokens, _gb(weights),
                      "-" if kv is None else _gb(kv), _gb(other), _gb(row.total),
                      "-" if row.budget is None else _gb(row.budget), verdict))
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        lines.append("  " + "  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
    lines.append("  (tokens: prompt+new for generation, max_length for training; other: activations, "
                 "LoRA + optimizer, logits, overhead; estimates, see jobs/memory.py)")
    return "\n".join(lines)


def _gb(nbytes: float) -> str:
    return f"{nbytes / GB:.1f} GB" if nbytes >= 0.1 * GB else f"{nbytes / 1e6:.1f} MB"
