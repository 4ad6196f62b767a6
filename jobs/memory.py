"""A memory plan from the model's config alone (no weights): parameters, weight bytes,
KV-cache bytes per token, and per-GPU estimates for every stage that holds the model.

    presafe preflight --config jobs/configs/gpu/qwen3_8b.yaml resources.gpu_memory_gb=24

The arithmetic (bytes; GB = 1e9 bytes, as in the README's "GPU configs" table), with
w = bytes per weight (cfg.dtype), P = parameters, L = layers, h = hidden, i = intermediate:

- KV cache per token = 2 (K and V) x L x kv_heads x head_dim x w (GQA: kv_heads =
  `num_key_value_heads`; head_dim = `head_dim` or h / heads).
- generation, per actor: P x w (weights) + batch x (prompt + max_new_tokens) x KV/token
  + the activation margin: the prefill's working set, batch x prompt x (4h + 2i) x w, its
  attention scores, batch x heads x prompt^2 x w (masked SDPA materialises them), and two
  fp32 [batch, vocab] tensors per step (logits, probabilities) + `resources.overhead_gb`.
- generation with vLLM (`generation.engine: vllm`), per GPU of an engine: vLLM takes
  `generation.vllm.gpu_memory_utilization` x the GPU; weights P x w / tensor_parallel_size
  and the overhead come out of it, the rest is the KV-cache pool. The batch shown is how
  many sequences of prompt + max_new_tokens that pool holds at once (<= max_num_seqs);
  the plan fails when the weights do not fit or the pool cannot hold one sequence.
- training, per GPU (LoRA, micro-batch b x T = align.train.max_length tokens, N workers):
  base weights P x w / N under ZeRO-3 (else P x w) + two gathered layers under ZeRO-3 (the
  one computing, the one prefetched) + LoRA parameters x 16 bytes (weight, fp32 master
  copy, two Adam moments, gradient) + activations + fp32 logits b x T x vocab x 4 (every
  position a target, the worst case) + `resources.overhead_gb`. Activations with gradient
  checkpointing: (L + 1) hidden states b x T x h x w plus one layer recomputed and its
  backward, 2 x b x T x (16h + 5i) x w; without: L + 1 such layers.

Estimates, not measurements: they decide whether a config can work on the declared GPU
before hours of work, and pick `batch_size: 0` (auto) as the largest batch that fits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from jobs.config import check
from jobs.errors import ConfigError

if TYPE_CHECKING:
    from jobs.pipeline_config import EvaluateConfig, PipelineConfig

GB = 1e9
EVAL_SETS = ("harmful", "benign", "reasoning")
MAX_AUTO_BATCH = 256
"""Auto batch sizes stop here: past it a bigger batch buys little on one GPU."""
OPTIMIZER_BYTES = 16
"""Per trainable (LoRA) parameter: weight, fp32 master copy, two Adam moments, gradient."""
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass
class ResourcesConfig:
    """What each GPU offers, for the memory plan (jobs.memory, `presafe preflight`)."""

    gpu_memory_gb: float | None = None
    """Memory of each GPU the job runs on, in GB: 24 for A10G / L4, 40 or 80 for A100, 80
    for H100. Generation actors (a share when gpus_per_actor < 1), the evaluate stage and
    GPU training workers are sized against it, and a plan that does not fit stops before
    the first stage, naming the keys. None = no GPU declared (CPU runs): nothing is
    checked, and `batch_size: 0` (auto) is refused."""
    prompt_tokens: int = 512
    """The longest rendered prompt (chat template included) the plan allows for, in tokens."""
    overhead_gb: float = 1.5
    """Kept free in every GPU process: the CUDA context and the allocator's fragmentation."""

    def validate(self) -> None:
        check(self.gpu_memory_gb is None or self.gpu_memory_gb > 0, "gpu_memory_gb", "must be > 0 (or null: no GPU)")
        check(self.prompt_tokens >= 1, "prompt_tokens", "must be >= 1")
        check(self.overhead_gb >= 0, "overhead_gb", "must be >= 0")


@dataclass
class SetTokens:
    """Per evaluation set `max_new_tokens`: refusals and short answers need far fewer tokens
    than MATH-500's chains of thought. Unset = `evaluate.max_new_tokens`."""

    harmful: int | None = None
    benign: int | None = None
    reasoning: int | None = None

    def validate(self) -> None:
        for kind in EVAL_SETS:
            check(getattr(self, kind) is None or getattr(self, kind) >= 1, kind, "must be >= 1")


@dataclass
class SetBatchSizes:
    """Per evaluation set batch size. Unset = `evaluate.batch_size`; 0 = auto: the largest
    batch whose KV cache at that set's max_new_tokens fits `resources.gpu_memory_gb`."""

    harmful: int | None = None
    benign: int | None = None
    reasoning: int | None = None

    def validate(self) -> None:
        for kind in EVAL_SETS:
            check(getattr(self, kind) is None or getattr(self, kind) >= 0, kind, "must be >= 0 (0 = auto)")


def max_new_tokens_for(e: EvaluateConfig, kind: str) -> int:
    """The evaluation's max_new_tokens for set `kind` (harmful | benign | reasoning)."""
    value = getattr(e.max_new_tokens_by_set, kind)
    return e.max_new_tokens if value is None else value


def batch_size_for(e: EvaluateConfig, kind: str) -> int:
    """The evaluation's batch size for set `kind` (0 = auto until `check_memory` resolves it)."""
    value = getattr(e.batch_size_by_set, kind)
    return e.batch_size if value is None else value


@dataclass
class ModelShape:
    """What the memory plan needs of an architecture, read from its config and a
    meta-device skeleton (no weights)."""

    name: str
    model_type: str
    params: int
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    layer_params: int
    """Parameters of the largest decoder layer (what ZeRO-3 gathers at once)."""
    linear_dims: dict[str, int] = field(default_factory=dict)
    """Linear module name suffix -> sum of in_features + out_features over the model's
    modules of that name: a LoRA of rank r on them adds r x that many parameters."""
    config_dtype: str | None = None

    def lora_params(self, r: int, targets: list[str]) -> int:
        return r * sum(self.linear_dims.get(t, 0) for t in targets)


def shape_from_config(config, name: str = "") -> ModelShape:
    """A ModelShape from a transformers config: counts come from the architecture built on
    the meta device, so tied embeddings and biases are counted as the model has them."""
    import torch
    from torch import nn
    from transformers import AutoModelForCausalLM

    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    params = sum(p.numel() for p in skeleton.parameters())
    per_layer: dict[int, int] = {}
    for pname, p in skeleton.named_parameters():
        m = re.search(r"\.layers\.(\d+)\.", pname)
        if m:
            per_layer[int(m.group(1))] = per_layer.get(int(m.group(1)), 0) + p.numel()
    linear: dict[str, int] = {}
    for mname, mod in skeleton.named_modules():
        if isinstance(mod, nn.Linear):
            suffix = mname.rsplit(".", 1)[-1]
            linear[suffix] = linear.get(suffix, 0) + mod.in_features + mod.out_features
    heads = text.num_attention_heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    dtype = getattr(text, "dtype", None) or getattr(text, "torch_dtype", None)
    return ModelShape(name=name, model_type=text.model_type, params=params, layers=text.num_hidden_layers,
                      hidden=text.hidden_size, intermediate=getattr(text, "intermediate_size", 4 * text.hidden_size),
                      heads=heads, kv_heads=kv_heads, head_dim=head_dim, vocab=text.vocab_size,
                      layer_params=max(per_layer.values(), default=0), linear_dims=linear,
                      config_dtype=str(dtype).replace("torch.", "") if dtype is not None else None)


def model_shape_of(name_or_path: str) -> ModelShape:
    """The ModelShape of a hub id, folder or embedded name (its config.json only)."""
    from transformers import AutoConfig

    from jobs.models.embedded import architecture_source

    try:
        config = AutoConfig.from_pretrained(architecture_source(name_or_path))
    except (OSError, ValueError) as e:
        raise ConfigError(f"model {name_or_path!r}: cannot read its config: {e}") from None
    return shape_from_config(config, name_or_path)


def dtype_bytes(dtype: str, shape: ModelShape) -> int:
    """Bytes per weight of `dtype` (auto: the config's dtype, else float32 as transformers loads)."""
    if dtype == "auto":
        dtype = shape.config_dtype or "float32"
    return DTYPE_BYTES.get(dtype, 4)


def kv_bytes_per_token(shape: ModelShape, nbytes: int) -> int:
    """K and V of every layer for one token: 2 x layers x kv_heads x head_dim x bytes."""
    return 2 * shape.layers * shape.kv_heads * shape.head_dim * nbytes


def generation_parts(shape: ModelShape, nbytes: int, batch: int, prompt: int, new: int,
                     overhead_gb: float) -> dict[str, float]:
    """Bytes one generation process needs, by part (see the module docstring)."""
    activations = (batch * prompt * (4 * shape.hidden + 2 * shape.intermediate) * nbytes
                   + batch * shape.heads * prompt * prompt * nbytes
                   + 2 * batch * shape.vocab * 4)
    return {"weights": shape.params * nbytes, "kv_cache": batch * (prompt + new) * kv_bytes_per_token(shape, nbytes),
            "activations": activations, "overhead": overhead_gb * GB}


def largest_batch(shape: ModelShape, nbytes: int, prompt: int, new: int, budget: float, overhead_gb: float) -> int:
    """The largest batch (<= MAX_AUTO_BATCH) whose generation fits `budget` bytes; 0 if none."""
    fixed = sum(generation_parts(shape, nbytes, 0, prompt, new, overhead_gb).values())
    per_seq = sum(generation_parts(shape, nbytes, 1, prompt, new, 0).values()) - shape.params * nbytes
    return max(0, min(MAX_AUTO_BATCH, int((budget - fixed) // per_seq)))


def training_parts(shape: ModelShape, nbytes: int, lora_r: int, lora_targets: list[str], micro_batch: int,
                   seq_len: int, workers: int, zero_stage: int, checkpointing: bool,
                   overhead_gb: float) -> dict[str, float]:
    """Bytes one training worker's GPU needs, by part (see the module docstring)."""
    n = max(1, workers)
    zero3 = zero_stage == 3
    tokens = micro_batch * seq_len
    layer = tokens * (16 * shape.hidden + 5 * shape.intermediate) * nbytes
    hidden_states = (shape.layers + 1) * tokens * shape.hidden * nbytes
    activations = hidden_states + (2 * layer if checkpointing else (shape.layers + 1) * layer)
    return {
        "weights": shape.params * nbytes / (n if zero3 else 1),
        "gathered_layers": 2 * shape.layer_params * nbytes if zero3 else 0,
        "lora_optimizer": shape.lora_params(lora_r, lora_targets) * OPTIMIZER_BYTES,
        "activations": activations,
        "logits": tokens * shape.vocab * 4,
        "overhead": overhead_gb * GB,
    }


@dataclass
class PlanRow:
    """One stage (or evaluation set) of the memory plan."""

    stage: str
    model: str
    where: str
    """Engine and resources, e.g. 'hf, Ray Data pool: 4 actors x (4 CPU, 1 GPU)'."""
    batch: int
    prompt_tokens: int
    new_tokens: int
    parts: dict[str, float]
    budget: float | None
    """Bytes this process may use (None: CPU or no GPU declared: not checked)."""
    batch_key: str
    token_key: str
    auto_key: str = ""
    """The key that asks for an auto batch here (= 0)."""
    auto: bool = False
    """The batch was 0 (auto) in the config and the plan picked it."""
    largest: int | None = None
    """The largest batch that fits the budget (generation rows)."""
    problem: str | None = None

    @property
    def total(self) -> float:
        return sum(self.parts.values())


def plan_memory(cfg: PipelineConfig, shape_of: Callable[[str], ModelShape] = model_shape_of) -> list[PlanRow]:
    """The memory plan of every stage that holds the LRM; rows that cannot work carry a
    `problem` (one line naming the keys). Auto batch sizes (0) are picked here, not applied."""
    res = cfg.resources
    budget = res.gpu_memory_gb * GB if res.gpu_memory_gb else None
    budget_key = f"resources.gpu_memory_gb={res.gpu_memory_gb:g}" if res.gpu_memory_gb else "resources.gpu_memory_gb"
    shapes: dict[str, ModelShape] = {}

    def shape(name: str) -> ModelShape:
        if name not in shapes:
            shapes[name] = shape_of(name)
        return shapes[name]

    d = cfg.decide
    eng = cfg.generation.engine
    if d.num_actors:
        gpu = f", {d.gpus_per_actor:g} GPU" if d.gpus_per_actor else ""
        actors = f"{eng}, Ray actor pool: {d.num_actors} actors x ({d.cpus_per_actor:g} CPU{gpu})"
        actor_budget = budget * min(1.0, d.gpus_per_actor) if budget and d.gpus_per_actor else None
    else:
        actors, actor_budget = f"{eng}, in-process (driver)", budget
    if eng == "vllm":
        # one GPU of an engine; tensor parallelism splits the weights and the KV cache
        actor_budget = budget if budget and (not d.num_actors or d.gpus_per_actor) else None
    generations = [("decide", d.safe_model or cfg.model, d.generation, "decide.generation", actors, actor_budget)]
    t = cfg.targets
    if t.comply_source != "reference":
        generations.append(("targets (self-generation)", cfg.model, t.self_generation, "targets.self_generation",
                            actors, actor_budget))
    if t.refusal_thinking == "generated":
        generations.append(("targets (safety rationales)", cfg.model, t.rationale_generation,
                            "targets.rationale_generation", actors, actor_budget))
    if eng == "vllm":
        rows = [_vllm_row(cfg, stage, model, gen.max_new_tokens, f"{key}.max_new_tokens", where, proc_budget,
                          shape(model), budget_key) for stage, model, gen, key, where, proc_budget in generations]
    else:
        rows = [_generation_row(stage, model, cfg.dtype, gen.batch_size, gen.max_new_tokens, f"{key}.batch_size",
                                f"{key}.max_new_tokens", where, proc_budget, shape(model), res, budget_key,
                                "decide.gpus_per_actor" if d.num_actors else None)
                for stage, model, gen, key, where, proc_budget in generations]

    e = cfg.evaluate
    if e.enabled:
        for kind in EVAL_SETS:
            if not getattr(e, kind):
                continue
            by_set_batch = getattr(e.batch_size_by_set, kind) is not None
            by_set_tokens = getattr(e.max_new_tokens_by_set, kind) is not None
            if eng == "vllm":
                rows.append(_vllm_row(cfg, f"evaluate ({kind})", cfg.model, max_new_tokens_for(e, kind),
                                      f"evaluate.max_new_tokens_by_set.{kind}" if by_set_tokens
                                      else "evaluate.max_new_tokens", actors, actor_budget, shape(cfg.model),
                                      budget_key))
                continue
            rows.append(_generation_row(
                f"evaluate ({kind})", cfg.model, cfg.dtype, batch_size_for(e, kind), max_new_tokens_for(e, kind),
                f"evaluate.batch_size_by_set.{kind}" if by_set_batch else "evaluate.batch_size",
                f"evaluate.max_new_tokens_by_set.{kind}" if by_set_tokens else "evaluate.max_new_tokens",
                "hf, in-process (driver)", budget, shape(cfg.model), res, budget_key, None,
                auto_key=f"evaluate.batch_size_by_set.{kind}"))

    a, s = cfg.align, cfg.align.scale
    sh = shape(cfg.model)
    nbytes = dtype_bytes(cfg.dtype, sh)
    stage_zero = max(0, s.zero_stage)
    parts = training_parts(sh, nbytes, a.lora.r, a.lora.target_modules, a.train.batch_size, a.train.max_length,
                           s.num_workers, stage_zero, a.train.gradient_checkpointing,
                           res.overhead_gb if s.use_gpu else 0)
    where = (f"Ray Train: {s.num_workers} workers x ({s.cpus_per_worker:g} CPU{', 1 GPU' if s.use_gpu else ''})"
             if s.num_workers else "in-process") + (f", ZeRO-{stage_zero}" if s.deepspeed else "")
    train_budget = budget if s.use_gpu else None
    row = PlanRow("align (per worker)", cfg.model, where, a.train.batch_size, a.train.max_length, 0, parts,
                  train_budget, "align.train.batch_size", "align.train.max_length")
    if train_budget is not None and row.total > train_budget:
        row.problem = (f"align does not fit {budget_key} per GPU: {_breakdown(parts)} = {_gb(row.total)} per worker "
                       f"(align.train.batch_size={a.train.batch_size} x align.train.max_length={a.train.max_length} "
                       f"tokens, align.scale.num_workers={s.num_workers}, "
                       f"align.scale.deepspeed.zero_optimization.stage={stage_zero}, "
                       f"align.train.gradient_checkpointing={str(a.train.gradient_checkpointing).lower()}); "
                       f"lower the batch or max_length, turn on gradient checkpointing, use ZeRO-3 over more "
                       f"workers, or raise resources.gpu_memory_gb")
    rows.append(row)
    return rows


def _generation_row(stage, model, dtype, batch, new, batch_key, token_key, where, budget, shape, res, budget_key,
                    share_key, auto_key: str = "") -> PlanRow:
    nbytes = dtype_bytes(dtype, shape)
    prompt = res.prompt_tokens
    row = PlanRow(stage, model, where, batch, prompt, new, {}, budget, batch_key, token_key, auto_key or batch_key,
                  auto=batch == 0)
    if budget is not None:
        row.largest = largest_batch(shape, nbytes, prompt, new, budget, res.overhead_gb)
    if row.auto:
        if budget is None:
            why = (f"it runs on CPU ({share_key}=0)" if share_key and res.gpu_memory_gb
                   else "declare resources.gpu_memory_gb")
            row.problem = f"{batch_key}=0 (auto) sizes the batch against GPU memory, but {why}; or give a batch size"
        elif row.largest:
            row.batch = row.largest
    row.parts = generation_parts(shape, nbytes, row.batch, prompt, new, res.overhead_gb if budget else 0)
    if row.problem is None and budget is not None and (row.total > budget or not row.largest):
        kv = kv_bytes_per_token(shape, nbytes)
        share = f" (a {share_key} share of the GPU)" if share_key and budget < res.gpu_memory_gb * GB else ""
        fix = (f"the largest batch that fits is {row.largest} (or {row.auto_key}=0 for auto); lower {batch_key} or "
               f"{token_key}, or raise resources.gpu_memory_gb" if row.largest else
               f"no batch fits: the weights alone need {_gb(shape.params * nbytes)}; use a bigger GPU "
               f"(resources.gpu_memory_gb) or a smaller dtype")
        row.problem = (f"{stage} does not fit {budget_key}{share}: {_breakdown(row.parts)} = {_gb(row.total)}; "
                       f"KV cache = {batch_key}={row.batch} x ({prompt} prompt [resources.prompt_tokens] + {new} new "
                       f"[{token_key}]) tokens x {kv} bytes/token (model {model}); {fix}")
    return row


def _vllm_row(cfg, stage, model, new, token_key, where, budget, shape, budget_key) -> PlanRow:
    """A generation stage on vLLM: weights and the preallocated KV-cache pool per GPU."""
    v, res = cfg.generation.vllm, cfg.resources
    nbytes = dtype_bytes(v.dtype or cfg.dtype, shape)
    tp = v.tensor_parallel_size
    prompt = res.prompt_tokens
    where = f"{where}; tp {tp}, gpu_memory_utilization {v.gpu_memory_utilization:g}"
    weights = shape.params * nbytes / tp
    seq = (prompt + new) * kv_bytes_per_token(shape, nbytes) / tp
    row = PlanRow(stage, model, where, v.max_num_seqs, prompt, new, {"weights": weights}, budget,
                  "generation.vllm.max_num_seqs", token_key)
    if v.max_model_len and v.max_model_len < prompt + new:
        row.problem = (f"{stage}: generation.vllm.max_model_len={v.max_model_len} is shorter than "
                       f"resources.prompt_tokens={prompt} + {token_key}={new}; raise it (or 0 = the model's limit)")
    if budget is None:
        return row
    taken = v.gpu_memory_utilization * budget
    pool = taken - weights - res.overhead_gb * GB
    row.parts.update(kv_cache=max(0.0, pool), overhead=res.overhead_gb * GB)
    row.batch = row.largest = max(0, min(v.max_num_seqs, int(pool // seq))) if pool > 0 else 0
    if row.problem is None and row.batch < 1:
        row.problem = (f"{stage} does not fit generation.vllm.gpu_memory_utilization={v.gpu_memory_utilization:g} x "
                       f"{budget_key}: weights {_gb(weights)} per GPU (generation.vllm.tensor_parallel_size={tp}) + "
                       f"overhead {res.overhead_gb:g} GB leave {_gb(max(0.0, pool))} of KV cache, less than one "
                       f"sequence of {prompt} + {new} [{token_key}] tokens ({_gb(seq)}); raise "
                       f"generation.vllm.tensor_parallel_size or gpu_memory_utilization, or lower {token_key}")
    return row


def check_memory(cfg: PipelineConfig, shape_of: Callable[[str], ModelShape] = model_shape_of) -> list[PlanRow]:
    """The pre-run memory check: raise ConfigError (one line, naming the keys) when a stage
    cannot fit the declared GPU memory; otherwise write the auto batch sizes it picked
    into `cfg` (so the stages, and the job's recorded config, see them) and return the plan."""
    rows = plan_memory(cfg, shape_of)
    for row in rows:
        if row.problem:
            raise ConfigError(row.problem, key=row.batch_key)
    for row in rows:
        if row.auto:
            _set(cfg, row.batch_key, row.batch)
    return rows


def _set(cfg, dotted: str, value: int) -> None:
    *path, last = dotted.split(".")
    node = cfg
    for part in path:
        node = getattr(node, part)
    setattr(node, last, value)


def _gb(nbytes: float) -> str:
    return f"{nbytes / GB:.1f} GB"


def _breakdown(parts: dict[str, float]) -> str:
    return " + ".join(f"{name.replace('_', ' ')} {_gb(v)}" for name, v in parts.items() if v)
