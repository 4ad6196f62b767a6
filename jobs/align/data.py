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


def refusal_share_counts(n_refuse: int, n_comply: int, share: float | None) -> tuple[int, int]:
    """Refusal and comply rows in one epoch when refusal rows are to make up `share` of it:
    the side short of its share is repeated (nothing is dropped), the other kept as is.
    None: the natural mix. Raises DataError when a share is asked of a side with no rows."""
    if share is None:
        return n_refuse, n_comply
    if n_refuse == 0 or n_comply == 0:
        raise DataError(f"align.train.refusal_share={share} needs both refuse and comply targets; "
                        f"got {n_refuse} refuse and {n_comply} comply")
    if n_refuse / (n_refuse + n_comply) < share:
        return max(n_refuse, round(share * n_comply / (1 - share))), n_comply
    return n_refuse, max(n_comply, round((1 - share) * n_refuse / share))


def epoch_order(refuse: list[bool], share: float | None, generator: torch.Generator) -> list[int]:
    """One epoch's order of example indices: each example once, shuffled; with `share`,
    the short side's rows repeated so refusal rows make up `share` of the epoch (each
    row floor or ceil times, the extra copies drawn at random, so no row is favoured)."""
    if share is None:
        return torch.randperm(len(refuse), generator=generator).tolist()
    refuse_ids = [i for i, r in enumerate(refuse) if r]
    comply_ids = [i for i, r in enumerate(refuse) if not r]
    want_r, want_c = refusal_share_counts(len(refuse_ids), len(comply_ids), share)
    order = _repeat_to(refuse_ids, want_r, generator) + _repeat_to(comply_ids, want_c, generator)
    return [order[i] for i in torch.randperm(len(order), generator=generator).tolist()]


def _repeat_to(ids: list[int], count: int, generator: torch.Generator) -> list[int]:
    whole, extra = divmod(count, len(ids)) if ids else (0, 0)
    picks = torch.randperm(len(ids), generator=generator)[:extra].tolist() if extra else []
    return ids * whole + [ids[i] for i in picks]


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
