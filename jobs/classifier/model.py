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
import re
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
           pair_input: str = "prompt_and_response", prompt_truncation: str = "head_tail") -> list[list[int]]:
    """Token ids per row. Prompt-only rows: `[CLS] prompt [SEP]`, a prompt longer than
    max_length cut by `prompt_truncation` (head_tail: its first quarter and last three
    quarters of the budget; right: its start). Pairs: `[CLS] prompt [SEP] response [SEP]`
    (the longer side truncated first), or with pair_input="response" `[CLS] [SEP] response
    [SEP]`: the response in the second segment, as in a pair, so it is never mistaken for
    a prompt."""
    if pair_input not in PAIR_INPUTS:
        raise ValueError(f"pair_input must be one of {PAIR_INPUTS}, got {pair_input!r}")
    if prompt_truncation not in ("head_tail", "right"):
        raise ValueError(f"prompt_truncation must be head_tail or right, got {prompt_truncation!r}")
    out: list[list[int] | None] = [None] * len(prompts)
    pair_idx = [i for i, r in enumerate(responses) if r is not None]
    single_idx = [i for i, r in enumerate(responses) if r is None]
    if pair_idx:
        firsts = [prompts[i] if pair_input == "prompt_and_response" else "" for i in pair_idx]
        enc = tokenizer(firsts, [responses[i] for i in pair_idx], truncation=True, max_length=max_length)
        for i, ids in zip(pair_idx, enc["input_ids"]):
            out[i] = ids
    if single_idx:
        texts = [prompts[i] for i in single_idx]
        if prompt_truncation == "right":
            rows = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
        else:
            lead, trail = _special_counts(tokenizer)
            rows = [head_tail(ids, max_length, lead, trail)
                    for ids in tokenizer(texts, truncation=False, verbose=False)["input_ids"]]
        for i, ids in zip(single_idx, rows):
            out[i] = ids
    return out  # type: ignore[return-value]


PROMPT_SCANS = ("whole", "paragraphs", "sentences")
MAX_SEGMENTS = 32
"""Prompt scanning: at most this many segments per prompt (besides the whole); beyond
that, consecutive segments are read together."""
SENTENCE_CHARS = 120
"""prompt_scan "sentences": consecutive sentences are packed into segments of up to this
many characters (a single longer sentence is a segment of its own)."""
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_RULE = re.compile(r"[-=*_#~\s]+")


def prompt_segments(prompt: str, scan: str = "paragraphs", max_segments: int = MAX_SEGMENTS) -> list[str]:
    """The parts of a prompt a prompt-only decision reads besides the whole (empty when
    there is only one): "paragraphs" splits at blank lines (separator lines like "---"
    dropped); "sentences" also packs each paragraph's sentences into segments of up to
    SENTENCE_CHARS characters; "whole" reads no parts. A request after a long document
    ("{article} \n\n Now write ...") is then read on its own, however long the document."""
    if scan not in PROMPT_SCANS:
        raise ValueError(f"prompt_scan must be one of {PROMPT_SCANS}, got {scan!r}")
    if scan == "whole":
        return []
    parts = [p.strip() for p in _PARAGRAPH_BREAK.split(prompt)]
    parts = [p for p in parts if p and not _RULE.fullmatch(p)]
    if scan == "sentences":
        parts = [seg for p in parts for seg in _pack(_SENTENCE_END.split(p), SENTENCE_CHARS)]
    if len(parts) < 2:
        return []
    size = -(-len(parts) // max_segments)  # ceil: consecutive segments per group
    return ["\n\n".join(parts[i:i + size]) for i in range(0, len(parts), size)]


def _pack(sentences: list[str], max_chars: int) -> list[str]:
    out, cur = [], ""
    for s in (s.strip() for s in sentences):
        if not s:
            continue
        if cur and len(cur) + 1 + len(s) > max_chars:
            out.append(cur)
            cur = s
        else:
            cur = f"{cur} {s}".strip()
    return out + ([cur] if cur else [])


HEAD_SHARE = 0.25
"""head_tail truncation: the share of a long prompt's token budget given to its start."""


def head_tail(ids: list[int], max_length: int, lead: int, trail: int) -> list[int]:
    """`ids` (with `lead` special tokens before the text and `trail` after it) cut to
    max_length by dropping the middle of the text: HEAD_SHARE of the budget from its
    start, the rest from its end."""
    if len(ids) <= max_length:
        return ids
    text = ids[lead:len(ids) - trail]
    budget = max_length - lead - trail
    head = int(budget * HEAD_SHARE)
    return ids[:lead] + text[:head] + text[len(text) - (budget - head):] + ids[len(ids) - trail:]


def _special_counts(tokenizer) -> tuple[int, int]:
    """(special tokens before, after) a single sequence: (1, 1) for BERT's [CLS] x [SEP]."""
    probe = tokenizer("a")["input_ids"]
    text = tokenizer("a", add_special_tokens=False)["input_ids"]
    lead = next((i for i in range(len(probe)) if probe[i:i + len(text)] == text), 0)
    return lead, max(0, len(probe) - lead - len(text))


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
        # Models saved before it existed were trained on short prompts: head_tail reads the
        # long ones they would have cut after their first max_length tokens.
        self.prompt_truncation = str(meta.get("prompt_truncation", "head_tail"))
        self.prompt_scan = str(meta.get("prompt_scan", "paragraphs"))
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
        """Calibrated p_refuse per row. A prompt-only row gets the largest p_refuse of the
        whole prompt and of its segments (prompt_segments, by `prompt_scan`): one harmful
        request decides, wherever it sits."""
        responses = list(responses) if responses is not None else [None] * len(prompts)
        if len(responses) != len(prompts):
            raise ValueError(f"got {len(prompts)} prompts but {len(responses)} responses")
        # An empty response means "no response yet": the prompt-only decision.
        responses = [r if (r is not None and r.strip()) else None for r in responses]
        rows, owner = list(prompts), list(range(len(prompts)))
        for i, (p, r) in enumerate(zip(prompts, responses)):
            if r is None:
                segments = prompt_segments(p, self.prompt_scan)
                rows += segments
                owner += [i] * len(segments)
        row_responses = [responses[i] for i in owner]
        encoded = encode(self.tokenizer, rows, row_responses, self.max_length, self.pair_input, self.prompt_truncation)
        z = torch.tensor(score_logits(self.model, self.tokenizer, encoded, batch_size, self.device), dtype=torch.float64)
        t = torch.tensor([self.temperature if r is not None else self.prompt_temperature for r in row_responses],
                         dtype=torch.float64)
        probs = torch.sigmoid(z / t).tolist()
        out = probs[:len(prompts)]
        for i, p in zip(owner[len(prompts):], probs[len(prompts):]):
            out[i] = max(out[i], p)
        return out

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
