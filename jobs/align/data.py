"""Alignment rows -> token tensors: prompt (CoT-ON generation prompt) + target, labels on
the target tokens only, t* and the decision signal per row."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from jobs.align.losses import IGNORE
from jobs.artifacts import read_jsonl
from jobs.errors import DataError
from jobs.templates import TemplateConfig, render_prompt


@dataclass
class AlignRow:
    """One line of targets.jsonl."""

    prompt: str
    completion: str
    """Assistant text after the CoT-ON generation prompt (think block + answer)."""
    signal: float
    """p_refuse of the safe model's answer (soft signal)."""
    decision: str
    """refuse | comply, by tau."""
    source: str = ""
    origin: str = ""
    """safe_refusal | rewritten_refusal | self | reference | recovery."""
    prefix: str = ""
    """Assistant text between the prompt and `completion` that carries no LM loss: a
    recovery row's compliant start (jobs/stages/recovery.py). Empty for every other row."""


@dataclass
class AlignExample:
    input_ids: list[int]
    labels: list[int]
    t_star: int
    signal: float
    decision_tokens: int = 0
    """How many target tokens after t* carry the decision weight (0 = none)."""


def read_rows(path: str | Path) -> list[AlignRow]:
    rows = []
    for i, rec in enumerate(read_jsonl(path, "targets"), 1):
        try:
            rows.append(AlignRow(**{k: rec[k] for k in AlignRow.__dataclass_fields__ if k in rec}))
        except TypeError as e:
            raise DataError(f"{path}: row {i} is not a targets row: {e}") from None
    return rows


def build_example(tokenizer, row: AlignRow, template: TemplateConfig, max_length: int, hard: bool,
                  decision_tokens: int = 0) -> AlignExample | None:
    """Tokens of prompt + prefix + completion + eos, labels masked (IGNORE) on the prompt
    and the prefix (a recovery row's compliant start is context, never learned). Returns
    None when they exceed max_length: a target is dropped, never truncated (a cut-off CoT
    teaches the model to stop mid-thought); the caller counts the drops."""
    rendered = render_prompt(tokenizer, row.prompt, cot=True, cfg=template)
    prompt_ids = rendered.input_ids
    context = prompt_ids + (tokenizer(row.prefix, add_special_tokens=False)["input_ids"] if row.prefix else [])
    target_ids = tokenizer(row.completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    if len(context) + len(target_ids) > max_length:
        return None
    signal = float(row.decision == "refuse") if hard else float(row.signal)
    return AlignExample(context + target_ids, [IGNORE] * len(context) + target_ids, rendered.t_star, signal,
                        min(decision_tokens, len(target_ids)))


def collate(examples: list[AlignExample], pad_id: int, decision_weight: float = 1.0,
            decision_temperature: float = 1.0) -> dict[str, torch.Tensor]:
    """Right-padded batch: input_ids/attention_mask/labels [B, T], t_star/signal [B]; with
    decision_weight != 1 also label_weights [B, T]: the first `decision_tokens` target
    tokens of each row weigh decision_weight in the LM loss, the others 1; with
    decision_temperature != 1 also label_temperatures [B, T]: the same tokens' logits are
    divided by it in the LM loss, the others by 1.
    Right padding leaves t* where the prompt put it."""
    width = max(len(e.input_ids) for e in examples)
    n = len(examples)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    labels = torch.full((n, width), IGNORE, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    for i, e in enumerate(examples):
        ids[i, : len(e.input_ids)] = torch.tensor(e.input_ids)
        labels[i, : len(e.labels)] = torch.tensor(e.labels)
        mask[i, : len(e.input_ids)] = 1
    out = {
        "input_ids": ids,
        "attention_mask": mask,
        "labels": labels,
        "t_star": torch.tensor([e.t_star for e in examples], dtype=torch.long),
        "signal": torch.tensor([e.signal for e in examples], dtype=torch.float32),
    }
    if decision_weight != 1.0:
        out["label_weights"] = _decision_map(examples, width, decision_weight)
    if decision_temperature != 1.0:
        out["label_temperatures"] = _decision_map(examples, width, decision_temperature)
    return out


def _decision_map(examples: list[AlignExample], width: int, value: float) -> torch.Tensor:
    """[B, T] ones, with `value` on each row's first `decision_tokens` target labels."""
    out = torch.ones((len(examples), width), dtype=torch.float32)
    for i, e in enumerate(examples):
        start = next(j for j, lab in enumerate(e.labels) if lab != IGNORE)  # the first target token
        out[i, start : start + e.decision_tokens] = value
    return out
