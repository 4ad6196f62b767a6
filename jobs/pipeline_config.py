"""The method's job config: one YAML drives every stage.

    python -m jobs.pipeline --config jobs/configs/quickstart.yaml [key=value ...]
    presafe stage decide --config jobs/configs/smoke.yaml [key=value ...]

Artifacts go to `<storage_path>/jobs/<job_id>/`: decisions.jsonl, classifier/ (when
signals.train asks for one), signals.jsonl (+ signals_summary.json), targets.jsonl,
adapter/ and adapter_lambda0/ (peft LoRA + head.safetensors + meta.json), evaluation/,
report.md + report.json + PNG plots, events.jsonl.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from jobs.classifier.config import ClassifierJobConfig
from jobs.config import check
from jobs.data.readers import DataSource
from jobs.endpoint import EndpointConfig
from jobs.evaluation.attacks import AttackConfig
from jobs.evaluation.judges import SIGNALS, JudgeConfig, default_headline
from jobs.generation import EngineConfig, GenerationConfig
from jobs.memory import ResourcesConfig, SetBatchSizes, SetTokens
from jobs.scale import ScaleConfig
from jobs.templates import TemplateConfig

DTYPES = ("float32", "bfloat16", "float16", "auto")
REFUSAL_THINKING = ("empty", "fixed", "generated")
PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
"""A file or folder name under the job folder: no separator, no leading dot, so never `..`."""


@dataclass
class PromptSets:
    """Training prompts. Harmful and benign sets are read with the named readers."""

    harmful: list[DataSource] = field(default_factory=list)
    benign: list[DataSource] = field(default_factory=list)
    limit_per_set: int | None = None
    """Keep at most N prompts from each source that sets no `limit` of its own (a source's
    `limit` replaces this one for it, so one set can be taken whole or cut harder)."""

    def validate(self) -> None:
        # (a pipeline job needs harmful or benign prompts: checked by PipelineConfig, since
        # an eval job has none)
        check(self.limit_per_set is None or self.limit_per_set > 0, "limit_per_set", "must be > 0")


@dataclass
class DecideConfig:
    """Stage 1: the safe model's answers with CoT OFF."""

    safe_model: str | None = None
    """The model that answers with CoT off; default: the LRM itself (`model`)."""
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    num_actors: int = 0
    """Generation actors for every generation stage (decide, targets, evaluate and its probe
    pass): 0 = in the driver's process; N = N Ray actors, each holding the model, so the
    driver only orchestrates (jobs.stages.generate.ModelPool)."""
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    resources_per_actor: dict[str, float] = field(default_factory=dict)
    """Custom Ray resources each actor needs, e.g. {"accelerator_type:A10G": 0.001} or a
    node label resource: how actors are kept off a CPU-only head."""

    def validate(self) -> None:
        check(self.num_actors >= 0, "num_actors", "must be >= 0")
        check(self.gpus_per_actor >= 0 and self.cpus_per_actor >= 0, "gpus_per_actor", "must be >= 0")
        check(all(v >= 0 for v in self.resources_per_actor.values()), "resources_per_actor", "amounts must be >= 0")

    @property
    def actors(self):
        from jobs.stages.generate import ActorSpec

        return ActorSpec(self.num_actors, self.cpus_per_actor, self.gpus_per_actor, dict(self.resources_per_actor))


@dataclass
class SignalsConfig:
    """Stage 2: the decision classifier reads each (prompt, safe response)."""

    classifier: str = "runs/quickstart/classifier"
    """A folder written by `presafe classifier train`. Ignored when `train` is set."""
    train: ClassifierJobConfig | None = None
    """Train the classifier inside the job (stage `classifier`, into `<job_dir>/classifier`;
    its output_dir is ignored) and use it for signals and evaluation."""
    refusal_floor: float = 0.5
    """Stop when the safe model refuses fewer than this fraction of harmful prompts: it is
    not safe enough to teach anything."""
    batch_size: int = 64

    def validate(self) -> None:
        check(0 <= self.refusal_floor <= 1, "refusal_floor", "must be in [0, 1]")
        check(self.batch_size >= 1, "batch_size", "must be >= 1")


@dataclass
class RecoverySettings:
    """Safety-recovery rows (Qi et al., "Safety Alignment Should Be Made More Than Just a Few
    Tokens Deep", ICLR 2025), a lever for refusals that hold under sampling. A refusal target
    teaches the first tokens after t*; once sampling picks a compliant first token, nothing
    taught the model to turn back. With `enabled`, every harmful-labelled prompt with a
    refusal target gets one more row: its think block starts with the first k tokens of the
    LRM's own sampled CoT-ON answer (k uniform in 1..`generation.max_new_tokens`, seeded per
    prompt id), which carry NO LM loss (the model never learns to write them), then `text`,
    the think block closed and the same refusal. Same prompt, same t*, same signal.
    Off by default: on the demo model (2 seeds, bench/results/compare_recovery.json) it cut
    T 1.0 ASR 46% -> 27% but raised T 1.0 over-refusal 9% -> 30% and greedy ASR 22% -> 38%."""

    enabled: bool = False
    text: str = "Wait. This request could seriously hurt people or break the law. I must not help with it."
    """The turn back, written after the compliant start (trained)."""
    generation: GenerationConfig = field(default_factory=lambda: GenerationConfig(
        max_new_tokens=24, temperature=1.0, top_p=0.95, seed=0))
    """Decoding of the compliant starts: sampled, as the failures under sampling are;
    max_new_tokens is the longest start."""

    def validate(self) -> None:
        check(not self.enabled or bool(self.text.strip()), "text", "recovery needs the turn-back text")


@dataclass
class TargetsConfig:
    """Stage 3: what the LRM is trained to say, rendered in CoT-ON format."""

    tau: float | None = None
    """p_refuse >= tau means refuse-decided; default: the classifier's own threshold."""
    comply_source: str = "reference_or_self"
    """self (the LRM's own CoT-ON answer) | reference (dataset rationale + `\\boxed{answer}`;
    rows without one are dropped) | reference_or_self."""
    harmful_comply: str = "refuse"
    """A harmful-labelled prompt the safe model did NOT refuse: refuse (a refusal target,
    signal 1) | drop. Never its compliant answer: the method learns the safe model's
    decisions where they are safe, not its misses."""
    benign_refuse: str = "comply"
    """A benign-labelled prompt the safe model refused: comply (a comply target as for any
    comply-decided prompt, signal 0) | keep (the refusal, as the classifier decided)."""
    refusal_source: DataSource | None = None
    """Refusal wordings for rewritten harmful prompts (a txt file, one a line, or a table
    whose `prompt` column, or columns.prompt, holds them); default: presafe's own."""
    seed: int = 0
    """Picks a refusal wording per prompt id (deterministic)."""
    refusal_thinking: str = "empty"
    """The think block of refusal targets: empty (the decision before any CoT) | fixed
    (`refusal_thinking_text`) | generated (a short safety rationale the LRM writes with CoT
    on under `safety_system_prompt`, kept only when its own answer refuses by string match;
    else `refusal_thinking_text`, or empty when that is empty; counted)."""
    refusal_thinking_text: str = ""
    """The thinking of `fixed`, and the fallback of `generated`."""
    safety_system_prompt: str = (
        "You are a careful, safe assistant. Before answering, think briefly about whether the request could "
        "cause harm. If it could, explain to yourself in two or three sentences why, without giving any harmful "
        "details, and then politely refuse.")
    """`generated`: the system prompt under which the LRM writes its safety rationale."""
    rationale_generation: GenerationConfig = field(default_factory=lambda: GenerationConfig(max_new_tokens=256))
    """`generated`: decoding of the safety rationales (thinking + answer must fit)."""
    self_generation: GenerationConfig = field(default_factory=lambda: GenerationConfig(max_new_tokens=512))
    drop_unclosed: bool = True
    """Drop self-distilled answers whose think block never closed (cut off mid-thought).
    Targets longer than align.train.max_length are always dropped, never truncated."""
    check_self_answers: bool = True
    """Drop self-distilled answers to problems with a reference answer (GSM8K, MATH-500,
    arithmetic) when their final answer is wrong: self-distillation keeps reasoning, not errors."""
    recovery: RecoverySettings = field(default_factory=RecoverySettings)
    """Extra refusal rows that turn back after a compliant start (off by default)."""

    def validate(self) -> None:
        check(self.tau is None or 0 < self.tau < 1, "tau", "must be in (0, 1)")
        check(self.comply_source in ("self", "reference", "reference_or_self"), "comply_source",
              "must be self, reference or reference_or_self")
        check(self.harmful_comply in ("refuse", "drop"), "harmful_comply", "must be refuse or drop")
        check(self.benign_refuse in ("comply", "keep"), "benign_refuse", "must be comply or keep")
        check(self.refusal_thinking in REFUSAL_THINKING, "refusal_thinking",
              f"must be one of {list(REFUSAL_THINKING)}, got {self.refusal_thinking!r}; for your own text "
              "write `refusal_thinking: fixed` and put the text in `refusal_thinking_text`")
        check(self.refusal_thinking != "fixed" or bool(self.refusal_thinking_text.strip()), "refusal_thinking_text",
              "refusal_thinking: fixed needs the text here")
        check(self.refusal_thinking != "generated" or bool(self.safety_system_prompt.strip()),
              "safety_system_prompt", "refusal_thinking: generated needs a safety system prompt")


@dataclass
class LoraSettings:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    """Module names (suffixes) to adapt; checked against the model before training."""

    def validate(self) -> None:
        check(self.r >= 1, "r", "must be >= 1")
        check(self.alpha >= 1, "alpha", "must be >= 1")
        check(0 <= self.dropout < 1, "dropout", "must be in [0, 1)")
        check(bool(self.target_modules), "target_modules", "must name at least one module")


@dataclass
class AuxSettings:
    """The pre-CoT auxiliary decision loss."""

    weight: float = 0.2
    """lambda. 0 = plain SFT (the ablation)."""
    layers: list[int] = field(default_factory=list)
    """Hidden-state layers read at t* (1..L, or negative from the end); their mean feeds
    the head. Empty = the layer at 3/4 depth."""
    pooling: str = "t_star"
    """t_star (the last token before CoT) | prompt_mean (mean over prompt tokens 0..t*)."""
    positions: int = 1
    """pooling t_star: the head reads t* and the positions-1 tokens before it (the end of the
    user turn and the assistant header), each position's loss averaged: the decision is
    asked of every token leading up to the CoT, not of t* alone (a lever for refusals that
    hold under sampling). 1 = t* only. Measured on the demo model (8 positions, 2 seeds,
    bench/results/compare_positions8.json): greedy ASR 22% -> 16%, T 1.0 unchanged."""
    target: str = "soft"
    """soft (p_refuse) | hard (0/1 at tau)."""
    detach: bool = False
    """Stop the auxiliary gradient at the hidden state (diagnostic: head-only probe)."""
    head: str = "normalized"
    """normalized: the head reads the pooled hidden state layer-normalized (no learned
    scale) and starts at zero, so the aux loss starts at ln 2 and sends no gradient into
    the LoRA weights until the head has found a direction. LRM hidden states have norms in
    the hundreds with a few massive dimensions (the demo model's layer 22: norm ~300, one
    dimension ~145): a randomly initialised head on them starts with logits of +-8 and
    pushes the representation along a random direction. raw: the earlier head (random
    init, unnormalized features), kept to reproduce older runs."""

    def validate(self) -> None:
        check(self.weight >= 0, "weight", f"must be >= 0 (lambda), got {self.weight}")
        check(self.head in ("normalized", "raw"), "head", "must be normalized or raw")
        check(self.target in ("soft", "hard"), "target", "must be soft or hard")
        check(self.pooling in ("t_star", "prompt_mean"), "pooling", "must be t_star or prompt_mean")
        check(1 <= self.positions <= 64, "positions", f"must be in 1..64, got {self.positions}")
        check(self.positions == 1 or self.pooling == "t_star", "positions",
              "positions > 1 reads single tokens before t*: it needs pooling t_star")
        check(all(layer != 0 for layer in self.layers), "layers", "layer 0 is the embeddings; use 1..L or -1..-L")


@dataclass
class AlignTrainSettings:
    epochs: int = 1
    max_steps: int | None = None
    """Stop after this many optimizer steps (overrides epochs when set)."""
    batch_size: int = 4
    """Per worker."""
    grad_accum: int = 1
    learning_rate: float = 2e-4
    head_learning_rate: float = 1e-3
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    grad_clip: float = 1.0
    max_length: int = 1024
    log_every: int = 10
    checkpoint_every: int = 50
    """Optimizer steps between checkpoints (0 = only the final one)."""
    gradient_checkpointing: bool = False
    """Recompute activations during backward (GPU configs for 7B/8B models turn it on)."""
    seed: int = 0
    decision_tokens: int = 0
    """The first N target tokens after t* (where the model commits: `</think>` and the
    refusal's opening, or the first thinking tokens) weigh `decision_weight` in the LM
    loss: a lever for decisions that hold under sampling. 0 = plain SFT weighting.
    Measured on the demo model (6 tokens x 4, 2 seeds, bench/efficacy.py): greedy CoT-on
    ASR 33.6% -> 21.9%, ASR at T 1.0 not lower (39.8% -> 46.1%), over-refusal unchanged."""
    decision_weight: float = 1.0
    decision_temperature: float = 1.0
    """The LM loss of the first `decision_tokens` target tokens is computed on logits / τ:
    to reach the same loss the model must make those logits τ times sharper, so greedy
    decoding is unchanged in kind while sampling at T 1.0 draws the decision as if at
    T 1/τ (a margin for decisions that hold under sampling). 1.0 = off; needs
    decision_tokens > 0. Measured on the demo model (τ 2 on the quickstart's setting, 2
    seeds, n 128 per rate, docs/alignment_results.md): CoT-on ASR at T 1.0 35.9% -> 25.8%
    (λ 0: 41.4% -> 27.3%, p 0.025), greedy 13.3% -> 19.5%, over-refusal 7.0% -> 10.9%;
    with decision_weight 8 greedy stays at 22.7%."""
    refusal_share: float | None = None
    """Share of refusal targets in each epoch: the side short of it is repeated (rows are
    never dropped), so adding benign prompts (borderline sets) does not dilute the refusals.
    None = the targets' natural mix. Measured on the demo model (all 188 borderline-train
    prompts, 2 seeds, paired, docs/alignment_results.md): natural mix (21% refusals) greedy
    CoT-on ASR 37.5%, over-refusal 0.0%; 0.32 -> 16.4% and 7.8%, the quickstart's rates."""

    def validate(self) -> None:
        check(self.epochs >= 1, "epochs", "must be >= 1")
        check(self.max_steps is None or self.max_steps >= 1, "max_steps", "must be >= 1")
        check(self.batch_size >= 1, "batch_size", "must be >= 1")
        check(self.grad_accum >= 1, "grad_accum", "must be >= 1")
        check(0 < self.learning_rate < 1, "learning_rate", "must be in (0, 1)")
        check(0 < self.head_learning_rate < 1, "head_learning_rate", "must be in (0, 1)")
        check(16 <= self.max_length, "max_length", "must be >= 16")
        check(self.log_every >= 1, "log_every", "must be >= 1")
        check(self.checkpoint_every >= 0, "checkpoint_every", "must be >= 0")
        check(self.decision_tokens >= 0, "decision_tokens", "must be >= 0")
        check(1.0 <= self.decision_weight <= 100.0, "decision_weight", "must be in [1, 100]")
        check(1.0 <= self.decision_temperature <= 10.0, "decision_temperature", "must be in [1, 10]")
        check(self.decision_temperature == 1.0 or self.decision_tokens > 0, "decision_temperature",
              "needs decision_tokens > 0 (the tokens it sharpens)")
        check(self.refusal_share is None or 0.05 <= self.refusal_share <= 0.95, "refusal_share",
              "must be in [0.05, 0.95] or null (the natural mix)")


SWEEP_DEPTHS = {"early": 0.25, "middle": 0.5, "late": 0.75}


@dataclass
class SweepConfig:
    """An ablation sweep over the auxiliary loss: every combination of the non-empty lists
    is trained (as group `sweep_<point>`) on the same decisions, signals and targets, and
    evaluated beside the other variants. Empty lists keep `align.aux`'s value."""

    weight: list[float] = field(default_factory=list)
    """lambda values, e.g. [0, 0.05, 0.2, 0.5]."""
    layers: list[str] = field(default_factory=list)
    """Hidden-state layers read at t*: early | middle | late (1/4, 1/2, 3/4 of the depth) or
    explicit layer numbers, e.g. "12" or "10,14" (their mean feeds the head)."""
    pooling: list[str] = field(default_factory=list)
    """t_star | prompt_mean."""
    target: list[str] = field(default_factory=list)
    """soft | hard."""

    def validate(self) -> None:
        check(all(w >= 0 for w in self.weight), "weight", f"lambda values must be >= 0, got {self.weight}")
        for spec in self.layers:
            check(spec in SWEEP_DEPTHS or bool(re.fullmatch(r"-?\d+(,-?\d+)*", spec.replace(" ", ""))), "layers",
                  f"{spec!r}: use early, middle, late or layer numbers like '12' or '10,14'")
            check(spec in SWEEP_DEPTHS or all(int(x) != 0 for x in spec.split(",")), "layers",
                  f"{spec!r}: layer 0 is the embeddings; use 1..L or -1..-L")
        check(all(p in ("t_star", "prompt_mean") for p in self.pooling), "pooling", "values must be t_star or prompt_mean")
        check(all(t in ("soft", "hard") for t in self.target), "target", "values must be soft or hard")
        for key in ("weight", "layers", "pooling", "target"):
            values = getattr(self, key)
            check(len(set(map(str, values))) == len(values), key, f"values must be unique, got {values}")

    def points(self) -> list[dict]:
        """One dict of aux settings per sweep point (cartesian product), in config order."""
        import itertools

        axes = [(k, getattr(self, k)) for k in ("weight", "layers", "pooling", "target") if getattr(self, k)]
        return [dict(zip([k for k, _ in axes], combo)) for combo in itertools.product(*[v for _, v in axes])] if axes else []


@dataclass
class AlignConfig:
    """Stage 4: LoRA + the auxiliary loss, under Ray Train (+ DeepSpeed)."""

    lora: LoraSettings = field(default_factory=LoraSettings)
    aux: AuxSettings = field(default_factory=AuxSettings)
    train: AlignTrainSettings = field(default_factory=AlignTrainSettings)
    scale: ScaleConfig = field(default_factory=ScaleConfig)
    merge: bool = False
    """Also write a merged model (base + LoRA) under adapter/merged/."""
    output_name: str = "adapter"
    """Folder under job_dir for the result (the λ=0 ablation uses another name): a plain
    name, never a path, since the stage replaces whatever sits at `<job_dir>/<output_name>`
    and `<output_name>.checkpoints`."""
    ablation: bool = False
    """Pipeline: also train the λ = 0 ablation (plain SFT, same data and steps) into
    `<output_name>_lambda0/` so evaluation can compare the two."""
    sweep: SweepConfig = field(default_factory=SweepConfig)
    """Pipeline: an ablation sweep (lambda, layers, pooling, signal), each point trained into
    `<output_name>_sweep_<point>/` (see jobs.variants)."""

    def validate(self) -> None:
        check(bool(PLAIN_NAME.fullmatch(self.output_name)), "output_name",
              f"must be a plain folder name under the job folder (1-100 letters, digits, '.', '_' or '-', not "
              f"starting with a symbol; no '/' or '..'), got {self.output_name!r}")


@dataclass
class Decoding:
    """One decoding setting of the evaluation."""

    name: str = "greedy"
    temperature: float = 0.0
    """0 = greedy."""
    top_p: float = 1.0
    top_k: int = 0
    samples: int = 1
    """Samples per prompt (sampled decoding), each with its own seed."""
    seed: int = 0

    def validate(self) -> None:
        check(bool(self.name.strip()) and "/" not in self.name, "name", "must be a non-empty name without '/'")
        check(self.temperature >= 0, "temperature", "must be >= 0")
        check(0 < self.top_p <= 1, "top_p", "must be in (0, 1]")
        check(self.samples >= 1, "samples", "must be >= 1")
        check(self.temperature > 0 or self.samples == 1, "samples", "greedy decoding gives one sample per prompt")


@dataclass
class DecodingSweep:
    """A grid of sampled decodings (ASR rises with temperature, top-p and top-k): every
    combination becomes a decoding named `t<T>_p<P>_k<K>`, evaluated with CoT on beside
    `evaluate.decodings`; the report plots ASR against temperature."""

    temperatures: list[float] = field(default_factory=list)
    top_p: list[float] = field(default_factory=lambda: [1.0])
    top_k: list[int] = field(default_factory=lambda: [0])
    samples: int = 1
    seed: int = 0

    def validate(self) -> None:
        check(all(t >= 0 for t in self.temperatures), "temperatures", "must be >= 0")
        check(bool(self.top_p) and all(0 < p <= 1 for p in self.top_p), "top_p", "values must be in (0, 1]")
        check(bool(self.top_k) and all(k >= 0 for k in self.top_k), "top_k", "values must be >= 0")
        check(self.samples >= 1, "samples", "must be >= 1")
        check(len(set(self.temperatures)) == len(self.temperatures), "temperatures", "values must be unique")

    def decodings(self) -> list[Decoding]:
        import itertools

        return [Decoding(name=f"t{t:g}_p{p:g}_k{k}", temperature=t, top_p=p, top_k=k,
                         samples=self.samples if t > 0 else 1, seed=self.seed)
                for t, p, k in itertools.product(self.temperatures, self.top_p, self.top_k)]


@dataclass
class ProbeSettings:
    """Decision probes: a logistic probe per layer on the hidden state at t*."""

    enabled: bool = True
    folds: int = 5
    """Cross-validation folds; AUROC is computed on the held-out fold's prompts."""

    def validate(self) -> None:
        check(self.folds >= 2, "folds", "must be >= 2")


@dataclass
class EvaluateConfig:
    """Stage evaluate: base vs aligned (vs λ = 0) on held-out prompts."""

    enabled: bool = True
    harmful: list[DataSource] = field(default_factory=list)
    """Held-out harmful prompts: ASR = fraction of final answers the classifier judges comply."""
    benign: list[DataSource] = field(default_factory=list)
    """Held-out benign prompts: over-refusal = fraction judged refuse."""
    reasoning: list[DataSource] = field(default_factory=list)
    """Problems with checkable answers (gsm8k, math500, builtin:arithmetic-heldout)."""
    limit_per_set: int | None = None
    cot_off: list[str] = field(default_factory=lambda: ["greedy"])
    """Decodings (by name) also run with CoT OFF, for comparison. The base model's greedy
    CoT-OFF decisions on harmful and benign prompts label the decision probes."""
    decodings: list[Decoding] = field(default_factory=lambda: [
        Decoding(), Decoding(name="sampled", temperature=0.7, top_p=0.95, samples=2)])
    decoding_sweep: DecodingSweep = field(default_factory=DecodingSweep)
    attacks: list[AttackConfig] = field(default_factory=list)
    """Attacks on the harmful set (jobs.evaluation.attacks: prefill_think, prefill_answer,
    template, multi_turn), each run with CoT on and reported as its own ASR
    (`attack/<name>/<decoding>`)."""
    attack_decodings: list[str] = field(default_factory=lambda: ["greedy"])
    """Decodings (by name, from `decodings`) the attacks run under."""
    adapters: list[str] = field(default_factory=list)
    """More peft LoRA adapter folders to evaluate beside the model (each a variant named by
    its folder; `presafe eval --adapter DIR`)."""
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)
    """An OpenAI-compatible server to evaluate instead of local models (`presafe eval
    --endpoint URL --served-model NAME`); `model` then names the tokenizer that renders
    the prompts (api: completions)."""
    max_new_tokens: int = 512
    batch_size: int = 16
    probes: ProbeSettings = field(default_factory=ProbeSettings)
    judges: list[JudgeConfig] = field(default_factory=lambda: [
        JudgeConfig(kind="string_match"), JudgeConfig(kind="classifier", path=SIGNALS)])
    """Who decides refuse/comply, each on every final answer and, separately, every chain
    of thought (stage `judge`; `presafe judge JOB` re-judges without generating). The
    default pairs the refusal-phrase list with the job's signal classifier; add an
    independent classifier (jobs/configs/classifier_xstest.yaml) or a guard model
    (jobs/configs/judges/) for results a reviewer accepts."""
    headline: str = ""
    """The judge whose numbers lead the report (its name); default: the first judge that
    is not the job's signal classifier."""
    max_new_tokens_by_set: SetTokens = field(default_factory=SetTokens)
    """Per-set max_new_tokens, e.g. {harmful: 1024, benign: 1024, reasoning: 8192}; an unset
    set uses max_new_tokens (jobs.memory.max_new_tokens_for)."""
    batch_size_by_set: SetBatchSizes = field(default_factory=SetBatchSizes)
    """Per-set batch size; an unset set uses batch_size, 0 = auto: the largest batch that
    fits resources.gpu_memory_gb at that set's max_new_tokens (jobs.memory.batch_size_for)."""

    def validate(self) -> None:
        check(not self.enabled or bool(self.harmful or self.benign or self.reasoning), "harmful",
              "give at least one evaluation set (harmful, benign or reasoning), or set enabled: false")
        check(self.limit_per_set is None or self.limit_per_set > 0, "limit_per_set", "must be > 0")
        check(bool(self.decodings), "decodings", "give at least one decoding")
        names = [d.name for d in self.decodings]
        check(len(set(names)) == len(names), "decodings", f"decoding names must be unique, got {names}")
        check(not (self.endpoint.url and self.adapters), "adapters",
              "an endpoint serves its own model: evaluate adapters locally, or serve them")
        check(not (self.endpoint.url and self.endpoint.api == "chat" and
                   any(a.kind != "template" for a in self.attacks)), "attacks",
              "over a chat endpoint only `template` attacks apply (prefills need api: completions)")
        check(len({Path(a).name for a in self.adapters}) == len(self.adapters), "adapters",
              "adapter folders must have distinct names (they name the variants)")
        unknown = [n for n in self.attack_decodings if n not in names]
        check(not unknown, "attack_decodings", f"unknown decoding(s) {unknown}; defined: {names}")
        labels = [a.label for a in self.attacks]
        check(len(set(labels)) == len(labels), "attacks", f"attack names must be unique, got {labels}: set `name`")
        swept = [d.name for d in self.decoding_sweep.decodings()]
        check(not set(swept) & set(names), "decoding_sweep", f"sweep names {sorted(set(swept) & set(names))} clash "
              "with evaluate.decodings")
        unknown = [n for n in self.cot_off if n not in names]
        check(not unknown, "cot_off", f"unknown decoding(s) {unknown}; defined: {names}")
        check(self.max_new_tokens >= 1, "max_new_tokens", "must be >= 1")
        check(self.batch_size >= 1, "batch_size", "must be >= 1")
        check(bool(self.judges), "judges", "give at least one judge (string_match needs nothing)")
        labels = [j.label for j in self.judges]
        check(len(set(labels)) == len(labels), "judges", f"judge names must be unique, got {labels}: set `name`")
        check(not self.headline or self.headline in labels, "headline", f"{self.headline!r} is not a judge; judges: {labels}")

    def all_decodings(self) -> list[Decoding]:
        """`decodings`, then the decoding sweep's grid."""
        return list(self.decodings) + self.decoding_sweep.decodings()

    def headline_judge(self) -> str:
        return self.headline or default_headline(self.judges)


@dataclass
class TrackingConfig:
    """Experiment tracking with MLflow (`pip install presafe[tracking]`; jobs.tracking): one
    run per job, nested runs per stage and per evaluated model. Tracking never fails a job:
    a store that cannot be reached leaves a `warning` event and the job goes on untracked."""

    enabled: bool = True
    """Track when MLflow is installed (without it: silently off, unless `uri` is set)."""
    uri: str = ""
    """MLflow tracking URI (http(s)://server, databricks, sqlite:///..., file:/...). Empty:
    a file store in the job folder, `file:<job_dir>/mlruns`, so no server is needed."""
    experiment: str = "presafe"
    """MLflow experiment the job's run goes to (created when missing)."""

    def validate(self) -> None:
        check(bool(self.experiment.strip()), "experiment", "must not be empty")


@dataclass
class PipelineConfig:
    """Everything one presafe alignment job needs (kind: pipeline), or an evaluation of
    given models (kind: eval; `presafe eval`)."""

    kind: str = "pipeline"
    """pipeline: the whole method | eval: evaluate, judge and report only, on `model` (and
    `evaluate.adapters`) or `evaluate.endpoint`."""

    storage_path: str = "runs"
    """Where jobs live: the job's folder is `<storage_path>/jobs/<job_id>/`. A local or
    mounted folder on the driver's node; Ray Train checkpoints can go to cloud storage
    (`align.scale.storage_path: s3://...`)."""
    job_id: str = "job"
    """Names the job folder; a rerun with the same id resumes (see `resume`)."""
    resume: bool = True
    """Skip stages whose artifacts a previous run of this job completed; false = redo all."""
    model: str = "embedded:smollm2-135m-instruct"
    """The LRM: hub id, local folder or embedded name."""
    dtype: str = "float32"
    """Weights dtype for generation and training: float32 on CPU; bfloat16 on GPUs."""
    template: TemplateConfig = field(default_factory=TemplateConfig)
    prompts: PromptSets = field(default_factory=PromptSets)
    decide: DecideConfig = field(default_factory=DecideConfig)
    signals: SignalsConfig = field(default_factory=SignalsConfig)
    targets: TargetsConfig = field(default_factory=TargetsConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    evaluate: EvaluateConfig = field(default_factory=lambda: EvaluateConfig(enabled=False))
    seeds: list[int] = field(default_factory=list)
    """Train and evaluate every aligned variant once per seed (the align seed, and an
    offset of the sampling seeds); the report gives per-seed values, pooled rates with
    intervals and paired tests. Empty = one run with align.train.seed (folders without a
    seed suffix)."""
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    generation: EngineConfig = field(default_factory=EngineConfig)
    """The engine of every generation stage: `engine: hf` (Hugging Face generate) or `vllm`
    (continuous batching, LoRA variants unmerged on one base model; settings under `vllm`)."""
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    """What each GPU offers: the memory plan (`presafe preflight`, jobs.memory) sizes every
    stage against resources.gpu_memory_gb and stops a config that cannot fit before it runs."""
    torch_threads: int | None = None
    """torch's CPU threads in the job's own process (the stages that run in it: generation
    with `decide.num_actors: 0`, training with `*.scale.num_workers: 0`). None: what the
    environment gives; a job the service launches gets Ray's OMP_NUM_THREADS, the CPUs its
    driver reserves (1 by default), and leaves the other cores idle. 0: every core this process
    may run on. Ray Train workers and generation actors keep their own CPU counts."""

    @property
    def job_dir(self) -> str:
        return str(Path(self.storage_path) / "jobs" / self.job_id)

    def validate(self) -> None:
        check(bool(self.storage_path.strip()), "storage_path", "must not be empty")
        check("://" not in self.storage_path, "storage_path",
              f"{self.storage_path!r}: the job folder must be a plain path to a local or mounted folder (the driver "
              "writes it and the service reads it); put training checkpoints in cloud storage with "
              "align.scale.storage_path: s3://bucket/prefix")
        check(bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", self.job_id)), "job_id",
              f"must be 1-128 letters, digits, '.', '_' or '-' (not starting with a symbol), got {self.job_id!r}")
        check(self.dtype in DTYPES, "dtype", f"must be one of {list(DTYPES)}")
        check(self.kind in ("pipeline", "eval"), "kind", f"must be pipeline or eval, got {self.kind!r}")
        check(self.torch_threads is None or 0 <= self.torch_threads <= 1024, "torch_threads",
              f"must be empty (the environment's), 0 (every core) or 1..1024, got {self.torch_threads!r}")
        if self.kind == "pipeline":
            check(bool(self.prompts.harmful) or bool(self.prompts.benign), "prompts.harmful",
                  "give at least one harmful or benign source")
        else:
            check(self.evaluate.enabled, "evaluate.enabled", "an eval job evaluates: set it true")
            check(not any(j.is_signal_classifier for j in self.evaluate.judges), "evaluate.judges",
                  "an eval job trains no signal classifier: judge with string_match, a classifier folder or a guard "
                  "model")
        check(len(set(self.seeds)) == len(self.seeds) and all(0 <= x < 2**31 for x in self.seeds), "seeds",
              f"must be unique integers in [0, 2^31), got {self.seeds}")
        check(len(self.seeds) <= 16, "seeds", f"at most 16 seeds, got {len(self.seeds)}")
        v = self.generation.vllm
        if self.generation.engine == "vllm":
            check(not self.evaluate.endpoint.url, "generation.engine",
                  "an endpoint evaluation generates over HTTP: leave generation.engine: hf")
            check(self.decide.num_actors == 0 or self.decide.gpus_per_actor == 0 or
                  self.decide.gpus_per_actor >= v.tensor_parallel_size, "generation.vllm.tensor_parallel_size",
                  f"{v.tensor_parallel_size} GPUs per engine, but decide.gpus_per_actor is "
                  f"{self.decide.gpus_per_actor:g}: give each generation actor as many GPUs as the engine shards over")
            check(v.max_model_len == 0 or v.max_model_len > self.resources.prompt_tokens, "generation.vllm.max_model_len",
                  f"{v.max_model_len} leaves no room to generate after resources.prompt_tokens="
                  f"{self.resources.prompt_tokens}")
