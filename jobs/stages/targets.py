"""Stage 3, targets: what the LRM learns, rendered in CoT-ON format.

Refuse-decided prompts (p_refuse >= tau) get the safe model's refusal after an empty (or
configured) think block: the decision comes before any CoT. Comply-decided prompts get
the dataset's reference answer or the LRM's own CoT-ON answer (self-distillation keeps
its reasoning). Output `<job_dir>/targets.jsonl` (prompt, completion, signal, decision,
origin); loss masks are applied at training time (assistant tokens only).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from jobs.artifacts import read_jsonl, write_json, write_jsonl
from jobs.errors import DataError
from jobs.pipeline_config import PipelineConfig
from jobs.stages.generate import generate_texts
from jobs.stages.signals import SIGNALS, SUMMARY
from jobs.templates import cot_completion, prompt_texts, split_thinking

TARGETS = "targets.jsonl"
TARGETS_SUMMARY = "targets_summary.json"


def run_targets(cfg: PipelineConfig, engine=None) -> Path:
    import json

    from transformers import AutoTokenizer

    from jobs.models.embedded import resolve_model

    job = Path(cfg.job_dir)
    rows = read_jsonl(job / SIGNALS, "signals")
    t = cfg.targets
    tau = t.tau if t.tau is not None else json.loads((job / SUMMARY).read_text())["threshold"]
    tokenizer = engine.tokenizer if engine is not None else AutoTokenizer.from_pretrained(resolve_model(cfg.model))
    on_texts = [prompt_texts(tokenizer, r["prompt"], cfg.template)[1] for r in rows]

    targets: list[dict | None] = [None] * len(rows)
    need_self = []
    counts: Counter = Counter()
    for i, r in enumerate(rows):
        decision = "refuse" if r["p_refuse"] >= tau else "comply"
        base = {"id": r["id"], "prompt": r["prompt"], "source": r["source"], "harmful": r["harmful"],
                "signal": r["p_refuse"], "decision": decision}
        if decision == "refuse":
            answer = split_thinking(r["response"], cfg.template).answer
            targets[i] = {**base, "origin": "safe_refusal",
                          "completion": cot_completion(on_texts[i], t.refusal_thinking, answer, cfg.template)}
        elif r.get("reference") and t.comply_source in ("reference", "reference_or_self"):
            targets[i] = {**base, "origin": "reference",
                          "completion": cot_completion(on_texts[i], r.get("solution") or "", str(r["reference"]),
                                                        cfg.template)}
        elif t.comply_source == "reference":
            counts["dropped_no_reference"] += 1
        else:
            need_self.append(i)
            targets[i] = base

    if need_self:
        print(f"[targets] self-distilling {len(need_self)} comply-decided prompts with CoT on", flush=True)
        d = cfg.decide
        outs = generate_texts(cfg.model, cfg.dtype, [on_texts[i] for i in need_self], t.self_generation,
                              d.num_actors, d.cpus_per_actor, d.gpus_per_actor, engine=engine,
                              desc="targets (CoT on)")
        for i, text in zip(need_self, outs):
            if t.drop_unclosed and cfg.template.think_close not in text:
                targets[i] = None
                counts["dropped_unclosed_thinking"] += 1
                continue
            targets[i] = {**targets[i], "origin": "self", "completion": text.strip()}

    kept = [x for x in targets if x is not None]
    counts.update(x["origin"] for x in kept)
    summary = {"tau": tau, "targets": len(kept), **counts}
    print(f"[targets] {summary}", flush=True)
    if not kept:
        raise DataError(f"no alignment targets were produced ({dict(counts)}); see {job / TARGETS_SUMMARY}")
    write_json(job / TARGETS_SUMMARY, summary)
    return write_jsonl(job / TARGETS, kept)
