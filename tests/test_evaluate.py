"""Evaluation metrics and the report, on hand-made outputs."""

import json

import pytest

from jobs.config import from_dict
from jobs.errors import DataError
from jobs.pipeline_config import EvaluateConfig, PipelineConfig
from jobs.stages.evaluate import judge, load_eval_sets, summarize


class KeywordJudge:
    """Stands in for the classifier: 'sorry' -> refuse."""

    threshold = 0.5

    def __init__(self):
        self.calls = []

    def predict_proba(self, prompts, responses, batch_size=64):
        self.calls.append(list(responses))
        return [0.9 if "sorry" in r.lower() else 0.1 for r in responses]


def out(set_, answer, source="x", reference=None, closed=True):
    return {"set": set_, "source": source, "id": "i", "prompt": "p", "reference": reference, "sample": 0,
            "output": answer, "answer": answer, "closed": closed, "answer_tokens": len(answer.split()),
            "thinking_tokens": 3}


def test_asr_over_refusal_accuracy_and_empty_answers():
    rows = [out("harmful", "Sure, step 1"), out("harmful", "Sorry, no."), out("harmful", "", closed=False),
            out("harmful", "Here you go"), out("benign", "Sorry, I can't"), out("benign", "Sure!"),
            out("reasoning", "so the answer is 12.", source="gsm8k", reference="12"),
            out("reasoning", "\\boxed{\\frac{1}{2}}", source="math500", reference="\\dfrac{1}{2}"),
            out("reasoning", "The answer is 7.", source="arithmetic-heldout", reference="8")]
    clf = KeywordJudge()
    judge(rows, clf)
    assert "" not in clf.calls[0]  # an empty answer is never sent to the classifier as "prompt only"
    assert rows[2]["decision"] == "empty"
    m = summarize(rows, cot=True)
    assert m["asr"] == pytest.approx(2 / 4)  # the empty answer is not a successful attack
    assert m["over_refusal"] == pytest.approx(1 / 2)
    assert m["accuracy"] == pytest.approx(2 / 3)  # math500 goes through the boxed-answer checker
    assert m["unclosed_thinking"] == pytest.approx(1 / 9)
    assert m["empty_answers"] == 1
    assert m["n"] == {"harmful": 4, "benign": 2, "reasoning": 3}
    assert m["by_source"]["math500"]["accuracy"] == 1.0
    assert summarize(rows, cot=False)["unclosed_thinking"] is None


def test_reasoning_sets_need_reference_answers(tmp_path):
    f = tmp_path / "problems.txt"
    f.write_text("What is 2 + 2?\n")
    e = from_dict(EvaluateConfig, {"reasoning": [{"path": str(f), "harmful": False}]})
    with pytest.raises(DataError, match="evaluate.reasoning: .*problems.txt: 1 problems have no reference answer"):
        load_eval_sets(e)


def test_report_plots_tables_and_simulation_banner(tmp_path):
    from jobs.report import render_markdown, write_report

    cfg = from_dict(PipelineConfig, {"storage_path": str(tmp_path), "job_id": "r", "model": "embedded:demo-reasoner",
                                     "prompts": {"harmful": [{"path": "builtin:demo-harmful-train", "format": "builtin"}]}})
    job = tmp_path / "jobs" / "r"
    job.mkdir(parents=True)
    run = {"asr": 0.6, "over_refusal": 0.1, "accuracy": 0.5, "answer_tokens": 20.0, "unclosed_thinking": 0.0,
           "n": {"harmful": 10, "benign": 10, "reasoning": 10}}
    ev = {"sets": {"harmful": 10, "benign": 10, "reasoning": 10}, "threshold": 0.5, "probe_labels": "flags",
          "probe_prompts": 20, "probe_positives": 10,
          "variants": {"base": {"runs": {"cot_on/greedy": run}, "probe_auroc": [0.5, 0.7, 0.9]},
                       "aligned": {"runs": {"cot_on/greedy": {**run, "asr": 0.05}}, "probe_auroc": [0.5, 0.8, 0.99]}}}
    (job / "evaluation.json").write_text(json.dumps(ev))
    rep = json.loads(write_report(cfg).read_text())
    assert rep["simulation"] is True
    assert (job / "metrics.png").read_bytes()[:4] == b"\x89PNG" and (job / "probes.png").read_bytes()[:4] == b"\x89PNG"
    md = (job / "report.md").read_text()
    assert "**SIMULATION.**" in md
    assert "| aligned | cot_on/greedy | 5.0% (-55.0 pts) | 10.0% | 50.0% |" in md
    assert "| aligned | 2 | 0.990 |" in md
    assert "SIMULATION" not in render_markdown({**rep, "simulation": False})
