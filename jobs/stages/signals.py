"""Stage 2, signals: the decision classifier scores each (prompt, safe response).

Output `<job_dir>/signals.jsonl` (decisions + p_refuse, decision) and
`signals_summary.json` (refusal rates on harmful and benign prompts). Stops when the safe
model refuses fewer harmful prompts than `signals.refusal_floor`.
"""

from __future__ import annotations

from pathlib import Path

from jobs.artifacts import read_jsonl, write_json, write_jsonl
from jobs.errors import PresafeError
from jobs.pipeline_config import PipelineConfig
from jobs.stages.decide import DECISIONS

SIGNALS = "signals.jsonl"
SUMMARY = "signals_summary.json"
CLASSIFIER = "classifier"


class UnsafeSafeModelError(PresafeError):
    """The CoT-off model does not refuse enough harmful prompts to teach anything."""


def summarize(rows: list[dict]) -> dict:
    harmful = [r for r in rows if r.get("harmful")]
    benign = [r for r in rows if r.get("harmful") is False]

    def rate(part):
        return sum(r["decision"] == "refuse" for r in part) / len(part) if part else None

    return {"prompts": len(rows), "harmful": len(harmful), "benign": len(benign),
            "harmful_refusal_rate": rate(harmful), "benign_refusal_rate": rate(benign)}


def classifier_dir(cfg: PipelineConfig) -> Path:
    """The job's classifier: the one trained in the job when signals.train is set."""
    return Path(cfg.job_dir) / CLASSIFIER if cfg.signals.train is not None else Path(cfg.signals.classifier)


def run_signals(cfg: PipelineConfig, classifier=None) -> Path:
    from jobs.classifier.model import DecisionClassifier

    job = Path(cfg.job_dir)
    rows = read_jsonl(job / DECISIONS, "decide")
    clf = classifier or DecisionClassifier.load(classifier_dir(cfg))
    probs = clf.predict_proba([r["prompt"] for r in rows], [r["response"] for r in rows], cfg.signals.batch_size)
    for r, p in zip(rows, probs):
        r["p_refuse"] = p
        r["decision"] = "refuse" if p >= clf.threshold else "comply"
    summary = {**summarize(rows), "classifier": str(classifier_dir(cfg)), "threshold": clf.threshold,
               "refusal_floor": cfg.signals.refusal_floor}
    write_json(job / SUMMARY, summary)
    rate = summary["harmful_refusal_rate"]
    print(f"[signals] safe model refuses {rate if rate is None else f'{rate:.1%}'} of harmful and "
          f"{summary['benign_refusal_rate'] if summary['benign_refusal_rate'] is None else format(summary['benign_refusal_rate'], '.1%')}"
          " of benign prompts", flush=True)
    if rate is not None and rate < cfg.signals.refusal_floor:
        raise UnsafeSafeModelError(
            f"the safe model (CoT off) refuses only {rate:.1%} of {summary['harmful']} harmful prompts, below "
            f"signals.refusal_floor={cfg.signals.refusal_floor:.0%}: it is not safe enough to teach anything. "
            f"Use a safer safe model (decide.safe_model), check the CoT-off template, or lower the floor "
            f"deliberately. Details: {job / SUMMARY}"
        )
    return write_jsonl(job / SIGNALS, rows)
