"""Safety-recovery rows: refusals that come back after a compliant start.

A refusal target trains the first tokens after t*. Under sampling the model sometimes
draws a compliant first token anyway, and from there it has only ever seen compliant
continuations. A recovery row (Qi et al., ICLR 2025: "Safety Alignment Should Be Made More
Than Just a Few Tokens Deep") shows the way back: the think block opens with the first k
tokens of the LRM's own sampled CoT-ON answer, then a turn-back sentence, the think block
closes and the same refusal follows. The compliant start is context only: it carries no LM
loss (`prefix` of the row), so the model never learns to write it.

`targets.recovery` configures it; the targets stage counts the rows it adds.
"""

from __future__ import annotations

import hashlib
import logging

from jobs.pipeline_config import PipelineConfig
from jobs.stages.generate import generate_texts

log = logging.getLogger(__name__)


def prefix_length(key: str, seed: int, available: int, longest: int) -> int:
    """k for prompt `key`: uniform in 1..min(available, longest), the same on every run and
    machine (a hash, not Python's per-process `hash`)."""
    top = min(available, longest)
    digest = hashlib.sha256(f"recovery:{seed}:{key}".encode()).digest()
    return 1 + int.from_bytes(digest[:8], "big") % top


def thinking_tokens(tokenizer, text: str, think_close: str) -> list[int]:
    """The tokens of a generated CoT-ON answer before its think block's end (the turn back
    has to happen inside the thinking)."""
    return tokenizer(text.split(think_close, 1)[0], add_special_tokens=False)["input_ids"]


def recovery_rows(cfg: PipelineConfig, tokenizer, refusals: list[tuple[dict, str, str]], engine=None) -> list[dict]:
    """One recovery row per (target row, CoT-ON prompt text, refusal answer) of a
    harmful-labelled refusal target. A sampled start that is empty (the model closed its
    think block at once) gives no row."""
    r = cfg.targets.recovery
    if not refusals:
        return []
    d = cfg.decide
    log.info("sampling %d compliant CoT-ON starts for recovery rows", len(refusals))
    outs = generate_texts(cfg.model, cfg.dtype, [on for _, on, _ in refusals], r.generation, d.num_actors,
                          d.cpus_per_actor, d.gpus_per_actor, engine=engine, desc="targets (recovery starts)",
                          resources=d.resources_per_actor, engine_cfg=cfg.generation)
    close = cfg.template.think_close
    rows = []
    for (target, _, answer), out in zip(refusals, outs):
        ids = thinking_tokens(tokenizer, out, close)
        if not ids:
            continue
        k = prefix_length(str(target["id"]), cfg.targets.seed, len(ids), r.generation.max_new_tokens)
        prefix = tokenizer.decode(ids[:k])
        rows.append({**target, "id": f"{target['id']}#recovery", "origin": "recovery", "prefix": prefix,
                     "completion": f"\n{r.text.strip()}\n{close}\n\n{answer.strip()}"})
    return rows
