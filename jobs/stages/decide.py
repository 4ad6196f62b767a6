"""Stage 1, decide: the safe model answers every training prompt with CoT OFF.

Output `<job_dir>/decisions.jsonl`: id, prompt, source, harmful, reference, response,
generation settings.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from jobs.artifacts import write_json, write_jsonl
from jobs.data.readers import read_prompts
from jobs.data.records import PromptRecord
from jobs.errors import DataError
from jobs.pipeline_config import PipelineConfig, PromptSets
from jobs.stages.generate import generate_texts
from jobs.templates import render_prompt

DECISIONS = "decisions.jsonl"
DECISIONS_META = "decisions_meta.json"


def load_prompts(sets: PromptSets) -> list[PromptRecord]:
    """Harmful and benign training prompts, de-duplicated, each source limited."""
    out, seen = [], set()
    for harmful, sources in ((True, sets.harmful), (False, sets.benign)):
        for src in sources:
            records = read_prompts(src)
            # XSTest labels each prompt (its contrast_* types are unsafe): a set under the
            # wrong section would train refusals of safe prompts or compliance with unsafe ones.
            wrong = [r for r in records if src.format == "xstest" and r.harmful is not harmful]
            if wrong:
                section = "prompts.harmful" if harmful else "prompts.benign"
                raise DataError(f"{section}: {src.path} has {len(wrong)} XSTest prompts labelled "
                                f"{'safe' if harmful else 'unsafe'} (types {sorted({r.category for r in wrong})}); "
                                "keep the right types with `categories: [...]`")
            taken, cap = 0, (None if src.limit else sets.limit_per_set)  # read_prompts cut to src.limit
            for r in records:
                if cap and taken >= cap:
                    break
                if r.prompt in seen:
                    continue
                seen.add(r.prompt)
                r.harmful = harmful
                out.append(r)
                taken += 1
    if not out:
        raise DataError("no training prompts: prompts.harmful and prompts.benign are empty")
    return out


def run_decide(cfg: PipelineConfig, engine=None) -> Path:
    from transformers import AutoTokenizer

    from jobs.models.embedded import resolve_model

    records = load_prompts(cfg.prompts)
    model = cfg.decide.safe_model or cfg.model
    tokenizer = engine.tokenizer if engine is not None else AutoTokenizer.from_pretrained(resolve_model(model))
    texts = [render_prompt(tokenizer, r.prompt, cot=False, cfg=cfg.template).text for r in records]
    print(f"[decide] {len(records)} prompts ({sum(r.harmful for r in records)} harmful), safe model {model}, CoT off",
          flush=True)
    d = cfg.decide
    placements: dict = {}
    responses = generate_texts(model, cfg.dtype, texts, d.generation, d.num_actors, d.cpus_per_actor,
                               d.gpus_per_actor, engine=engine, desc="decide (CoT off)",
                               resources=d.resources_per_actor, record=placements, engine_cfg=cfg.generation)
    settings = {"model": model, "cot": False, **asdict(d.generation)}
    # Where the safe model ran (actor node ids and pids; none = the driver's process).
    write_json(Path(cfg.job_dir) / DECISIONS_META, {"model": model, "prompts": len(records),
                                                    "engine": cfg.generation.engine,
                                                    "workers": placements.get("workers", [])})
    rows = [
        {"id": r.id or f"p{i}", "prompt": r.prompt, "source": r.source, "harmful": r.harmful,
         "reference": r.reference, "solution": r.solution, "response": resp, "generation": settings}
        for i, (r, resp) in enumerate(zip(records, responses))
    ]
    return write_jsonl(Path(cfg.job_dir) / DECISIONS, rows)
