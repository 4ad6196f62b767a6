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
