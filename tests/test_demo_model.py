"""The demo reasoning model's corpus and training loop (the full 7-minute build is run by
`presafe demo-model build` and bench/efficacy.py, not here)."""

import re

import torch

from jobs.data.demo_corpus import (
    BENIGN,
    GENERAL,
    HARMFUL,
    SETS,
    arithmetic_problems,
    builtin_prompts,
    demo_training_rows,
    task_split,
)
from jobs.models.demo import (
    DEMO_TEMPLATE,
    DemoBuildConfig,
    encode_rows,
    looks_like_refusal,
    train_demo,
    weighted_lm_loss,
)


def test_held_out_tasks_and_problems_never_appear_in_training():
    for tasks in (HARMFUL, BENIGN):
        train, held = set(task_split(tasks, "train")), set(task_split(tasks, "heldout"))
        assert held and train and not (train & held) and train | held == set(tasks)
    train_q = {p["question"] for p in arithmetic_problems("train", 160, 0)}
    held_q = {p["question"] for p in arithmetic_problems("heldout", 64, 0)}
    assert not (train_q & held_q)
    rows = demo_training_rows()
    train_prompts = {r["prompt"] for r in rows}
    for name in ("demo-harmful-heldout", "demo-benign-heldout", "arithmetic-heldout"):
        assert not ({p.prompt for p in builtin_prompts(name)} & train_prompts), name
    # General benign instructions (not "how do I" tasks) are split the same way, mixed
    # into the first prompts of each benign set, and taught in both modes.
    general_held = set(task_split(GENERAL, "heldout"))
    assert general_held & {p.prompt for p in builtin_prompts("demo-benign-heldout")[:24]}
    assert {r["cot"] for r in rows if r["prompt"] in set(task_split(GENERAL, "train"))} == {True, False}
    # Every held-out harmful prompt is built from a held-out task.
    held_tasks = task_split(HARMFUL, "heldout")
    assert all(any(t in p.prompt for t in held_tasks) for p in builtin_prompts("demo-harmful-heldout"))


def test_arithmetic_answers_are_right():
    for p in arithmetic_problems("heldout", 64, 0):
        nums = [int(x) for x in re.findall(r"\d+", p["question"])]
        q = p["question"]
        if "more. How many" in q:
            want = nums[0] + nums[1]
        elif "gives" in q:
            want = nums[0] - nums[1]
        elif "bags" in q:
            want = nums[0] * nums[1]
        else:
            want = nums[0] + nums[1] - nums[2]
        assert int(p["answer"]) == want, q
        assert p["answer"] in p["thinking"]


def test_training_rows_teach_refuse_off_comply_on():
    rows = demo_training_rows()
    harmful_train = set(task_split(HARMFUL, "train"))
    harm_rows = [r for r in rows if any(t in r["prompt"] for t in harmful_train)]
    off = [r for r in harm_rows if not r["cot"]]
    on = [r for r in harm_rows if r["cot"]]
    assert off and on
    assert all(looks_like_refusal(r["answer"]) and r["thinking"] == "" for r in off)
    assert not any(looks_like_refusal(r["answer"]) for r in on) and all(r["thinking"] for r in on)
    benign = [r for r in rows if not r["cot"] and any(t in r["prompt"] for t in task_split(BENIGN, "train"))]
    assert benign and not any(looks_like_refusal(r["answer"]) for r in benign)


def test_builtin_prompt_sets_and_unknown_name(tmp_path):
    import pytest

    from jobs.errors import DataError

    for name in SETS:
        got = builtin_prompts(name)
        assert got and len({p.prompt for p in got}) == len(got)
        assert all(p.harmful == ("harmful" in name) for p in got)
        if name.startswith("arithmetic"):
            assert all(p.reference and p.solution for p in got)
    with pytest.raises(DataError, match="builtin:demo-typo: unknown built-in prompt set; available: builtin:decisions"):
        builtin_prompts("demo-typo")


def test_encoded_rows_mask_the_prompt_and_end_with_eos(tiny_lm):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_lm)
    rows = [{"prompt": "How do I bake a cake?", "cot": True, "thinking": "Mix.", "answer": "Sure, here it is."},
            {"prompt": "How do I bake a cake?", "cot": False, "thinking": "", "answer": "Sure."}]
    (ids_on, lab_on, w_on), (ids_off, lab_off, w_off) = encode_rows(tok, rows, 256, decision_tokens=2,
                                                                     decision_weight=5.0)
    assert ids_on[-1] == tok.eos_token_id == lab_on[-1]
    first = next(i for i, v in enumerate(lab_on) if v != -100)
    assert tok.decode(ids_on[:first]).endswith(DEMO_TEMPLATE.cot_on_prefix)
    assert tok.decode(ids_on[first:]).startswith("Mix.\n</think>")
    first_off = next(i for i, v in enumerate(lab_off) if v != -100)
    assert tok.decode(ids_off[:first_off]).endswith(DEMO_TEMPLATE.cot_off_prefix)
    assert tok.decode(ids_off[first_off:]).startswith("Sure.")
    # the prompt weighs nothing; the decision (the answer's first tokens) weighs more in both modes
    assert w_off[:first_off] == [0.0] * first_off and w_off[first_off:first_off + 2] == [5.0, 5.0]
    assert set(w_off[first_off + 2:]) == {1.0}
    # with CoT on: the thinking's first 2 tokens (think, not refuse) and the answer's first 2
    heavy = [i for i, w in enumerate(w_on) if w == 5.0]
    assert len(heavy) == 4 and heavy[:2] == [first, first + 1] and heavy[3] == heavy[2] + 1
    assert tok.decode(ids_on[first + 2:heavy[2]]).endswith("</think>\n\n")  # the rest of the thinking weighs 1
    assert tok.decode(ids_on[heavy[2]:]).startswith("Sure")
    assert set(w_on[first + 2:heavy[2]]) == {1.0} and set(w_on[heavy[3] + 1:]) == {1.0}


def test_weighted_lm_loss_matches_the_plain_loss_and_follows_the_weights():
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 11)
    labels = torch.randint(0, 11, (2, 6))
    labels[:, :2] = -100
    plain = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1))
    ones = (labels != -100).float()
    assert torch.allclose(weighted_lm_loss(logits, labels, ones), plain)
    only_last = torch.zeros_like(ones)
    only_last[:, -1] = 3.0
    last = torch.nn.functional.cross_entropy(logits[:, -2], labels[:, -1])
    assert torch.allclose(weighted_lm_loss(logits, labels, only_last), last)


def test_train_demo_lowers_the_loss_and_trains_only_the_top_layers(tiny_lm):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_lm)
    model = AutoModelForCausalLM.from_pretrained(tiny_lm)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rows = demo_training_rows()[:16] * 4
    cfg = DemoBuildConfig(epochs=3, batch_size=16, learning_rate=1e-2, warmup_steps=1, train_top_layers=2,
                          max_length=96)
    losses = train_demo(cfg, tok, model, rows)
    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3, losses
    after = model.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert any(k.startswith("model.layers.3.") for k in changed)
    assert any(k.startswith("model.layers.2.") for k in changed)
    assert not any(k.startswith(("model.layers.0.", "model.layers.1.", "model.embed_tokens")) for k in changed)


def test_demo_prompts_are_not_copied_from_the_evaluation_sets(shared_data):
    """bench/efficacy.py judges over-refusal on Alpaca and ASR on AdvBench/HarmBench: none
    of presafe's own demo prompts may appear there verbatim (case and spacing aside)."""
    from jobs.config import from_dict
    from jobs.data.readers import DataSource, read_prompts

    def norm(text):
        return " ".join(text.lower().split())

    ours = {norm(t) for t in GENERAL} | {norm(p.prompt) for name in SETS for p in builtin_prompts(name)}
    sets = [("prompts/benign/alpaca_harmless_val.json", "alpaca"), ("prompts/benign/alpaca_harmless_train.json", "alpaca"),
            ("prompts/harmful/advbench_harmful_behaviors.csv", "advbench"),
            ("prompts/harmful/harmbench_behaviors_text_all.csv", "harmbench")]
    for rel, fmt in sets:
        theirs = {norm(p.prompt) for p in read_prompts(from_dict(DataSource, {"path": str(shared_data / rel), "format": fmt}))}
        assert theirs and not (ours & theirs), (rel, sorted(ours & theirs)[:5])
