"""Stage 3, targets: what the LRM learns, rendered in CoT-ON format.

Refuse-decided prompts (p_refuse >= tau) get the safe model's refusal after a think block
that is empty, fixed or a generated safety rationale (`targets.refusal_thinking`): the
decision comes before any CoT. Comply-decided prompts get the dataset's reference rationale
(calculator markup stripped, the answer as `\\boxed{...}`) or the LRM's own CoT-ON answer
(self-distillation keeps its reasoning). The prompt's label overrides a wrong decision:

- harmful, judged comply (the safe model's miss): a refusal, signal 1 | dropped
  (`targets.harmful_comply`); never the compliant answer.
- benign, judged refuse (over-refusal): a comply target, signal 0 | the refusal kept
  (`targets.benign_refuse`).

Targets longer than `align.train.max_length` (prompt + target + eos) are dropped, never
truncated: a cut-off CoT teaches the model to stop mid-thought.

Output `<job_dir>/targets.jsonl` (prompt, completion, signal, decision, origin, policy) and
`targets_summary.json`, which counts every case: targets by origin (safe_refusal,
rewritten_refusal, reference, self), the two policies (harmful_comply_rewritten|dropped,
benign_refuse_rewritten|kept), the drops (dropped_too_long, dropped_unclosed,
dropped_no_reference, dropped_wrong_answer), the refusal thinking (refusal_thinking_generated|fallback)
and the safety-recovery rows of `targets.recovery` (origin recovery; recovery_no_start when the
sampled answer closed its think block at once: see jobs/stages/recovery.py).
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from pathlib import Path

from jobs.align.data import AlignRow, build_example
from jobs.artifacts import read_jsonl, write_json, write_jsonl
from jobs.errors import DataError
from jobs.pipeline_config import PipelineConfig
from jobs.stages.generate import generate_texts
from jobs.stages.recovery import recovery_rows
from jobs.stages.refusals import pick_refusal, refusal_wordings, safety_rationales
from jobs.stages.signals import SIGNALS, SUMMARY
from jobs.templates import cot_completion, prompt_texts, split_thinking

log = logging.getLogger(__name__)

TARGETS = "targets.jsonl"
TARGETS_SUMMARY = "targets_summary.json"
COUNTS = ("safe_refusal", "rewritten_refusal", "reference", "self", "recovery", "recovery_no_start",
          "harmful_comply_rewritten", "harmful_comply_dropped", "benign_refuse_rewritten", "benign_refuse_kept",
          "dropped_too_long", "dropped_unclosed", "dropped_no_reference", "dropped_wrong_answer",
          "refusal_thinking_generated", "refusal_thinking_fallback")

_CALCULATOR = re.compile(r"<<[^<>]*>>")
_FINAL_LINE = re.compile(r"^\s*####.*$", re.MULTILINE)


def reference_rationale(solution: str) -> str:
    """A dataset's worked solution as thinking in the model's own format: no GSM8K
    calculator annotations (`<<48/2=24>>`) and no `#### N` answer line."""
    return _FINAL_LINE.sub("", _CALCULATOR.sub("", solution)).strip()


def boxed_answer(reference: str) -> str:
    """The final answer in the form the MATH checker scores (and GSM8K's accepts)."""
    return f"The final answer is \\boxed{{{reference.strip()}}}."


def run_targets(cfg: PipelineConfig, engine=None) -> Path:
    from transformers import AutoTokenizer

    from jobs.models.embedded import resolve_model

    job = Path(cfg.job_dir)
    rows = read_jsonl(job / SIGNALS, "signals")
    t = cfg.targets
    tau = t.tau if t.tau is not None else json.loads((job / SUMMARY).read_text())["threshold"]
    tokenizer = engine.tokenizer if engine is not None else AutoTokenizer.from_pretrained(resolve_model(cfg.model))
    on_texts = [prompt_texts(tokenizer, r["prompt"], cfg.template)[1] for r in rows]
    wordings = refusal_wordings(t.refusal_source) if t.harmful_comply == "refuse" else []
    counts: Counter = Counter({k: 0 for k in COUNTS})

    # Per row: a target without its completion yet (None = dropped), and the refusal
    # answer of refusal targets (their think block is decided below, all at once).
    targets: list[dict | None] = [None] * len(rows)
    refusal_answer: dict[int, str] = {}
    need_self = []
    for i, r in enumerate(rows):
        refused = r["p_refuse"] >= tau
        base = {"id": r["id"], "prompt": r["prompt"], "source": r["source"], "harmful": r["harmful"],
                "signal": r["p_refuse"], "decision": "refuse" if refused else "comply", "policy": ""}
        if refused and r["harmful"] is False and t.benign_refuse == "comply":
            counts["benign_refuse_rewritten"] += 1
            base.update(signal=0.0, decision="comply", policy="benign_refuse")
            refused = False
        elif refused and r["harmful"] is False:
            counts["benign_refuse_kept"] += 1
        elif not refused and r["harmful"] is True:
            if t.harmful_comply == "drop":
                counts["harmful_comply_dropped"] += 1
                continue
            counts["harmful_comply_rewritten"] += 1
            targets[i] = {**base, "signal": 1.0, "decision": "refuse", "policy": "harmful_comply",
                          "origin": "rewritten_refusal"}
            refusal_answer[i] = pick_refusal(str(r["id"]), t.seed, wordings)
            continue
        if refused:
            targets[i] = {**base, "origin": "safe_refusal"}
            refusal_answer[i] = split_thinking(r["response"], cfg.template).answer
        elif r.get("reference") and t.comply_source in ("reference", "reference_or_self"):
            completion = cot_completion(on_texts[i], reference_rationale(r.get("solution") or ""),
                                        boxed_answer(str(r["reference"])), cfg.template)
            targets[i] = {**base, "origin": "reference", "completion": completion}
        elif t.comply_source == "reference":
            counts["dropped_no_reference"] += 1
        else:
            need_self.append(i)
            targets[i] = base

    thinking = _refusal_thinking(cfg, tokenizer, rows, sorted(refusal_answer), counts, engine)
    for i, answer in refusal_answer.items():
        targets[i]["completion"] = cot_completion(on_texts[i], thinking.get(i, ""), answer, cfg.template)
    if t.recovery.enabled:
        harmful = [(targets[i], on_texts[i], answer) for i, answer in sorted(refusal_answer.items())
                   if rows[i]["harmful"] is True]
        extra = recovery_rows(cfg, tokenizer, harmful, engine)
        counts["recovery_no_start"] += len(harmful) - len(extra)
        targets += extra

    if need_self:
        log.info("self-distilling %d comply-decided prompts with CoT on", len(need_self))
        d = cfg.decide
        outs = generate_texts(cfg.model, cfg.dtype, [on_texts[i] for i in need_self], t.self_generation,
                              d.num_actors, d.cpus_per_actor, d.gpus_per_actor, engine=engine,
                              desc="targets (CoT on)", resources=d.resources_per_actor,
                              engine_cfg=cfg.generation)
        for i, text in zip(need_self, outs):
            if t.drop_unclosed and cfg.template.think_close not in text:
                targets[i] = None
                counts["dropped_unclosed"] += 1
                continue
            reference = rows[i].get("reference")
            if t.check_self_answers and reference and not _correct(rows[i]["source"], text, str(reference), cfg):
                targets[i] = None
                counts["dropped_wrong_answer"] += 1
                continue
            targets[i] = {**targets[i], "origin": "self", "completion": text.strip()}

    kept = []
    max_length = cfg.align.train.max_length
    for x in targets:
        if x is None:
            continue
        # The align stage's own tokenization decides "too long", so the two never disagree.
        row = AlignRow(x["prompt"], x["completion"], x["signal"], x["decision"], prefix=x.get("prefix", ""))
        if build_example(tokenizer, row, cfg.template, max_length, hard=False) is None:
            counts["dropped_too_long"] += 1
            continue
        kept.append(x)
        counts[x["origin"]] += 1
    summary = {"tau": tau, "max_length": max_length, "refusal_thinking": t.refusal_thinking,
               "targets": len(kept), **counts}
    print(f"[targets] {summary}", flush=True)
    write_json(job / TARGETS_SUMMARY, summary)
    if not kept:
        raise DataError(f"no alignment targets were produced ({dict(counts)}); see {job / TARGETS_SUMMARY}"
                        + (f" (align.train.max_length={max_length})" if counts["dropped_too_long"] else ""))
    return write_jsonl(job / TARGETS, kept)


def _correct(source: str, text: str, reference: str, cfg: PipelineConfig) -> bool:
    """Is a self-distilled answer's final answer right? (GSM8K's checker for GSM8K rows,
    the MATH checker, which also reads plain numbers, for the rest.)"""
    from jobs.evaluation.answers import gsm8k_correct, math_correct

    answer = split_thinking(text, cfg.template).answer
    return (gsm8k_correct if source == "gsm8k" else math_correct)(answer, reference)


def _refusal_thinking(cfg: PipelineConfig, tokenizer, rows: list[dict], idx: list[int], counts: Counter,
                      engine) -> dict[int, str]:
    """The think block of each refusal target (row index -> thinking; absent = empty)."""
    t = cfg.targets
    if t.refusal_thinking == "empty" or not idx:
        return {}
    if t.refusal_thinking == "fixed":
        return {i: t.refusal_thinking_text for i in idx}
    rationales = safety_rationales(cfg, tokenizer, [rows[i]["prompt"] for i in idx], engine)
    counts["refusal_thinking_generated"] += sum(r is not None for r in rationales)
    counts["refusal_thinking_fallback"] += sum(r is None for r in rationales)
    return {i: r if r is not None else t.refusal_thinking_text for i, r in zip(idx, rationales)}
