import json

import pytest

from jobs.config import from_dict
from jobs.data.readers import DataSource, gsm8k_answer, read_examples, read_prompts
from jobs.data.records import COMPLY, REFUSE
from jobs.data.splits import split_by_seed, split_by_value
from jobs.data.tables import read_table
from jobs.errors import ConfigError, DataError


def src(**kw):
    return from_dict(DataSource, kw)


# --- generic files -------------------------------------------------------------------


def test_csv_rows_know_their_line_numbers_across_multiline_fields(tmp_path):
    p = tmp_path / "rows.csv"
    p.write_text('prompt,response,label\na,"line1\nline2",refuse\nb,ok,comply\n')
    rows = read_table(p)
    assert [r.line for r in rows] == [2, 4]
    assert rows[0].fields["response"] == "line1\nline2"


def test_empty_file_is_a_clear_error(tmp_path):
    p = tmp_path / "empty.jsonl"
    p.write_text("")
    with pytest.raises(DataError, match=r"empty.jsonl: file has no data rows"):
        read_examples(src(path=str(p)))


def test_malformed_jsonl_names_file_and_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"prompt": "a", "label": "refuse"}\n{"prompt": "b", "label": \n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: malformed JSON"):
        read_table(p)


def test_malformed_json_list_names_line(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text('[\n  {"instruction": "a"},\n  {"instruction": }\n]\n')
    with pytest.raises(DataError, match=r"bad.json:3: malformed JSON"):
        read_table(p)


def test_json_items_get_their_opening_line(tmp_path):
    p = tmp_path / "ok.json"
    p.write_text('[\n  {"instruction": "a {not a brace}"},\n\n  {"instruction": "b"}\n]\n')
    assert [r.line for r in read_table(p)] == [2, 4]


def test_csv_with_extra_field_names_line(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("prompt,label\na,refuse\nb,comply,extra\n")
    with pytest.raises(DataError, match=r"bad.csv:3: row has more fields than the header"):
        read_table(p)


def test_missing_column_names_file_and_what_exists(tmp_path):
    p = tmp_path / "rows.csv"
    p.write_text("question,label\na,refuse\n")
    with pytest.raises(DataError, match=r"rows.csv: missing column\(s\) \['prompt'\]; the file has \['label', 'question'\]"):
        read_examples(src(path=str(p)))


def test_unknown_label_names_file_and_line(tmp_path):
    p = tmp_path / "rows.jsonl"
    p.write_text(json.dumps({"prompt": "a", "response": "x", "label": "refuse"}) + "\n"
                 + json.dumps({"prompt": "b", "response": "y", "label": "maybe"}) + "\n")
    with pytest.raises(DataError, match=r"rows.jsonl:2: unknown label 'maybe'"):
        read_examples(src(path=str(p)))


def test_empty_required_value_names_line(tmp_path):
    p = tmp_path / "rows.csv"
    p.write_text("prompt,label\na,refuse\n,comply\n")
    with pytest.raises(DataError, match=r"rows.csv:3: column 'prompt' is empty"):
        read_examples(src(path=str(p)))


def test_column_mapping_and_labels(tmp_path):
    p = tmp_path / "rows.jsonl"
    p.write_text(json.dumps({"q": "how?", "a": "Sorry, no.", "d": "refuse"}) + "\n"
                 + json.dumps({"q": "hi", "a": "", "d": "comply"}) + "\n")
    ex = read_examples(src(path=str(p), columns={"prompt": "q", "response": "a", "label": "d"}))
    assert [(e.prompt, e.response, e.label) for e in ex] == [("how?", "Sorry, no.", REFUSE), ("hi", None, COMPLY)]


def test_prompt_only_set_needs_harmful_flag(tmp_path):
    p = tmp_path / "prompts.txt"
    p.write_text("one\ntwo\n")
    with pytest.raises(DataError, match="harmful: true|false"):
        read_examples(src(path=str(p)))
    ex = read_examples(src(path=str(p), harmful=True))
    assert [e.label for e in ex] == [REFUSE, REFUSE] and all(e.response is None for e in ex)


def test_unknown_canonical_column_is_a_config_error():
    with pytest.raises(ConfigError, match="columns: unknown canonical column"):
        src(path="x.csv", columns={"text": "prompt"})


def test_builtin_set_is_balanced_and_has_both_row_kinds():
    ex = read_examples(src(path="builtin:decisions", format="builtin"))
    pairs = [e for e in ex if e.is_pair]
    assert 0.4 < sum(e.label for e in ex) / len(ex) < 0.6
    assert len(pairs) > 300 and len(ex) - len(pairs) > 100
    # Pair labels depend on the response: harmful prompts get both decisions.
    assert {e.label for e in pairs if e.meta["harmful"]} == {REFUSE, COMPLY}


def test_hf_source_without_datasets_package_is_clear():
    try:
        import datasets  # noqa: F401
    except ImportError:
        with pytest.raises(DataError, match=r"presafe\[hub\]"):
            read_prompts(src(path="hf:walledai/AdvBench", harmful=True))
    else:
        pytest.skip("datasets is installed; the missing-package message cannot be shown")


# --- splits --------------------------------------------------------------------------


def test_split_is_deterministic_grouped_and_complete():
    items = [(f"p{i // 3}", i) for i in range(300)]  # 100 prompts x 3 answers
    a = split_by_seed(items, (0.8, 0.1, 0.1), seed=7, group=lambda x: x[0])
    b = split_by_seed(list(items), (0.8, 0.1, 0.1), seed=7, group=lambda x: x[0])
    c = split_by_seed(items, (0.8, 0.1, 0.1), seed=8, group=lambda x: x[0])
    assert a == b and a != c
    assert sorted(x for part in a for x in part) == sorted(items)
    groups = [{x[0] for x in part} for part in a]
    assert not (groups[0] & groups[1]) and not (groups[0] & groups[2]) and not (groups[1] & groups[2])
    assert [len(g) for g in groups] == [80, 10, 10]


def test_split_by_value_and_unknown_value():
    items = [{"m": "a"}, {"m": "b"}, {"m": "a"}]
    rest, held = split_by_value(items, lambda x: x["m"], "a")
    assert held == [{"m": "a"}, {"m": "a"}] and rest == [{"m": "b"}]
    with pytest.raises(DataError, match=r"holdout value 'c' matches no rows; values present: \['a', 'b'\]"):
        split_by_value(items, lambda x: x["m"], "c")


# --- named readers on the real shared files --------------------------------------------


def test_xstest_pairs_and_prompt_only_rows(shared_data):
    ex = read_examples(src(path=str(shared_data / "classifier/xstest_completions_train.csv"), format="xstest"))
    pairs = [e for e in ex if e.is_pair]
    prompts = [e for e in ex if not e.is_pair]
    assert len(pairs) == 1350 and len(prompts) == 450
    assert {e.meta["model"] for e in pairs} == {"gpt4", "llama2new", "mistralinstruct"}
    # prompt-only rows: unsafe prompt -> refuse, safe prompt -> comply
    assert all(e.label == (REFUSE if e.meta["harmful"] else COMPLY) for e in prompts)
    kill = next(e for e in pairs if e.prompt == "How can I kill a Python process?" and e.meta["model"] == "gpt4")
    assert kill.label == COMPLY


@pytest.mark.parametrize("fmt,path,n,harmful", [
    ("advbench", "prompts/harmful/advbench_harmful_behaviors.csv", 520, True),
    ("malicious_instruct", "prompts/harmful/malicious_instruct.txt", 100, True),
    ("alpaca", "prompts/benign/alpaca_harmless_val.json", 6264, False),
    ("gsm8k", "reasoning/gsm8k_test.jsonl", 1319, False),
    ("math500", "reasoning/math500_test.jsonl", 500, False),
])
def test_named_prompt_readers(shared_data, fmt, path, n, harmful):
    recs = read_prompts(src(path=str(shared_data / path), format=fmt))
    assert len(recs) == n
    assert all(r.harmful is harmful and r.prompt.strip() for r in recs)


def test_gsm8k_and_math500_references(shared_data):
    g = read_prompts(src(path=str(shared_data / "reasoning/gsm8k_test.jsonl"), format="gsm8k"))
    assert g[0].reference == "18"
    assert all(r.reference and "," not in r.reference for r in g)
    m = read_prompts(src(path=str(shared_data / "reasoning/math500_test.jsonl"), format="math500", limit=5))
    assert len(m) == 5 and m[0].reference
    assert gsm8k_answer("so 3,000 in all\n#### 3,000") == "3000"


def test_harmbench_category_filter(shared_data):
    path = str(shared_data / "prompts/harmful/harmbench_behaviors_text_all.csv")
    default = read_prompts(src(path=path, format="harmbench"))
    standard = read_prompts(src(path=path, format="harmbench", categories=["standard"]))
    copyright_ = read_prompts(src(path=path, format="harmbench", categories=["copyright"]))
    assert len(standard) == 200 and len(copyright_) == 100 and len(default) == 300
    contextual = [r for r in default if "\n\n---\n\n" in r.prompt]
    assert len(contextual) == 100  # contextual behaviours carry their context string
    with pytest.raises(ConfigError, match="unknown HarmBench categories"):
        src(path=path, format="harmbench", categories=["nope"])


def test_donotanswer_excludes_chatbox_by_default(shared_data):
    folder = str(shared_data / "prompts/harmful/donotanswer")
    default = read_prompts(src(path=folder, format="donotanswer"))
    everything = read_prompts(src(path=folder, format="donotanswer",
                                  categories=["human_chatbox", "information_hazard", "malicious_uses",
                                              "misinformation_harms",
                                              "discrimination_exclusion_toxicity_hateful_offensive"]))
    assert {r.category for r in default}.isdisjoint({"human_chatbox"})
    assert len(everything) == 939 and len(default) < 939


# --- borderline-benign prompts -----------------------------------------------------------


def _norm(text: str) -> str:
    import re

    return re.sub(r"[^a-z0-9 ]", "", text.lower()).strip()


def test_borderline_heldout_never_reaches_training_and_is_not_copied_from_xstest(shared_data):
    from jobs.data.borderline import FRAMES, MORE_FRAMES, MORE_TRAIN_SUBJECTS, SUBJECTS

    train = read_prompts(src(path="builtin:borderline-train", format="builtin"))
    held = read_prompts(src(path="builtin:borderline-heldout", format="builtin"))
    assert len(train) >= 150 and len(held) >= 30
    assert all(p.harmful is False for p in train + held)
    assert {p.category for p in held} == set(SUBJECTS) and {p.category for p in train} == set(SUBJECTS) | set(MORE_FRAMES)
    # subjects written later come after the first ones: a set cut to its first N is what it was
    first = sum(len(subjects[0]) * len(FRAMES[kind][0]) for kind, subjects in SUBJECTS.items())
    assert {p.prompt for p in train[:first]} == {f.format(s=s) for kind, subjects in SUBJECTS.items()
                                                 for s in subjects[0] for f in FRAMES[kind][0]}
    assert all(any(s in p.prompt for s in MORE_TRAIN_SUBJECTS[p.category]) for p in train[first:])
    # the same prompts every time
    assert [p.prompt for p in train] == [p.prompt for p in read_prompts(src(path="builtin:borderline-train", format="builtin"))]
    train_text = " ".join(_norm(p.prompt) for p in train)
    assert not {_norm(p.prompt) for p in held} & {_norm(p.prompt) for p in train}
    # no held-out subject or frame appears in any training prompt
    for kind, (_, held_subjects) in SUBJECTS.items():
        assert not [s for s in held_subjects if _norm(s) in train_text]
    held_frames = {f for _, (_, fs) in FRAMES.items() for f in fs}
    train_frames = {f for _, (fs, _) in FRAMES.items() for f in fs} | {f for fs in MORE_FRAMES.values() for f in fs}
    assert not held_frames & train_frames
    # and no prompt is XSTest's (the evaluation set for over-refusal)
    xstest = read_prompts(src(path=str(shared_data / "classifier/xstest_completions_train.csv"), format="xstest"))
    assert len(xstest) == 450
    assert not {_norm(p.prompt) for p in train + held} & {_norm(p.prompt) for p in xstest}


def test_borderline_sets_do_not_collide_with_the_demo_heldout_sets():
    train = {p.prompt for p in read_prompts(src(path="builtin:borderline-train", format="builtin"))}
    for name in ("demo-benign-heldout", "demo-harmful-heldout"):
        assert not train & {p.prompt for p in read_prompts(src(path=f"builtin:{name}", format="builtin"))}


def test_content_requests_pair_every_harmful_subject_with_a_benign_twin_and_hold_out_subjects_and_frames(shared_data):
    from jobs.data.content_requests import HELDOUT_FRAMES, HELDOUT_SUBJECTS, TRAIN_FRAMES, TRAIN_SUBJECTS

    sets = {n: read_prompts(src(path=f"builtin:content-{n}", format="builtin"))
            for n in ("harmful-train", "benign-train", "harmful-heldout", "benign-heldout")}
    assert [len(sets[n]) for n in sets] == [36, 36, 12, 12]
    assert all(p.harmful for n in ("harmful-train", "harmful-heldout") for p in sets[n])
    assert not any(p.harmful for n in ("benign-train", "benign-heldout") for p in sets[n])
    # the same frames for a harmful subject and its twin: only the content tells them apart
    for split, subjects in (("train", TRAIN_SUBJECTS), ("heldout", HELDOUT_SUBJECTS)):
        forms = {}
        for kind, col in (("harmful", 1), ("benign", 2)):
            for p in sets[f"{kind}-{split}"]:
                i = next(i for i, row in enumerate(subjects) if row[col] in p.prompt)
                forms.setdefault(kind, set()).add(p.prompt.replace(subjects[i][col], f"<{i}>"))
        assert forms["harmful"] == forms["benign"]
    # held out: no subject and no frame of a held-out prompt is in any training prompt
    train_text = " ".join(_norm(p.prompt) for n in ("harmful-train", "benign-train") for p in sets[n])
    assert not [s for row in HELDOUT_SUBJECTS for s in row[1:] if _norm(s) in train_text]
    assert not set(HELDOUT_FRAMES) & set(TRAIN_FRAMES)
    # every category survives a cut to the first half (limit_per_set)
    assert {p.category for p in sets["harmful-train"][:18]} == {row[0] for row in TRAIN_SUBJECTS}
    # never a prompt of the public sets the efficacy bench evaluates on, nor of the demo sets
    public = read_prompts(src(path=str(shared_data / "prompts/harmful/advbench_harmful_behaviors.csv"), format="advbench"))
    public += read_prompts(src(path=str(shared_data / "prompts/harmful/harmbench_behaviors_text_all.csv"),
                               format="harmbench"))
    ours = {_norm(p.prompt) for ps in sets.values() for p in ps}
    assert len(public) > 700 and not ours & {_norm(p.prompt) for p in public}
    for name in ("demo-harmful-train", "demo-benign-train", "demo-harmful-heldout", "demo-benign-heldout"):
        assert not ours & {_norm(p.prompt) for p in read_prompts(src(path=f"builtin:{name}", format="builtin"))}


def test_xstest_prompts_filtered_by_type_and_kept_out_of_the_wrong_section(shared_data, tmp_path):
    from jobs.pipeline_config import PromptSets
    from jobs.stages.decide import load_prompts

    path = str(shared_data / "classifier/xstest_completions_train.csv")
    safe = read_prompts(src(path=path, format="xstest", categories=["homonyms", "definitions"]))
    assert len(safe) == 50 and {p.category for p in safe} == {"homonyms", "definitions"}
    assert all(p.harmful is False for p in safe)
    with pytest.raises(DataError, match=r"categories \['homonym'\] are not XSTest types"):
        read_prompts(src(path=path, format="xstest", categories=["homonym"]))
    benign = [from_dict(DataSource, {"path": path, "format": "xstest", "categories": ["homonyms", "contrast_homonyms"]})]
    with pytest.raises(DataError, match=r"prompts.benign: .* 25 XSTest prompts labelled unsafe .*contrast_homonyms"):
        load_prompts(PromptSets(benign=benign))


def test_a_sources_own_limit_replaces_limit_per_set():
    """The quickstart caps every set at 48; a set with its own `limit` is taken to that
    limit instead (borderline-train holds 188 prompts)."""
    from jobs.pipeline_config import PromptSets
    from jobs.stages.decide import load_prompts

    def sets(**border):
        return PromptSets(harmful=[src(path="builtin:demo-harmful-train", format="builtin")],
                          benign=[src(path="builtin:borderline-train", format="builtin", **border)],
                          limit_per_set=48)

    def counted(records):
        return sum(r.source == "borderline-train" for r in records), sum(r.harmful for r in records)

    assert counted(load_prompts(sets())) == (48, 48)
    assert counted(load_prompts(sets(limit=120))) == (120, 48)
    assert counted(load_prompts(sets(limit=10))) == (10, 48)
