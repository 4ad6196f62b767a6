"""Stage evaluate: base vs aligned (vs the λ = 0 ablation, sweep points, seeds) on
held-out prompts: the generation half. Judging is stage `judge` (jobs.stages.judge), so
other judges can be run on the same samples without generating again.

For every model variant (jobs.variants: base, aligned, lambda0, sweep points, each per
seed), every decoding (greedy; sampled with temperature / top_p / top_k / n seeded samples;
a variant trained with seed s samples with seeds offset by s, so paired variants share
them) and CoT ON (and OFF for the decodings named in `evaluate.cot_off`), every sample is
kept with its thinking and its final answer (the text after the think block; when the
think block never closes, the whole output is both: it never left the thinking), answer
and thinking lengths in tokens, and for reasoning problems whether the answer is right.

Decision probes: for each variant, a logistic probe per layer on the hidden state at t*
of held-out harmful + benign prompts, labelled by the safe decision (the base model's
CoT-OFF greedy decision, read by the job's signal classifier, when that was generated and
has both classes, else the prompt's harmful flag): cross-validated AUROC per layer.

Output: `<job_dir>/evaluation/<variant>/<cot>-<decoding>.jsonl` (every sample) and
`<job_dir>/evaluation/samples.json` (the index of those files, the probes; written last).
"""

from __future__ import annotations

import gc
from dataclasses import asdict
from pathlib import Path

from jobs import events
from jobs.artifacts import write_json, write_jsonl
from jobs.data.readers import read_prompts
from jobs.data.records import PromptRecord
from jobs.errors import DataError
from jobs.evaluation.answers import gsm8k_correct, math_correct
from jobs.generation import GenerationConfig
from jobs.pipeline_config import Decoding, EvaluateConfig, PipelineConfig
from jobs.stages.generate import generate_texts
from jobs.templates import prompt_texts, split_thinking

EVALUATION = "evaluation.json"
EVAL_DIR = "evaluation"
SAMPLES_INDEX = "evaluation/samples.json"
SETS = ("harmful", "benign", "reasoning")


def load_eval_sets(e: EvaluateConfig) -> dict[str, list[PromptRecord]]:
    """Held-out prompts by kind, each source limited to `limit_per_set`."""
    out: dict[str, list[PromptRecord]] = {}
    for kind in SETS:
        records = []
        for src in getattr(e, kind):
            got = read_prompts(src)[: e.limit_per_set] if e.limit_per_set else read_prompts(src)
            if kind == "reasoning":
                missing = [r.id for r in got if not r.reference]
                if missing:
                    raise DataError(f"evaluate.reasoning: {src.path}: {len(missing)} problems have no reference answer "
                                    f"(e.g. {missing[0]}); use gsm8k, math500 or a file with a reference column")
            records += got
        out[kind] = records
    return out


def variants(cfg: PipelineConfig) -> list[dict]:
    """The models to compare, base first: name, group, seed and adapter folder of each
    trained variant whose adapter exists."""
    from jobs.variants import BASE, align_variants

    job = Path(cfg.job_dir)
    out = [{"name": BASE, "group": BASE, "seed": cfg.seeds[0] if cfg.seeds else None, "adapter": None}]
    for v in align_variants(cfg):
        if (job / v.folder / "adapter_config.json").is_file():
            out.append({"name": v.name, "group": v.group, "seed": v.seed, "adapter": job / v.folder})
    return out


def load_variant(cfg: PipelineConfig, adapter: Path | None):
    """(tokenizer, model): the base LRM, with the LoRA adapter merged in when given."""
    from jobs.generation import load_causal_lm

    tokenizer, model = load_causal_lm(cfg.model, cfg.dtype)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload().eval()
    return tokenizer, model


def generate_run(cfg: PipelineConfig, engine, sets: dict[str, list[PromptRecord]], cot: bool, dec: Decoding,
                 desc: str, seed_offset: int = 0) -> list[dict]:
    """All samples of one (CoT mode, decoding) run over every evaluation set."""
    tok = engine.tokenizer
    items = [(kind, r) for kind in SETS for r in sets[kind]]
    texts = [prompt_texts(tok, r.prompt, cfg.template)[1 if cot else 2] for _, r in items]
    e = cfg.evaluate
    outputs: list[dict] = []
    for k in range(dec.samples):
        gen = GenerationConfig(max_new_tokens=e.max_new_tokens, temperature=dec.temperature, top_p=dec.top_p,
                               top_k=dec.top_k, seed=dec.seed + 1000 * k + seed_offset, batch_size=e.batch_size)
        tag = f"{desc} sample {k + 1}/{dec.samples}" if dec.samples > 1 else desc
        for (kind, r), text in zip(items, generate_texts(cfg.model, cfg.dtype, texts, gen, engine=engine, desc=tag)):
            parts = split_thinking(text, cfg.template)
            answer = parts.answer if cot else text.strip()
            # An unclosed think block never left the thinking: all of it is judged as CoT too.
            thinking = (parts.thinking if parts.closed else text.strip()) if cot else ""
            row = {
                "set": kind, "source": r.source, "category": r.category, "id": r.id, "prompt": r.prompt, "reference": r.reference,
                "sample": k, "seed": gen.seed, "output": text, "thinking": thinking, "answer": answer,
                "closed": parts.closed if cot else True,
                "answer_tokens": len(tok(answer, add_special_tokens=False)["input_ids"]),
                "thinking_tokens": len(tok(parts.thinking, add_special_tokens=False)["input_ids"]) if cot else 0,
            }
            if kind == "reasoning":
                check = math_correct if r.source == "math500" else gsm8k_correct
                row["correct"] = bool(check(answer, r.reference))
            outputs.append(row)
    return outputs


def probe_layers(cfg: PipelineConfig, tokenizer, model, prompts: list[str], labels: list[int]) -> list[float | None]:
    from jobs.evaluation.probes import pre_cot_features, probe_auroc_by_layer

    feats = pre_cot_features(model, tokenizer, prompts, cfg.template, batch_size=cfg.evaluate.batch_size)
    return probe_auroc_by_layer(feats, labels, folds=cfg.evaluate.probes.folds, seed=0)


def run_evaluate(cfg: PipelineConfig, classifier=None) -> Path:
    """Generate every variant's samples (see the module docstring); returns the index."""
    from jobs.classifier.model import DecisionClassifier
    from jobs.evaluation.judges import ClassifierJudge
    from jobs.generation import HFEngine
    from jobs.stages.signals import classifier_dir
    from jobs.variants import sampling_seed_offset

    e = cfg.evaluate
    job = Path(cfg.job_dir)
    sets = load_eval_sets(e)
    runs = [(True, d) for d in e.all_decodings()] + [(False, d) for d in e.decodings if d.name in e.cot_off]
    models = variants(cfg)
    print(f"[evaluate] {', '.join(f'{k} {len(v)}' for k, v in sets.items())} prompts; models "
          f"{[m['name'] for m in models]}; runs {[('cot_on' if c else 'cot_off') + '/' + d.name for c, d in runs]}",
          flush=True)
    index: dict = {"sets": {k: len(v) for k, v in sets.items()}, "decodings": [asdict(d) for d in e.all_decodings()],
                   "seeds": cfg.seeds, "variants": {}}
    probe_prompts = [r.prompt for r in sets["harmful"] + sets["benign"]]
    probe_labels = [int(r.harmful) for r in sets["harmful"] + sets["benign"]]
    index["probe_labels"] = "prompt harmful flag"
    total = len(models) * sum(d.samples for _, d in runs) * sum(len(v) for v in sets.values())
    done = 0
    for m in models:
        tokenizer, model = load_variant(cfg, m["adapter"])
        engine = HFEngine(cfg.model, tokenizer=tokenizer, model=model)
        entry: dict = {"group": m["group"], "seed": m["seed"], "adapter": str(m["adapter"]) if m["adapter"] else None,
                       "runs": {}}
        # The base model is evaluated once: its sampled runs use the first seed's offset.
        offset = sampling_seed_offset(m["seed"])
        for cot, dec in runs:
            key = f"{'cot_on' if cot else 'cot_off'}/{dec.name}"
            outputs = generate_run(cfg, engine, sets, cot, dec, desc=f"evaluate {m['name']} {key}",
                                   seed_offset=0 if dec.temperature == 0 else offset)
            rel = f"{EVAL_DIR}/{m['name']}/{key.replace('/', '-')}.jsonl"
            write_jsonl(job / rel, outputs)
            entry["runs"][key] = rel
            done += len(outputs)
            events.progress("evaluate", done, total, "samples")
            if m["name"] == "base" and not cot and dec.temperature == 0 and e.probes.enabled:
                # The safe model's own decisions label the probes: read as the signals were.
                clf = classifier or DecisionClassifier.load(classifier_dir(cfg))
                rows = [o for o in outputs if o["set"] != "reasoning"]
                verdicts = ClassifierJudge("signals", clf).judge([o["prompt"] for o in rows],
                                                                [o["answer"] or " " for o in rows])
                decided = [int(v.decision == "refuse") for v in verdicts]
                if min(sum(decided), len(decided) - sum(decided)) >= e.probes.folds:
                    probe_labels, index["probe_labels"] = decided, "base model CoT-off greedy decisions"
                else:  # one decision (almost) everywhere: nothing to probe; fall back to the flags
                    index["probe_labels"] = "prompt harmful flag (the base model's CoT-off decisions have one class)"
        if e.probes.enabled and probe_prompts:
            entry["probe_auroc"] = probe_layers(cfg, tokenizer, model, probe_prompts, probe_labels)
        index["variants"][m["name"]] = entry
        del engine, model
        gc.collect()
    index["probe_positives"] = sum(probe_labels)
    index["probe_prompts"] = len(probe_prompts)
    return write_json(job / SAMPLES_INDEX, index)
