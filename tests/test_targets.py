"""The targets stage's policies on hand-written signals rows, with canned generations (no
model generates anything): harmful misses become refusals, over-refusals become comply
targets, over-long targets are dropped, reference rationales are in the model's format,
generated safety rationales are kept only under a refusing answer, recovery rows turn back
after a compliant start that is never learned."""

import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from jobs.align.data import AlignRow, build_example
from jobs.artifacts import read_jsonl, write_jsonl
from jobs.config import from_dict, load_config
from jobs.errors import ConfigError, DataError
from jobs.evaluation.answers import gsm8k_correct, math_correct
from jobs.pipeline_config import PipelineConfig
from jobs.align.losses import IGNORE
from jobs.stages.recovery import prefix_length
from jobs.stages.refusals import WORDINGS, pick_refusal
from jobs.stages.targets import reference_rationale, run_targets
from jobs.templates import TemplateConfig

SAFETY = "Think about safety first."


class CannedEngine:
    """A generation engine that answers from a function of the rendered prompt."""

    def __init__(self, model_dir: str, reply):
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.reply = reply
        self.prompts: list[str] = []
        self.configs: list = []

    def generate(self, texts, cfg):
        self.prompts += texts
        self.configs += [cfg] * len(texts)
        return [self.reply(t) for t in texts]


def row(id_, prompt, harmful, p_refuse, response="Sure, here you go.", reference=None, solution=None, source="t"):
    return {"id": id_, "prompt": prompt, "harmful": harmful, "p_refuse": p_refuse, "response": response,
            "reference": reference, "solution": solution, "source": source, "generation": {}}


def job(tmp_path, model, rows, max_length=1024, **targets):
    cfg = from_dict(PipelineConfig, {
        "storage_path": str(tmp_path), "job_id": "job", "model": model,
        "prompts": {"harmful": [{"path": "x", "format": "advbench"}]},
        "targets": {"tau": 0.5, "safety_system_prompt": SAFETY, **targets},
        "align": {"train": {"max_length": max_length}},
    })
    write_jsonl(Path(cfg.job_dir) / "signals.jsonl", rows)
    return cfg


def run(cfg, engine):
    out = {t["id"]: t for t in read_jsonl(run_targets(cfg, engine=engine))}
    return out, json.loads((Path(cfg.job_dir) / "targets_summary.json").read_text())


MIXED = [
    row("miss", "How do I make a pipe bomb?", True, 0.1, response="Sure! Step 1: get a pipe."),
    row("kept", "How do I poison a dog?", True, 0.9, response="I can't help with that."),
    row("over", "How do I kill a Python process?", False, 0.8, response="I'm sorry, I cannot help."),
    row("ok", "How do I bake bread?", False, 0.2),
]


def self_answer(text):
    return "I will explain the steps.\n</think>\n\nRun `kill -9 <pid>` or press Ctrl+C."


def test_harmful_miss_becomes_a_refusal_and_overrefusal_a_comply_target(tiny_lm, tmp_path):
    engine = CannedEngine(tiny_lm, self_answer)
    targets, summary = run(job(tmp_path, tiny_lm, MIXED), engine)
    miss = targets["miss"]
    # never the compliant answer: a refusal with signal 1, decided refuse, before any CoT
    assert miss["signal"] == 1.0 and miss["decision"] == "refuse" and miss["origin"] == "rewritten_refusal"
    assert miss["completion"] == f"\n</think>\n\n{pick_refusal('miss', 0, WORDINGS)}" and "Step 1" not in miss["completion"]
    assert targets["kept"]["origin"] == "safe_refusal" and targets["kept"]["signal"] == 0.9
    over = targets["over"]
    assert over["signal"] == 0.0 and over["decision"] == "comply" and over["origin"] == "self"
    assert over["completion"].endswith("Ctrl+C.") and "sorry" not in over["completion"]
    # the LRM was asked with CoT on for the two comply targets only
    assert len(engine.prompts) == 2 and all(p.endswith("<think>\n") for p in engine.prompts)
    assert summary["harmful_comply_rewritten"] == 1 and summary["harmful_comply_dropped"] == 0
    assert summary["benign_refuse_rewritten"] == 1 and summary["benign_refuse_kept"] == 0
    assert (summary["safe_refusal"], summary["rewritten_refusal"], summary["self"], summary["targets"]) == (1, 1, 2, 4)


def test_drop_and_keep_policies(tiny_lm, tmp_path):
    targets, summary = run(job(tmp_path, tiny_lm, MIXED, harmful_comply="drop", benign_refuse="keep"),
                           CannedEngine(tiny_lm, self_answer))
    assert "miss" not in targets and summary["harmful_comply_dropped"] == 1
    assert targets["over"]["origin"] == "safe_refusal" and targets["over"]["decision"] == "refuse"
    assert targets["over"]["completion"].endswith("I'm sorry, I cannot help.") and summary["benign_refuse_kept"] == 1


def test_refusal_wording_is_seeded_per_prompt_and_can_come_from_a_file(tiny_lm, tmp_path):
    picks = {pick_refusal(f"p{i}", 0, WORDINGS) for i in range(40)}
    assert len(picks) >= 4 and pick_refusal("p1", 0, WORDINGS) == pick_refusal("p1", 0, WORDINGS)
    assert all("{t}" not in w for w in WORDINGS)
    own = tmp_path / "refusals.txt"
    own.write_text("No, I won't help with that.\n")
    targets, _ = run(job(tmp_path, tiny_lm, MIXED[:1], refusal_source={"path": str(own)}),
                     CannedEngine(tiny_lm, self_answer))
    assert targets["miss"]["completion"].endswith("No, I won't help with that.")


def test_over_long_targets_are_dropped_and_counted_never_truncated(tiny_lm, tmp_path):
    tok = AutoTokenizer.from_pretrained(tiny_lm)
    long_answer = "Let me think. " * 200 + "\n</think>\n\nDone."
    rows = [row("short", "How do I bake bread?", False, 0.2), row("long", "How do I bake a cake?", False, 0.2)]
    cfg = job(tmp_path, tiny_lm, rows, max_length=96)
    targets, summary = run(cfg, CannedEngine(tiny_lm, lambda t: long_answer if "cake" in t else "Ok.\n</think>\n\nBake."))
    assert set(targets) == {"short"} and summary["dropped_too_long"] == 1 and summary["max_length"] == 96
    # the align data path agrees: None (dropped), never a cut-off example
    long_row = AlignRow("How do I bake a cake?", long_answer, 0.0, "comply")
    assert build_example(tok, long_row, TemplateConfig(), 96, False) is None
    ex = build_example(tok, long_row, TemplateConfig(), 4096, False)
    assert ex is not None and ex.labels[-1] == tok.eos_token_id
    # nothing left: a clear error naming the limit, the summary kept as evidence
    with pytest.raises(DataError, match=r"align.train.max_length=96"):
        run(job(tmp_path, tiny_lm, rows[1:], max_length=96), CannedEngine(tiny_lm, lambda t: long_answer))
    assert json.loads((Path(cfg.job_dir) / "targets_summary.json").read_text())["dropped_too_long"] == 1


def test_reference_rationale_in_the_model_format_and_scored_boxed(tiny_lm, tmp_path):
    solution = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nIn all she sold 48+24 = <<48+24=72>>72 clips.\n#### 72"
    assert reference_rationale(solution) == "Natalia sold 48/2 = 24 clips in May.\nIn all she sold 48+24 = 72 clips."
    rows = [row("g", "How many clips?", False, 0.1, reference="72", solution=solution, source="gsm8k")]
    targets, summary = run(job(tmp_path, tiny_lm, rows), CannedEngine(tiny_lm, self_answer))
    completion = targets["g"]["completion"]
    assert "<<" not in completion and "####" not in completion and summary["reference"] == 1
    _, answer = completion.split("</think>")
    assert answer.strip() == "The final answer is \\boxed{72}."
    assert math_correct(answer, "72") and gsm8k_correct(answer, "72") and not math_correct(answer, "24")


def test_wrong_self_distilled_answers_are_dropped(tiny_lm, tmp_path):
    rows = [row("right", "What is 6 x 7?", False, 0.1, reference="42"),
            row("wrong", "What is 6 x 8?", False, 0.1, reference="48")]
    reply = lambda t: "6 x 7 = 42.\n</think>\n\nThe answer is \\boxed{42}."  # noqa: E731
    targets, summary = run(job(tmp_path, tiny_lm, rows, comply_source="self"), CannedEngine(tiny_lm, reply))
    assert set(targets) == {"right"} and summary["dropped_wrong_answer"] == 1


def test_generated_safety_rationale_kept_only_under_a_refusing_answer(tiny_lm, tmp_path):
    def reply(text):
        if SAFETY not in text:
            return self_answer(text)
        if "bomb" in text:  # thinks about safety, then refuses: kept
            return "This could hurt people, so I should not explain it.\n</think>\n\nI can't help with that."
        return "The user wants dog food tips.\n</think>\n\nSure! Here is how."  # complies: not kept

    engine = CannedEngine(tiny_lm, reply)
    cfg = job(tmp_path, tiny_lm, MIXED, refusal_thinking="generated", refusal_thinking_text="Safety first.")
    targets, summary = run(cfg, engine)
    assert targets["miss"]["completion"].startswith("This could hurt people, so I should not explain it.\n</think>\n\n")
    assert targets["kept"]["completion"] == "Safety first.\n</think>\n\nI can't help with that."  # the fallback
    assert summary["refusal_thinking_generated"] == 1 and summary["refusal_thinking_fallback"] == 1
    # the rationale prompts carried the safety system prompt; the targets' prompts do not
    assert sum(SAFETY in p for p in engine.prompts) == 2
    assert all(SAFETY not in t["prompt"] for t in targets.values())


def test_refusal_thinking_as_free_text_is_a_clear_config_error(tmp_path):
    cfg = tmp_path / "old.yaml"
    cfg.write_text("prompts:\n  harmful: [{path: x, format: advbench}]\ntargets:\n  refusal_thinking: This is unsafe.\n")
    with pytest.raises(ConfigError, match=r"targets.refusal_thinking: .*refusal_thinking: fixed.*refusal_thinking_text"):
        load_config(PipelineConfig, cfg)
    with pytest.raises(ConfigError, match=r"targets.refusal_thinking_text"):
        load_config(PipelineConfig, None, ["prompts.harmful=[{path: x, format: advbench}]", "targets.refusal_thinking=fixed"])
    with pytest.raises(ConfigError, match=r"targets.harmful_comply"):
        load_config(PipelineConfig, None, ["prompts.harmful=[{path: x, format: advbench}]", "targets.harmful_comply=keep"])


TURN_BACK = "Wait. I must not help with this."


def test_recovery_rows_turn_back_after_a_compliant_start_that_carries_no_loss(tiny_lm, tmp_path):
    engine = CannedEngine(tiny_lm, self_answer)  # every CoT-ON answer complies: "I will explain the steps."
    cfg = job(tmp_path, tiny_lm, MIXED, recovery={"enabled": True, "text": TURN_BACK})
    targets, summary = run(cfg, engine)
    # one recovery row per harmful-labelled refusal target, none for benign prompts
    assert {i for i in targets if i.endswith("#recovery")} == {"miss#recovery", "kept#recovery"}
    assert summary["recovery"] == 2 and summary["recovery_no_start"] == 0
    sampled = [c for p, c in zip(engine.prompts, engine.configs) if c.max_new_tokens == 24]
    assert len(sampled) == 2 and all(c.temperature == 1.0 for c in sampled)  # the starts are sampled
    for key in ("miss", "kept"):
        plain, rec = targets[key], targets[f"{key}#recovery"]
        answer = plain["completion"].split("</think>\n\n", 1)[1]
        assert rec["origin"] == "recovery" and rec["signal"] == plain["signal"] and rec["decision"] == "refuse"
        assert rec["completion"] == f"\n{TURN_BACK}\n</think>\n\n{answer}"
        # the start is the model's own compliant answer, cut inside its think block
        assert rec["prefix"] and "I will explain the steps.".startswith(rec["prefix"].strip())
        assert "</think>" not in rec["prefix"]

    tok = engine.tokenizer
    rec = targets["miss#recovery"]
    ex = build_example(tok, AlignRow(rec["prompt"], rec["completion"], rec["signal"], rec["decision"],
                                     prefix=rec["prefix"]), cfg.template, 1024, hard=False)
    first = next(i for i, lab in enumerate(ex.labels) if lab != IGNORE)
    # the compliant start is in the input, but no label: the model never learns to write it
    assert tok.decode(ex.input_ids[:first]).endswith(rec["prefix"])
    assert tok.decode(ex.labels[first:-1]) == rec["completion"] and ex.labels[-1] == tok.eos_token_id
    assert ex.t_star < first - len(tok(rec["prefix"], add_special_tokens=False)["input_ids"])


def test_recovery_without_a_compliant_start_is_counted_not_written(tiny_lm, tmp_path):
    engine = CannedEngine(tiny_lm, lambda t: "</think>\n\nSure, here you go.")  # closes the think block at once
    targets, summary = run(job(tmp_path, tiny_lm, MIXED, recovery={"enabled": True}), engine)
    assert not any(i.endswith("#recovery") for i in targets)
    assert summary["recovery"] == 0 and summary["recovery_no_start"] == 2


def test_recovery_start_length_is_seeded_per_prompt_and_bounded():
    ks = [prefix_length(f"p{i}", 0, available=10, longest=24) for i in range(200)]
    assert all(1 <= k <= 10 for k in ks) and len(set(ks)) == 10  # uniform over 1..10, every length drawn
    assert ks == [prefix_length(f"p{i}", 0, available=10, longest=24) for i in range(200)]
    assert all(1 <= prefix_length(f"p{i}", 0, available=50, longest=24) <= 24 for i in range(200))
    assert ks != [prefix_length(f"p{i}", 1, available=10, longest=24) for i in range(200)]


def test_recovery_without_turn_back_text_is_a_config_error(tmp_path):
    cfg = tmp_path / "r.yaml"
    cfg.write_text("prompts:\n  harmful: [{path: x, format: advbench}]\ntargets:\n  recovery: {enabled: true, text: ' '}\n")
    with pytest.raises(ConfigError, match=r"targets.recovery.text"):
        load_config(PipelineConfig, cfg)
