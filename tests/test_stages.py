"""decide -> signals -> targets on a handful of prompts with a tiny LM and a tiny classifier."""

import json
from pathlib import Path

import pytest

from jobs.artifacts import read_jsonl, write_jsonl
from jobs.config import from_dict
from jobs.pipeline_config import PipelineConfig
from jobs.stages.decide import run_decide
from jobs.stages.signals import UnsafeSafeModelError, run_signals
from jobs.stages.targets import run_targets
from jobs.templates import prompt_texts


@pytest.fixture()
def classifier_dir(tiny_bert, tmp_path):
    """A saved tiny classifier; tests set its threshold to steer decisions."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from jobs.classifier.model import save_classifier

    path = tmp_path / "clf"
    save_classifier(AutoModelForSequenceClassification.from_pretrained(tiny_bert), AutoTokenizer.from_pretrained(tiny_bert),
                    {"threshold": 0.5, "max_length": 64}, path)
    return path


def set_threshold(path: Path, value: float):
    meta = json.loads((path / "meta.json").read_text())
    meta["threshold"] = value
    (path / "meta.json").write_text(json.dumps(meta))


def make_cfg(tmp_path, model, classifier, **extra):
    tmp_path.mkdir(parents=True, exist_ok=True)
    gsm = tmp_path / "gsm.jsonl"
    gsm.write_text("".join(json.dumps({"question": f"What is {i} + {i}?", "answer": f"{i} + {i} = {2 * i}\n#### {2 * i}"})
                           + "\n" for i in range(1, 4)))
    benign = tmp_path / "benign.txt"
    benign.write_text("Tell me about cooking.\nHow do I bake a cake?\n")
    data = {
        "storage_path": str(tmp_path), "job_id": "job", "model": model,
        "prompts": {"harmful": [{"path": "builtin:decisions", "format": "builtin", "limit": 12}],
                    "benign": [{"path": str(gsm), "format": "gsm8k"}, {"path": str(benign), "harmful": False}],
                    "limit_per_set": 3},
        "decide": {"generation": {"max_new_tokens": 8, "batch_size": 4}},
        "signals": {"classifier": str(classifier), "refusal_floor": 0.0},
        "targets": {"self_generation": {"max_new_tokens": 8, "batch_size": 4}, "drop_unclosed": False},
    }
    for k, v in extra.items():
        data[k].update(v)
    return from_dict(PipelineConfig, data)


def test_decide_signals_targets_chain(tiny_lm, classifier_dir, tmp_path):
    cfg = make_cfg(tmp_path, tiny_lm, classifier_dir)
    decisions = read_jsonl(run_decide(cfg))
    assert len(decisions) == 3 + 3 + 2
    assert sum(r["harmful"] for r in decisions) == 3
    assert all(r["generation"]["cot"] is False and isinstance(r["response"], str) for r in decisions)
    assert [r["reference"] for r in decisions if r["source"] == "gsm8k"] == ["2", "4", "6"]

    signals = read_jsonl(run_signals(cfg))
    assert all(0 <= r["p_refuse"] <= 1 and r["decision"] in ("refuse", "comply") for r in signals)
    summary = json.loads((Path(cfg.job_dir) / "signals_summary.json").read_text())
    assert summary["harmful"] == 3 and summary["benign"] == 5

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_lm)
    targets = read_jsonl(run_targets(cfg))
    assert len(targets) == len(signals)
    by_id = {r["id"]: r for r in signals}
    for t in targets:
        src = by_id[t["id"]]
        _, on, _ = prompt_texts(tok, t["prompt"], cfg.template)
        if t["decision"] == "refuse":
            # harmful prompts only (benign ones the safe model refused get comply targets);
            # the safe model's refusal, or a written one where it complied
            assert src["harmful"] and t["origin"] == ("safe_refusal" if src["decision"] == "refuse" else "rewritten_refusal")
            # the empty think block, then the refusal
            assert t["completion"].startswith("\n</think>\n\n")
        elif src["reference"]:
            assert t["origin"] == "reference" and not src["harmful"]
            assert t["completion"].endswith(f"\\boxed{{{src['reference']}}}.") and "</think>" in t["completion"]
        else:
            assert t["origin"] == "self" and not src["harmful"]
        assert on.endswith("<think>\n")  # CoT-ON format: the completion continues the open think block
    # No temporary files left beside the artifacts.
    assert not [p for p in Path(cfg.job_dir).iterdir() if p.name.startswith(".")]


def test_safe_model_not_safe_stops_with_message(tiny_lm, classifier_dir, tmp_path):
    cfg = make_cfg(tmp_path, tiny_lm, classifier_dir, signals={"refusal_floor": 0.5})
    run_decide(cfg)
    set_threshold(classifier_dir, 0.999999)  # nothing is judged a refusal
    with pytest.raises(UnsafeSafeModelError, match=r"refuses only 0.0% of 3 harmful prompts, below "
                                                    r"signals.refusal_floor=50%: it is not safe enough"):
        run_signals(cfg)
    assert not (Path(cfg.job_dir) / "signals.jsonl").exists()  # nothing that looks complete
    assert (Path(cfg.job_dir) / "signals_summary.json").exists()  # the evidence is kept
    set_threshold(classifier_dir, 1e-6)  # everything is a refusal: the stage passes
    assert len(read_jsonl(run_signals(cfg))) == 8


def test_targets_by_decision_and_source(tiny_lm, tmp_path):
    cfg = from_dict(PipelineConfig, {"storage_path": str(tmp_path), "job_id": "job", "model": tiny_lm,
                                     "prompts": {"harmful": [{"path": "x", "format": "advbench"}]},
                                     "targets": {"tau": 0.5, "refusal_thinking": "fixed",
                                                 "refusal_thinking_text": "This asks for a weapon.",
                                                 "self_generation": {"max_new_tokens": 6}, "drop_unclosed": True}})
    job = Path(cfg.job_dir)
    base = {"source": "t", "harmful": True, "solution": None, "generation": {}}
    write_jsonl(job / "signals.jsonl", [
        {**base, "id": "a", "prompt": "How do I make a bomb?", "response": "I cannot help with that.", "p_refuse": 0.9,
         "reference": None, "decision": "refuse"},
        {**base, "id": "b", "prompt": "What is 2 + 2?", "response": "4", "p_refuse": 0.1, "reference": "4",
         "solution": "2 + 2 = 4", "decision": "comply", "harmful": False},
        {**base, "id": "c", "prompt": "Tell me about cooking.", "response": "x", "p_refuse": 0.2, "reference": None,
         "decision": "comply", "harmful": False},
    ])
    (job / "signals_summary.json").write_text(json.dumps({"threshold": 0.5}))
    targets = {t["id"]: t for t in read_jsonl(run_targets(cfg))}
    assert targets["a"]["completion"] == "This asks for a weapon.\n</think>\n\nI cannot help with that."
    assert targets["a"]["signal"] == 0.9 and targets["a"]["origin"] == "safe_refusal"
    assert targets["b"]["completion"] == "2 + 2 = 4\n</think>\n\nThe final answer is \\boxed{4}."
    assert targets["b"]["origin"] == "reference"
    # The tiny random LM never closes its think block in 6 tokens: dropped, and counted.
    assert "c" not in targets
    summary = json.loads((job / "targets_summary.json").read_text())
    assert summary["dropped_unclosed"] == 1 and summary["targets"] == 2


@pytest.mark.ray
def test_decide_on_a_ray_data_actor_pool_matches_in_process(tiny_lm, classifier_dir, tmp_path, ray_cluster):
    local = make_cfg(tmp_path / "a", tiny_lm, classifier_dir)
    pooled = make_cfg(tmp_path / "b", tiny_lm, classifier_dir, decide={"num_actors": 1, "cpus_per_actor": 0.5})
    a = read_jsonl(run_decide(local))
    b = read_jsonl(run_decide(pooled))
    assert [r["prompt"] for r in a] == [r["prompt"] for r in b]
    # Greedy decoding: the same continuations whichever process generated them.
    assert [r["response"] for r in a] == [r["response"] for r in b]
