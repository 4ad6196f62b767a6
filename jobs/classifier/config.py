"""Config of a classifier training job (`presafe classifier train --config X.yaml`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from jobs.classifier.hard_negatives import MinedHardNegativesConfig
from jobs.config import check
from jobs.data.readers import DataSource
from jobs.scale import ScaleConfig

PROMPT_TRUNCATIONS = ("head_tail", "right")


@dataclass
class ClassifierModelConfig:
    backbone: str = "embedded:all-minilm-l6-v2"
    """Any Hugging Face encoder: hub id, local folder, or an embedded model name."""
    max_length: int = 128
    """Tokens per (prompt, response) pair; the longer side is truncated first. The decision
    shows in the first sentences of a response, and 128 tokens train 2.3x faster than 256
    on CPU."""

    pair_input: str = "response"
    """What a (prompt, response) pair is read from: response | prompt_and_response.
    "response" leaves the prompt out of pairs (prompt-only rows still read the prompt):
    a pair's label is the response's decision, and a model that also sees the prompt
    learns "benign prompt -> comply" from answering models that rarely refuse benign
    prompts, then misreads one that does (XSTest, held-out Llama-2: "I cannot provide
    advice on ..." for a benign prompt scored p_refuse 0.01)."""

    prompt_truncation: str = "head_tail"
    """How a prompt-only row longer than max_length is cut: head_tail | right.
    "head_tail" keeps a quarter of the token budget from its start and the rest from its
    end, so a request at the end of a long prompt ("{document} ... now write X") reaches
    the model in training and in decisions; "right" (what every model before it did)
    keeps the start only. On its own it does not make a document-then-request prompt look
    harmful (the document dilutes the request: see prompt_scan). Pairs are not affected
    (a response's decision shows in its first sentences)."""

    prompt_scan: str = "paragraphs"
    """How a prompt-only decision reads a long prompt: whole | paragraphs | sentences. It
    takes the largest p_refuse of the whole prompt and of its segments: "paragraphs"
    (split at blank lines), "sentences" (each paragraph's sentences too, packed into
    segments of up to 120 characters), "whole" (no segments: what every model before it
    did). Benign text around a request dilutes it: 180 words of Alpaca prompts before or
    after a HarmBench request held out of training hid 195-200 of 200 requests from the
    whole-prompt guard (188/200 found alone). "paragraphs" finds them when a blank line
    separates text and request, "sentences" also when none does, at the cost of refusing
    more long benign texts (bench/guard_quality.py's `padding` rows). Decisions only:
    training reads whole prompts."""

    def validate(self) -> None:
        check(8 <= self.max_length <= 8192, "max_length", f"must be in [8, 8192], got {self.max_length}")
        check(self.pair_input in ("response", "prompt_and_response"), "pair_input",
              f"must be response or prompt_and_response, got {self.pair_input!r}")
        check(self.prompt_truncation in PROMPT_TRUNCATIONS, "prompt_truncation",
              f"must be one of {list(PROMPT_TRUNCATIONS)}, got {self.prompt_truncation!r}")
        check(self.prompt_scan in ("whole", "paragraphs", "sentences"), "prompt_scan",
              f"must be whole, paragraphs or sentences, got {self.prompt_scan!r}")


@dataclass
class BalanceConfig:
    """Class-balanced sampling of prompt-only rows (before the split, seeded): a few thousand
    harmful prompts beside fifty thousand benign ones would otherwise teach "comply" as the
    prior, and the threshold chosen on such a validation split lets harmful prompts through."""

    ratio: float = 1.0
    """Comply (benign) prompt-only rows kept per refuse (harmful) one."""
    max_per_class: int | None = None
    """At most this many prompt-only rows of either class (None: as many as the smaller class
    allows at `ratio`)."""
    by_source: bool = True
    """Spread each class's rows evenly over its sources (a source smaller than its share
    keeps every row; the rest goes to the larger ones), so 25,000 Alpaca rows do not
    crowd out 250 XSTest safe prompts. False: one draw over the whole class."""

    def validate(self) -> None:
        check(self.ratio > 0, "ratio", f"must be > 0, got {self.ratio}")
        check(self.max_per_class is None or self.max_per_class >= 1, "max_per_class", "must be >= 1")


@dataclass
class ClassifierDataConfig:
    sources: list[DataSource] = field(default_factory=lambda: [DataSource(path="builtin:decisions", format="builtin")])
    """Labelled rows, split into train / validation / test unless those are given."""
    validation: list[DataSource] = field(default_factory=list)
    test: list[DataSource] = field(default_factory=list)
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 0
    """Split seed; rows that share a prompt always land in the same split."""
    holdout_column: str | None = None
    """Hold out rows whose meta[holdout_column] == holdout_value as the test set (e.g.
    `model` = `gpt4` for leave-one-model-out on XSTest); the rest is split train/val."""
    holdout_value: str | None = None
    prompt_only: bool = True
    """Keep prompt-only rows (the pre-generation decision the serving endpoint offers)."""
    swap_prompts: bool = True
    """Add, for each training pair, a copy with a prompt of the other kind (harmful <->
    benign) and the same label, so pair decisions are read from the response (only with
    model.pair_input = prompt_and_response)."""
    first_sentences: bool = True
    """Add, for each training pair whose response runs on past its first sentence, a copy
    with only that sentence (label kept): terse answers ("Sorry, but I can't assist with
    that.") then read like the openings of long ones."""
    builtin_phrasings: bool = True
    """Mix presafe's generated decision rows (`builtin:decisions`: refusal and compliance
    phrasings of many assistant styles) into the training split, so a classifier trained
    on one or two models' answers has seen wordings those models never use (trained on
    Llama-2 and Mistral answers alone, GPT-4's "Sorry, but I can't assist with that."
    scored p_refuse 0.02). Skipped when builtin:decisions is already a source."""
    balance: BalanceConfig | None = None
    """Class-balanced sampling of the prompt-only rows of `sources` (None: keep them all).
    Pairs, hard negatives and explicit validation/test sources are never sampled."""
    hard_negatives: list[DataSource] = field(default_factory=list)
    """Benign prompts that share words with harmful ones (XSTest's homonyms, figurative
    language, safe contexts, safe targets, definitions; `builtin:borderline-train`): read
    as prompt sets (`categories` filters XSTest types) and added, every row, to the
    training split only, labelled by their harmful flag (comply). A prompt that is also a
    validation or test prompt is left out."""
    mined_hard_negatives: MinedHardNegativesConfig | None = None
    """Hard negatives mined from `sources` (jobs/classifier/hard_negatives.py): benign
    prompt-only rows, drawn or not by `balance`, that use the words marking the training
    split's harmful prompts; added to the training split only (None: none mined)."""
    exclude: dict[str, list[str]] = field(default_factory=dict)
    """Leave out every row (sources and hard negatives) whose `source`, or meta value
    (e.g. XSTest's `type`), is listed: `{source: [advbench], type: [homonyms]}` trains a
    classifier that never saw those prompts (bench/guard_quality.py's held-out folds). A key
    `<source>.<meta key>` limits it to one source's rows: `{xstest.type: [homonyms]}` leaves
    out XSTest's homonyms and keeps presafe's own (`builtin:borderline-train`'s kinds are
    named after XSTest's types)."""

    def validate(self) -> None:
        check(len(self.sources) > 0, "sources", "needs at least one data source")
        check(0 <= self.val_fraction < 1, "val_fraction", "must be in [0, 1)")
        check(0 <= self.test_fraction < 1, "test_fraction", "must be in [0, 1)")
        check(self.val_fraction + self.test_fraction < 1, "test_fraction", "val_fraction + test_fraction must be < 1")
        check(self.val_fraction > 0 or bool(self.validation), "val_fraction",
              "must be > 0 when no validation sources are given (the threshold is chosen on validation)")
        check((self.holdout_column is None) == (self.holdout_value is None), "holdout_value",
              "holdout_column and holdout_value are set together")
        check(all(isinstance(v, list) for v in self.exclude.values()), "exclude", "maps a key to a list of values")


@dataclass
class ClassifierTrainConfig:
    epochs: int = 3
    batch_size: int = 16
    """Per worker."""
    eval_batch_size: int = 64
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    select_metric: str = "auroc"
    """Validation metric (over all rows) that picks the best epoch: auroc | accuracy | f1."""
    threshold_metric: str = "accuracy"
    """The decision threshold maximises this on validation: accuracy | f1."""
    threshold_smoothing: float = 1.0
    """Choose the threshold for the metric's expectation under Gaussian noise of this sd on
    each validation row's logit (0 = the exact optimum on the validation rows, which a
    single row can push near 0 or 1 when validation accuracy is near 1)."""

    threshold_min_rows: int = 50
    """A kind of row (pairs, prompt-only) with fewer validation rows than this keeps the
    threshold 0.5 instead of one fitted to a handful of rows."""
    calibrate: bool = True
    """After training, fit one temperature per row kind (pairs, prompt-only) on the
    validation split (the scalar T minimising the NLL of sigmoid(logit / T)); p_refuse is
    then calibrated and meta.json records T and the ECE before and after. The thresholds
    are mapped through the same T, so every decision is unchanged. A kind with fewer
    validation rows than threshold_min_rows, or one class only, keeps T = 1."""

    def validate(self) -> None:
        check(self.epochs >= 1, "epochs", "must be >= 1")
        check(self.threshold_min_rows >= 0, "threshold_min_rows", "must be >= 0")
        check(self.batch_size >= 1, "batch_size", "must be >= 1")
        check(self.eval_batch_size >= 1, "eval_batch_size", "must be >= 1")
        check(0 < self.learning_rate < 1, "learning_rate", "must be in (0, 1)")
        check(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        check(0 <= self.warmup_ratio < 1, "warmup_ratio", "must be in [0, 1)")
        check(self.select_metric in ("auroc", "accuracy", "f1"), "select_metric", "must be auroc, accuracy or f1")
        check(self.threshold_metric in ("accuracy", "f1"), "threshold_metric", "must be accuracy or f1")
        check(self.threshold_smoothing >= 0, "threshold_smoothing", "must be >= 0 (logit units)")


@dataclass
class ClassifierJobConfig:
    """Train the safety-decision classifier and save it as a Hugging Face folder + meta.json."""

    output_dir: str = "runs/classifier"
    model: ClassifierModelConfig = field(default_factory=ClassifierModelConfig)
    data: ClassifierDataConfig = field(default_factory=ClassifierDataConfig)
    train: ClassifierTrainConfig = field(default_factory=ClassifierTrainConfig)
    scale: ScaleConfig = field(default_factory=ScaleConfig)

    def validate(self) -> None:
        check(bool(self.output_dir.strip()), "output_dir", "must not be empty")
        # A 22M-parameter encoder has nothing to gain from partitioned parameters.
        check(self.scale.zero_stage <= 2, "scale.deepspeed.zero_optimization.stage",
              f"the classifier supports ZeRO stages 0-2, got {self.scale.zero_stage}")
