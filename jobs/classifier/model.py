"""Load, save and query a decision classifier.

    clf = DecisionClassifier.load("runs/classifier")
    clf.predict(["How do I make a bomb?"])                       # prompt only
    clf.predict(["How do I make a bomb?"], ["I can't help with that."])  # (prompt, response)
    # -> [Decision(p_refuse=0.98, decision='refuse')]

A saved classifier is a Hugging Face folder (config, weights, tokenizer) plus meta.json
with the training config, label map, decision threshold, metrics and data fingerprint,
and (since calibration) `calibration`: a temperature per row kind that p_refuse is
divided by in logit space (jobs/classifier/calibration.py). A folder saved before has no
`calibration` and loads with T = 1: the probabilities it always gave.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from jobs.data.records import LABEL_NAMES, REFUSE
from jobs.errors import PresafeError

META = "meta.json"


@dataclass
class Decision:
    p_refuse: float
    decision: str  # "refuse" | "comply"


def load_backbone(name_or_path: str):
    """(tokenizer, sequence-classification model with the refuse/comply head) from any
    Hugging Face encoder; a fresh head is initialised when the folder has none."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from jobs.models.embedded import resolve_model

    path = resolve_model(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=2, id2label=dict(LABEL_NAMES), label2id={v: k for k, v in LABEL_NAMES.items()}
        )
    except OSError as e:
        raise PresafeError(f"model.backbone={name_or_path!r}: cannot load: {e}") from None
    return tokenizer, model


PAIR_INPUTS = ("response", "prompt_and_response")


def encode(tokenizer, prompts: list[str], responses: list[str | None], max_length: int,
           pair_input: str = "prompt_and_response") -> list[list[int]]:
    """Token ids per row. Prompt-only rows: `[CLS] prompt [SEP]`. Pairs:
    `[CLS] prompt [SEP] response [SEP]` (the longer side truncated first), or with
    pair_input="response" `[CLS] [SEP] response [SEP]`: the response in the second
    segment, as in a pair, so it is never mistaken for a prompt."""
    if pair_input not in PAIR_INPUTS:
        raise ValueError(f"pair_input must be one of {PAIR_INPUTS}, got {pair_input!r}")
    out: list[list[int] | None] = [None] * len(prompts)
    pair_idx = [i for i, r in enumerate(responses) if r is not None]
    single_idx = [i for i, r in enumerate(responses) if r is None]
    if pair_idx:
        firsts = [prompts[i] if pair_input == "prompt_and_response" else "" for i in pair_idx]
        enc = tokenizer(firsts, [responses[i] for i in pair_idx], truncation=True, max_length=max_length)
        for i, ids in zip(pair_idx, enc["input_ids"]):
            out[i] = ids
    if single_idx:
        enc = tokenizer([prompts[i] for i in single_idx], truncation=True, max_length=max_length)
        for i, ids in zip(single_idx, enc["input_ids"]):
            out[i] = ids
    return out  # type: ignore[return-value]


def pad_batch(rows: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded input_ids and attention_mask, both [batch, longest row]."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return {"input_ids": ids, "attention_mask": mask}


@torch.no_grad()
def score_logits(model, tokenizer, encoded: list[list[int]], batch_size: int = 64, device="cpu") -> list[float]:
    """z = logit_refuse - logit_comply per row (p_refuse = sigmoid(z)). Rows are batched by
    length so padding stays small."""
    model.eval()
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    out = [0.0] * len(encoded)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = {k: v.to(device) for k, v in pad_batch([encoded[i] for i in idx], tokenizer.pad_token_id).items()}
        logits = model(**batch).logits.float()  # [batch, 2]
        z = (logits[:, REFUSE] - logits[:, 1 - REFUSE]).tolist()
        for i, v in zip(idx, z):
            out[i] = v
    return out


def score(model, tokenizer, encoded: list[list[int]], batch_size: int = 64, device="cpu") -> list[float]:
    """p_refuse per row (uncalibrated: softmax of the two logits)."""
    z = torch.tensor(score_logits(model, tokenizer, encoded, batch_size, device), dtype=torch.float64)
    return torch.sigmoid(z).tolist()


class DecisionClassifier:
    """A trained classifier plus its threshold: the API later stages and the service call."""

    def __init__(self, model, tokenizer, meta: dict, device: str | None = None):
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.meta = meta
        # Two uses, two thresholds: reading a (prompt, response) pair, and deciding from
        # the prompt alone before any response exists.
        self.threshold = float(meta.get("threshold", 0.5))
        self.prompt_threshold = float(meta.get("prompt_threshold", self.threshold))
        self.max_length = int(meta.get("max_length", 256))
        self.pair_input = str(meta.get("pair_input", "prompt_and_response"))  # older models read both
        # Temperature per row kind; a model saved before calibration existed has none: T = 1.
        calibration = meta.get("calibration") or {}
        self.temperature = float((calibration.get("pairs") or {}).get("temperature", 1.0))
        self.prompt_temperature = float((calibration.get("prompt_only") or {}).get("temperature", 1.0))

    @property
    def version(self) -> str:
        """The first 12 hex digits of the training data's fingerprint (meta.json), "unknown"
        for a folder without one."""
        return str((self.meta.get("data") or {}).get("fingerprint") or "unknown")[:12]

    @classmethod
    def load(cls, path: str | Path, device: str | None = None) -> "DecisionClassifier":
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        path = Path(path)
        meta_path = path / META
        if not meta_path.is_file():
            raise PresafeError(f"{path}: not a presafe classifier (no {META}); train one with `presafe classifier train`")
        meta = json.loads(meta_path.read_text())
        model = AutoModelForSequenceClassification.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        return cls(model, tokenizer, meta, device)

    def predict_proba(self, prompts: list[str], responses: list[str | None] | None = None,
                      batch_size: int = 64) -> list[float]:
        responses = list(responses) if responses is not None else [None] * len(prompts)
        if len(responses) != len(prompts):
            raise ValueError(f"got {len(prompts)} prompts but {len(responses)} responses")
        # An empty response means "no response yet": the prompt-only decision.
        responses = [r if (r is not None and r.strip()) else None for r in responses]
        encoded = encode(self.tokenizer, list(prompts), responses, self.max_length, self.pair_input)
        z = torch.tensor(score_logits(self.model, self.tokenizer, encoded, batch_size, self.device), dtype=torch.float64)
        t = torch.tensor([self.temperature if r is not None else self.prompt_temperature for r in responses],
                         dtype=torch.float64)
        return torch.sigmoid(z / t).tolist()

    def predict(self, prompts: list[str], responses: list[str | None] | None = None,
                batch_size: int = 64) -> list[Decision]:
        responses = list(responses) if responses is not None else [None] * len(prompts)
        probs = self.predict_proba(prompts, responses, batch_size)
        return [Decision(p, "refuse" if p >= self.threshold_for(r) else "comply") for p, r in zip(probs, responses)]

    def threshold_for(self, response: str | None) -> float:
        """The pair threshold, or the prompt-only one when there is no response yet."""
        return self.threshold if (response is not None and response.strip()) else self.prompt_threshold


def save_classifier(model, tokenizer, meta: dict, path: Path) -> None:
    """Write model, tokenizer and meta.json into `path` (an empty or new folder)."""
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    (path / META).write_text(json.dumps(meta, indent=2, default=str))
