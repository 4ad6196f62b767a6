"""Refusal targets: the wording of a rewritten refusal and the think block before it.

A harmful prompt the safe model did not refuse gets a refusal written here (one of several
wordings, picked per prompt id, or the user's `targets.refusal_source`). Every refusal
target's think block is empty, a fixed text, or a safety rationale the LRM writes itself
with CoT on under a safety system prompt (`targets.refusal_thinking`).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import replace

from jobs.data.builtin import REFUSALS
from jobs.data.readers import DataSource, read_prompts
from jobs.errors import DataError
from jobs.evaluation.judges import StringMatchJudge
from jobs.pipeline_config import PipelineConfig
from jobs.stages.generate import generate_texts
from jobs.templates import prompt_texts, split_thinking

log = logging.getLogger(__name__)

# The built-in classifier set's refusals that do not name the task, plus a few more: a
# rewritten target never repeats the harmful request back.
WORDINGS = [r for r in REFUSALS if "{t}" not in r] + [
    "I can't help with that. It could put people at risk of serious harm.",
    "I'm not going to help with this request, because it could be used to hurt someone.",
    "Sorry, that's a request I have to decline. I'm happy to help with something else.",
]


def pick_refusal(key: str, seed: int, wordings: list[str]) -> str:
    """One wording for prompt `key`: the same on every run and machine (a hash, not
    Python's per-process `hash`), spread evenly over the wordings."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return wordings[int.from_bytes(digest[:8], "big") % len(wordings)]


def refusal_wordings(src: DataSource | None) -> list[str]:
    """The user's refusals (`targets.refusal_source`) or presafe's own."""
    if src is None:
        return list(WORDINGS)
    texts = [r.prompt.strip() for r in read_prompts(src) if r.prompt and r.prompt.strip()]
    if not texts:
        raise DataError(f"targets.refusal_source: {src.path} holds no refusal texts")
    return texts


def safety_rationales(cfg: PipelineConfig, tokenizer, prompts: list[str], engine=None) -> list[str | None]:
    """`refusal_thinking: generated`: per prompt, the thinking the LRM writes with CoT on
    under `targets.safety_system_prompt`, or None when its think block did not close or its
    own final answer does not refuse (string match: a judge independent of the signal
    classifier, and one that needs no model)."""
    t, d = cfg.targets, cfg.decide
    system = "\n\n".join(s for s in (cfg.template.system_prompt, t.safety_system_prompt) if s)
    template = replace(cfg.template, system_prompt=system)
    texts = [prompt_texts(tokenizer, p, template)[1] for p in prompts]
    log.info("writing %d safety rationales with CoT on", len(texts))
    outs = generate_texts(cfg.model, cfg.dtype, texts, t.rationale_generation, d.num_actors, d.cpus_per_actor,
                          d.gpus_per_actor, engine=engine, desc="targets (safety rationales)",
                          resources=d.resources_per_actor, engine_cfg=cfg.generation)
    splits = [split_thinking(o, cfg.template) for o in outs]
    verdicts = StringMatchJudge().judge(prompts, [s.answer or "-" for s in splits])
    return [s.thinking if s.closed and s.thinking and v.decision == "refuse" else None
            for s, v in zip(splits, verdicts)]
