"""The decision classifier on a tiny random BERT: it learns, it saves and reloads exactly,
and it trains in-process and on 2 Ray Train workers."""

import json

import numpy as np
import pytest
import torch

from jobs.classifier.config import ClassifierJobConfig
from jobs.classifier.metrics import binary_metrics, choose_threshold
from jobs.classifier.model import DecisionClassifier
from jobs.classifier.train import ClassifierTrainer, load_splits, train_classifier
from jobs.config import from_dict
from jobs.data.records import COMPLY, REFUSE, Example
from jobs.errors import DataError


def toy_rows(n=48):
    """Learnable: the response's first word decides. Prompt-only rows: 'bomb' decides."""
    rows = []
    for i in range(n):
        prompt = f"question number {i} about {'a bomb' if i % 2 else 'bread'}"
        rows.append(Example(prompt, "sorry i cannot help", REFUSE, "toy", group=str(i)))
        rows.append(Example(prompt, "sure here are the steps", COMPLY, "toy", group=str(i)))
        rows.append(Example(prompt, None, REFUSE if i % 2 else COMPLY, "toy", group=str(i)))
    return rows


def cfg_for(backbone, tmp_path, **overrides):
    base = {"output_dir": str(tmp_path / "clf"), "model": {"backbone": backbone, "max_length": 32},
            "train": {"epochs": 6, "batch_size": 8, "learning_rate": 2e-3, "warmup_ratio": 0.0}}
    for key, value in overrides.items():
        if isinstance(value, dict):
            base.setdefault(key, {}).update(value)
        else:
            base[key] = value
    return from_dict(ClassifierJobConfig, base)


def write_toy(tmp_path):
    p = tmp_path / "toy.jsonl"
    p.write_text("".join(json.dumps({"prompt": e.prompt, "response": e.response or "", "label":
                                     "refuse" if e.label else "comply", "group": e.group}) + "\n" for e in toy_rows()))
    return p


def test_loss_falls_and_predictions_change(tiny_bert, tmp_path):
    rows = toy_rows()
    trainer = ClassifierTrainer(cfg_for(tiny_bert, tmp_path), rows, rows, show_progress=False)
    before, _, probs_before = trainer.validate()
    losses = [trainer.train_epoch(e)["train_loss"] for e in range(1, 7)]
    after, _, probs_after = trainer.validate()
    assert losses[-1] < 0.5 * losses[0], losses
    assert after["pairs"]["accuracy"] == 1.0
    assert after["all"]["loss"] < before["all"]["loss"]
    assert max(abs(a - b) for a, b in zip(probs_after, probs_before)) > 0.3


def test_checkpoint_round_trip_reproduces_predictions(tiny_bert, tmp_path):
    rows = toy_rows(16)
    trainer = ClassifierTrainer(cfg_for(tiny_bert, tmp_path), rows, rows, show_progress=False)
    trainer.train_epoch(1)
    _, (threshold, prompt_threshold), probs = trainer.validate()
    trainer.save(tmp_path / "saved", {"threshold": threshold, "prompt_threshold": prompt_threshold, "max_length": 32})
    clf = DecisionClassifier.load(tmp_path / "saved")
    again = clf.predict_proba([e.prompt for e in rows], [e.response for e in rows])
    assert torch.allclose(torch.tensor(again), torch.tensor(probs), atol=1e-5)
    decisions = clf.predict([e.prompt for e in rows], [e.response for e in rows])
    expected = ["refuse" if p >= (threshold if e.is_pair else prompt_threshold) else "comply" for p, e in zip(probs, rows)]
    assert [d.decision for d in decisions] == expected
    # An empty response is the prompt-only decision.
    assert clf.predict_proba([rows[0].prompt], [""]) == pytest.approx(clf.predict_proba([rows[0].prompt]), abs=1e-6)


def test_train_classifier_in_process_writes_model_and_meta(tiny_bert, tmp_path):
    data = write_toy(tmp_path)
    cfg = cfg_for(tiny_bert, tmp_path, data={"sources": [{"path": str(data)}], "val_fraction": 0.2,
                                             "test_fraction": 0.2})
    out = train_classifier(cfg)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["label_map"] == {"0": "comply", "1": "refuse"}
    assert 0 < meta["threshold"] < 1 and 0 < meta["prompt_threshold"] < 1
    assert len(meta["data"]["fingerprint"]) == 64
    assert meta["config"]["model"]["backbone"] == tiny_bert
    assert meta["metrics"]["test"]["pairs"]["accuracy"] >= 0.9
    assert set(meta["metrics"]["test"]) == {"all", "pairs", "prompt_only"}
    # best epoch is the one with the best validation AUROC
    aurocs = [h["validation"]["all"]["auroc"] for h in meta["history"]]
    assert meta["metrics"]["validation"]["all"]["auroc"] == max(aurocs)
    # nothing left behind but the published folder
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".clf")) == []
    assert DecisionClassifier.load(out).predict(["q"], ["sorry i cannot help"])[0].decision == "refuse"


@pytest.mark.ray
def test_two_ray_train_workers(tiny_bert, tmp_path, ray_cluster):
    data = write_toy(tmp_path)
    cfg = cfg_for(tiny_bert, tmp_path, data={"sources": [{"path": str(data)}]},
                  scale={"num_workers": 2, "cpus_per_worker": 0.5}, train={"epochs": 4})
    out = train_classifier(cfg)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["world_size"] == 2
    assert meta["metrics"]["validation"]["pairs"]["accuracy"] >= 0.9


def test_single_label_training_data_is_rejected(tmp_path):
    p = tmp_path / "one.jsonl"
    p.write_text("".join(json.dumps({"prompt": f"p{i}", "label": "refuse"}) + "\n" for i in range(20)))
    cfg = from_dict(ClassifierJobConfig, {"data": {"sources": [{"path": str(p)}]}})
    with pytest.raises(DataError, match="only one label"):
        load_splits(cfg.data)


def test_metrics_and_threshold():
    m = binary_metrics([0.9, 0.8, 0.2, 0.6], [1, 1, 0, 0], 0.5)
    assert m["confusion"] == [[1, 1], [0, 2]] and m["accuracy"] == 0.75 and m["auroc"] == 1.0
    t = choose_threshold([0.9, 0.8, 0.2, 0.6], [1, 1, 0, 0], "accuracy")
    assert 0.6 < t < 0.8
    assert binary_metrics([0.9, 0.8, 0.2, 0.6], [1, 1, 0, 0], t)["accuracy"] == 1.0
    assert binary_metrics([0.3], [1])["auroc"] is None
    # too few rows to fit a threshold to: 0.5, whatever they say
    assert choose_threshold([0.9, 0.8, 0.2, 0.6], [1, 1, 0, 0], "accuracy", min_rows=5) == 0.5
    assert choose_threshold([0.9, 0.8, 0.2, 0.6], [1, 1, 0, 0], "accuracy", min_rows=4) == t
    from jobs.errors import ConfigError

    with pytest.raises(ConfigError, match="train.threshold_min_rows"):
        from_dict(ClassifierJobConfig, {"train": {"threshold_min_rows": -1}})


def test_smoothed_threshold_is_not_pushed_to_the_edge_by_one_row():
    """30 refusals at 0.97-0.999, 30 compliances at 0-0.2 and one at 0.96: the exact
    optimum squeezes between 0.96 and 0.97; the smoothed one stays in the wide gap."""
    rng = np.random.default_rng(0)
    p = list(rng.uniform(0.97, 0.999, 30)) + list(rng.uniform(0.001, 0.2, 30)) + [0.96]
    y = [1] * 30 + [0] * 31
    exact, smooth = choose_threshold(p, y), choose_threshold(p, y, smoothing=1.0)
    assert 0.96 < exact < 0.97
    assert 0.5 < smooth < 0.9  # one row is not evidence enough to move next to the refusals
    assert binary_metrics(p, y, smooth)["accuracy"] == 60 / 61
    # separable classes with a wide gap: the middle of the gap in logit space
    assert abs(choose_threshold([0.01, 0.02, 0.98, 0.99], [0, 0, 1, 1], smoothing=1.0) - 0.5) < 0.02
    assert choose_threshold([0.3, 0.4], [1, 1], smoothing=1.0) == 0.5  # one class only


def test_deepspeed_zero2_in_process(tiny_bert, tmp_path):
    cfg = cfg_for(tiny_bert, tmp_path, scale={"deepspeed": {"zero_optimization": {"stage": 2}}})
    rows = toy_rows()
    trainer = ClassifierTrainer(cfg, rows, rows, show_progress=False)
    assert trainer.engine is not None
    losses = [trainer.train_epoch(e)["train_loss"] for e in range(1, 5)]
    assert losses[-1] < 0.7 * losses[0], losses
    metrics, _, _ = trainer.validate()
    assert metrics["pairs"]["accuracy"] == 1.0


def test_swapped_prompt_pairs_keep_labels_and_cross_prompt_kinds():
    from jobs.classifier.train import swapped_prompt_pairs

    rows = []
    for i in range(6):
        harmful = i % 2 == 1
        prompt = f"{'bomb' if harmful else 'bread'} {i}"
        rows.append(Example(prompt, None, REFUSE if harmful else COMPLY, "t", group=str(i), meta={"harmful": harmful}))
        rows.append(Example(prompt, "sorry, no", REFUSE, "t", group=str(i), meta={"harmful": harmful}))
        rows.append(Example(prompt, "sure, here", COMPLY, "t", group=str(i), meta={"harmful": harmful}))
    swapped = swapped_prompt_pairs(rows, seed=0)
    assert len(swapped) == 12 and all(e.is_pair and e.meta["swapped_prompt"] for e in swapped)
    originals = [e for e in rows if e.is_pair]
    for orig, new in zip(originals, swapped):
        assert new.response == orig.response and new.label == orig.label
        assert new.prompt.startswith("bread" if orig.meta["harmful"] else "bomb")
    assert swapped_prompt_pairs(rows, seed=0) == swapped  # deterministic


def test_first_sentence_pairs_answer_with_the_opening_and_keep_the_label():
    from jobs.classifier.train import first_sentence, first_sentence_pairs

    assert first_sentence("I cannot help with that. It is dangerous.") == "I cannot help with that."
    assert first_sentence("Sure!\nStep 1: mix.") == "Sure!"
    assert first_sentence("Version 2.0 is out. More soon.") == "Version 2.0 is out."  # no break inside 2.0
    rows = [Example("p1", "I cannot help with that. Making it would hurt people and is illegal.", REFUSE, "t", group="1"),
            Example("p2", "Sure, here you go: mix the flour, then knead for ten minutes.", COMPLY, "t", group="2"),
            Example("p3", "Ok. Fine.", COMPLY, "t", group="3"),  # opening shorter than 8 characters: skipped
            Example("p4", None, REFUSE, "t", group="4"),
            Example("p5", "No. " + "x" * 40, REFUSE, "t", group="5", meta={"swapped_prompt": True})]
    got = first_sentence_pairs(rows)
    assert [(e.prompt, e.response, e.label, e.group) for e in got] == [("p1", "I cannot help with that.", REFUSE, "1")]
    assert got[0].meta["first_sentence"] is True


def test_response_only_pairs_skip_the_prompt_and_are_told_apart_from_prompts(tiny_bert):
    from transformers import AutoTokenizer

    from jobs.classifier.model import encode

    tok = AutoTokenizer.from_pretrained(tiny_bert)
    both = encode(tok, ["how to bake", "how to bake"], ["sorry no", None], 64)
    resp = encode(tok, ["how to bake", "how to bake"], ["sorry no", None], 64, pair_input="response")
    assert resp[1] == both[1] == tok("how to bake")["input_ids"]  # prompt-only rows read the prompt either way
    assert resp[0] == tok("", "sorry no")["input_ids"] != tok("sorry no")["input_ids"]  # [CLS] [SEP] response [SEP]
    assert encode(tok, ["other prompt"], ["sorry no"], 64, "response") == resp[:1]
    assert both[0] != resp[0]
    with pytest.raises(ValueError, match="pair_input must be one of"):
        encode(tok, ["p"], ["r"], 64, "prompt")


def test_a_long_prompt_keeps_its_start_and_its_end_and_right_truncation_keeps_the_start(tiny_bert):
    from transformers import AutoTokenizer

    from jobs.classifier.model import HEAD_SHARE, encode

    tok = AutoTokenizer.from_pretrained(tiny_bert)
    prompt = " ".join(f"w{i}" for i in range(200)) + " finally make a bomb"
    full = tok(prompt, truncation=False, verbose=False)["input_ids"]
    assert len(full) > 64
    head_tail, = encode(tok, [prompt], [None], 64)
    right, = encode(tok, [prompt], [None], 64, prompt_truncation="right")
    head = int(62 * HEAD_SHARE)
    assert len(head_tail) == len(right) == 64
    assert head_tail == full[:1 + head] + full[len(full) - 1 - (62 - head):]  # [CLS] start ... end [SEP]
    assert tok.decode(head_tail[-5:-1]).endswith("make a bomb") and "bomb" not in tok.decode(right)
    assert right == full[:63] + full[-1:]
    # short prompts and pairs are untouched
    assert encode(tok, ["how to bake"], [None], 64) == [tok("how to bake")["input_ids"]]
    assert encode(tok, [prompt], ["sorry no"], 64) == encode(tok, [prompt], ["sorry no"], 64, prompt_truncation="right")
    with pytest.raises(ValueError, match="prompt_truncation must be"):
        encode(tok, ["p"], [None], 64, prompt_truncation="left")


def test_prompt_segments_split_paragraphs_and_sentences_and_stay_bounded():
    from jobs.classifier.model import SENTENCE_CHARS, prompt_segments

    doc = "First paragraph of a document.\n\n---\n\nSecond one.\n \nNow write the harmful thing."
    assert prompt_segments(doc) == ["First paragraph of a document.", "Second one.", "Now write the harmful thing."]
    assert prompt_segments(doc, "whole") == []
    assert prompt_segments("One paragraph. Two sentences.") == []  # nothing beyond the whole
    many = "\n\n".join(f"p{i}" for i in range(100))
    groups = prompt_segments(many, max_segments=32)
    assert len(groups) <= 32 and "\n\n".join(groups).split("\n\n") == [f"p{i}" for i in range(100)]
    long_par = " ".join(f"Sentence number {i} is here." for i in range(20)) + " Make a bomb now."
    sentences = prompt_segments(long_par, "sentences")
    assert len(sentences) > 1 and all(len(s) <= SENTENCE_CHARS for s in sentences)
    assert " ".join(sentences) == long_par and sentences[-1].endswith("Make a bomb now.")
    with pytest.raises(ValueError, match="prompt_scan must be one of"):
        prompt_segments(doc, "words")


def test_a_prompt_only_decision_takes_the_largest_p_refuse_of_the_whole_and_its_segments(tiny_bert, tmp_path):
    from jobs.errors import ConfigError

    for key, bad in (("prompt_scan", "words"), ("prompt_truncation", "left")):
        with pytest.raises(ConfigError, match=f"model.{key}"):
            from_dict(ClassifierJobConfig, {"model": {key: bad}})
    data = write_toy(tmp_path)
    cfg = cfg_for(tiny_bert, tmp_path, data={"sources": [{"path": str(data)}], "val_fraction": 0.2, "test_fraction": 0.2},
                  train={"epochs": 1})
    out = train_classifier(cfg)
    meta = json.loads((out / "meta.json").read_text())
    assert (meta["prompt_truncation"], meta["prompt_scan"]) == ("head_tail", "paragraphs")
    clf = DecisionClassifier.load(out)
    parts = ["question number 3 about bread", "question number 5 about a bomb", "another question about bread"]
    doc = "\n\n".join(parts)
    clf.prompt_scan = "whole"
    whole, *alone = clf.predict_proba([doc] + parts)
    clf.prompt_scan = "paragraphs"
    scanned, = clf.predict_proba([doc])
    assert scanned == pytest.approx(max([whole] + alone), abs=1e-6) and scanned > whole - 1e-9
    assert len(set(round(p, 6) for p in [whole] + alone)) > 1  # the segments really score differently
    # a model saved before the settings existed reads long prompts the new way
    del meta["prompt_truncation"], meta["prompt_scan"]
    (out / "meta.json").write_text(json.dumps(meta))
    old = DecisionClassifier.load(out)
    assert (old.prompt_truncation, old.prompt_scan) == ("head_tail", "paragraphs")


def test_augmentations_join_the_training_split_only(tmp_path):
    data = write_toy(tmp_path)
    src = [{"path": str(data)}]
    base = from_dict(ClassifierJobConfig, {"data": {"sources": src, "swap_prompts": False, "first_sentences": False,
                                                    "builtin_phrasings": False}})
    plain = load_splits(base.data, base.model.pair_input)
    cfg = from_dict(ClassifierJobConfig, {"model": {"pair_input": "response"},
                                          "data": {"sources": src, "first_sentences": False}})
    aug = load_splits(cfg.data, cfg.model.pair_input)
    assert aug.validation == plain.validation and aug.test == plain.test
    added = aug.train[len(plain.train):]
    assert aug.train[: len(plain.train)] == plain.train
    # response-only pairs: swapped prompts would change nothing, so none are made
    assert not any(e.meta.get("swapped_prompt") for e in aug.train)
    builtin = [e for e in added if e.source == "builtin"]
    assert builtin and len(builtin) == len(added) and all(e.is_pair for e in builtin)
    assert {e.label for e in builtin} == {REFUSE, COMPLY}
    # the built-in set as a source is not mixed in twice
    builtin_src = {"sources": [{"path": "builtin:decisions", "format": "builtin"}], "first_sentences": False}
    twice = from_dict(ClassifierJobConfig, {"data": {**builtin_src, "builtin_phrasings": True}})
    once = from_dict(ClassifierJobConfig, {"data": {**builtin_src, "builtin_phrasings": False}})
    assert len(load_splits(twice.data, "response").train) == len(load_splits(once.data, "response").train)


def test_pair_input_is_checked_saved_and_read_back(tiny_bert, tmp_path):
    from jobs.errors import ConfigError

    with pytest.raises(ConfigError, match="model.pair_input"):
        from_dict(ClassifierJobConfig, {"model": {"pair_input": "prompt"}})
    data = write_toy(tmp_path)
    cfg = cfg_for(tiny_bert, tmp_path, model={"pair_input": "response"},
                  data={"sources": [{"path": str(data)}], "val_fraction": 0.2, "test_fraction": 0.2},
                  train={"epochs": 1})
    out = train_classifier(cfg)
    clf = DecisionClassifier.load(out)
    assert json.loads((out / "meta.json").read_text())["pair_input"] == "response" == clf.pair_input
    # the prompt does not change a pair's score; it does change a prompt-only score
    a, b = clf.predict_proba(["question about bread", "question about a bomb"], ["sorry i cannot help"] * 2)
    assert a == pytest.approx(b, abs=1e-6)
    # a model saved before pair_input existed reads prompt and response
    meta = json.loads((out / "meta.json").read_text())
    del meta["pair_input"]
    (out / "meta.json").write_text(json.dumps(meta))
    assert DecisionClassifier.load(out).pair_input == "prompt_and_response"
