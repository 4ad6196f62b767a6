"""The guard recipe (issue 16): class-balanced prompt-only rows, hard negatives, held-out
source folds, temperature calibration, and versioned / registered models on the service
(plain objects, no Ray)."""

from __future__ import annotations

import collections
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from jobs.classifier.calibration import (
    calibrate_kinds,
    expected_calibration_error,
    fit_temperature,
    map_threshold,
    sigmoid,
)
from jobs.classifier.config import BalanceConfig, ClassifierJobConfig
from jobs.classifier.model import META, DecisionClassifier, load_backbone, save_classifier
from jobs.classifier.train import balance_prompt_only, calibrate_saved, load_splits
from jobs.config import from_dict, load_config, to_dict
from jobs.data.borderline import borderline_prompts
from jobs.data.records import COMPLY, REFUSE, Example
from jobs.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


def _prompt_rows(n: int, label: int, source: str) -> list[Example]:
    return [Example(f"{source} prompt {i}", None, label, source, group=f"{source}-{i}") for i in range(n)]


def _count(rows: list[Example]) -> collections.Counter:
    return collections.Counter((e.label, e.source) for e in rows if not e.is_pair)


def test_balanced_sampling_draws_the_configured_ratio_spread_over_sources():
    pairs = [Example("p", "I can't help.", REFUSE, "xs", group="g1"), Example("q", "Sure: ...", COMPLY, "xs", group="g2")]
    rows = (pairs + _prompt_rows(20, REFUSE, "adv") + _prompt_rows(10, REFUSE, "mi")
            + _prompt_rows(180, COMPLY, "alpaca") + _prompt_rows(20, COMPLY, "xs"))
    out = balance_prompt_only(rows, BalanceConfig(ratio=2.0), seed=0)
    c = _count(out)
    refuse = sum(v for (label, _), v in c.items() if label == REFUSE)
    comply = sum(v for (label, _), v in c.items() if label == COMPLY)
    assert (refuse, comply) == (30, 60)  # every harmful row, twice as many benign
    assert c[(COMPLY, "xs")] == 20 and c[(COMPLY, "alpaca")] == 40  # the small source keeps all it has
    assert [e for e in out if e.is_pair] == pairs  # pairs are never sampled
    # capped, deterministic by seed, and a different seed draws other rows
    capped = balance_prompt_only(rows, BalanceConfig(ratio=1.0, max_per_class=10), seed=0)
    assert sum(_count(capped).values()) == 20 and _count(capped)[(REFUSE, "adv")] == 5
    again = balance_prompt_only(rows, BalanceConfig(ratio=1.0, max_per_class=10), seed=0)
    other = balance_prompt_only(rows, BalanceConfig(ratio=1.0, max_per_class=10), seed=1)
    assert [e.prompt for e in capped] == [e.prompt for e in again] != [e.prompt for e in other]
    # one draw over the whole class: the large benign source dominates
    flat = _count(balance_prompt_only(rows, BalanceConfig(ratio=2.0, by_source=False), seed=0))
    assert flat[(COMPLY, "alpaca")] > 40


def _files(tmp_path: Path) -> dict[str, dict]:
    (tmp_path / "harm.csv").write_text("prompt\n" + "".join(f"how to build weapon {i}\n" for i in range(40)))
    (tmp_path / "benign.csv").write_text("prompt\n" + "".join(f"recipe for cake {i}\n" for i in range(400)))
    return {"harm": {"path": str(tmp_path / "harm.csv"), "format": "csv", "harmful": True},
            "benign": {"path": str(tmp_path / "benign.csv"), "format": "csv", "harmful": False}}


def test_load_splits_balances_prompt_only_rows_before_the_split(tmp_path):
    f = _files(tmp_path)
    cfg = from_dict(ClassifierJobConfig, {"data": {"sources": [f["harm"], f["benign"]], "builtin_phrasings": False,
                                                   "balance": {"ratio": 1.5}}}).data
    d = load_splits(cfg)
    labels = collections.Counter(e.label for part in (d.train, d.validation, d.test) for e in part)
    assert labels == {REFUSE: 40, COMPLY: 60}


def _xstest_csv(path: Path) -> Path:
    lines = ["id,model,type,prompt_label,prompt,completion,decision"]
    for i in range(12):
        kind, label = ("homonyms", "safe") if i % 2 else ("contrast_homonyms", "unsafe")
        for model in ("gpt4", "llama2new"):
            answer, decision = ("Sure. Here is how.", "comply") if label == "safe" else ("I can't help.", "refuse")
            lines.append(f"x{i},{model},{kind},{label},How do I kill thing {i}?,{answer},{decision}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_hard_negatives_reach_the_training_split_only(tmp_path):
    f = _files(tmp_path)
    xs = _xstest_csv(tmp_path / "xstest.csv")
    cfg = from_dict(ClassifierJobConfig, {"data": {
        "sources": [f["harm"], f["benign"], {"path": str(xs), "format": "xstest"}],
        "hard_negatives": [{"path": "builtin:borderline-train", "format": "builtin"},
                           {"path": str(xs), "format": "xstest", "categories": ["homonyms"]}],
        "val_fraction": 0.3, "test_fraction": 0.0, "builtin_phrasings": False}}).data
    d = load_splits(cfg)
    train = {e.prompt: e for e in d.train}
    borderline = [p.prompt for p in borderline_prompts("borderline-train")]
    assert all(p in train and train[p].label == COMPLY for p in borderline)
    assert not {e.prompt for e in d.validation} & set(borderline)
    # an XSTest homonym held out in validation is not smuggled back in as a hard negative
    held = {e.prompt for e in d.validation if not e.is_pair}
    hard = [e for e in d.train if e.meta.get("hard_negative") and e.source == "xstest"]
    assert hard and all(e.label == COMPLY and e.prompt not in held for e in hard)
    homonyms = {f"How do I kill thing {i}?" for i in range(1, 12, 2)}
    assert {e.prompt for e in hard} == homonyms - held


def test_leave_one_source_out_never_trains_on_the_held_out_source(tmp_path):
    import guard_quality as gq

    f = _files(tmp_path)
    adv = tmp_path / "advbench.csv"
    adv.write_text("goal,target\n" + "".join(f"Write a guide to hurt {i},Sure\n" for i in range(30)))
    mi = tmp_path / "mi.txt"
    mi.write_text("".join(f"How to poison {i}?\n" for i in range(30)))
    xs = _xstest_csv(tmp_path / "xstest.csv")
    settings = to_dict(from_dict(ClassifierJobConfig, {"data": {
        "sources": [{"path": str(xs), "format": "xstest"}, {"path": str(adv), "format": "advbench"},
                    {"path": str(mi), "format": "malicious_instruct"}, f["benign"]],
        "hard_negatives": [{"path": str(xs), "format": "xstest", "categories": ["homonyms"]}],
        "balance": {"ratio": 1.0}}}))
    cfg = gq.prompt_fold_config(settings, "advbench", ["homonyms"], tmp_path / "out")
    assert cfg.data.test_fraction == 0.0
    d = load_splits(cfg.data, cfg.model.pair_input)
    seen = d.train + d.validation
    assert {e.source for e in seen} >= {"malicious_instruct", "xstest"}
    assert not [e for e in seen if e.source == "advbench"]
    assert not [e for e in seen if e.meta.get("type") == "homonyms"]
    advbench_prompts = {f"Write a guide to hurt {i}" for i in range(30)}
    assert not advbench_prompts & {e.prompt for e in seen}
    # the folds cover every XSTest safe type exactly once
    covered = [t for k in range(len(gq.HARMFUL_SOURCES)) for t in gq.held_out_types(k)]
    assert sorted(covered) == sorted(gq.XSTEST_SAFE_TYPES)


def test_own_kinds_fold_holds_out_xstest_types_and_keeps_presafes_prompts_of_them(tmp_path):
    """--own-kinds: XSTest's homonyms leave training, presafe's own homonyms stay (strict
    folds drop both)."""
    import guard_quality as gq

    f = _files(tmp_path)
    xs = _xstest_csv(tmp_path / "xstest.csv")
    settings = to_dict(from_dict(ClassifierJobConfig, {"data": {
        "sources": [{"path": str(xs), "format": "xstest"}, f["harm"], f["benign"]],
        "hard_negatives": [{"path": str(xs), "format": "xstest", "categories": ["homonyms"]},
                           {"path": "builtin:borderline-train", "format": "builtin"}],
        "builtin_phrasings": False}}))
    own_homonyms = {p.prompt for p in borderline_prompts("borderline-train") if p.category == "homonyms"}
    assert own_homonyms
    for own_kinds in (False, True):
        cfg = gq.prompt_fold_config(settings, "advbench", ["homonyms"], tmp_path / "out", own_kinds=own_kinds)
        d = load_splits(cfg.data, cfg.model.pair_input)
        seen = d.train + d.validation
        assert not [e for e in seen if e.source == "xstest" and e.meta.get("type") == "homonyms"]
        kept = {e.prompt for e in seen if e.meta.get("type") == "homonyms"}
        assert kept == (own_homonyms if own_kinds else set())
        # other kinds of presafe's set are trained either way
        assert any(e.meta.get("type") == "figurative_language" for e in d.train)


def test_leave_one_source_out_on_the_shipped_recipe(shared_data):
    import guard_quality as gq

    settings = gq.shared_paths(to_dict(load_config(ClassifierJobConfig, gq.RECIPE)), None)
    for source in ("advbench", "harmbench"):
        cfg = gq.prompt_fold_config(settings, source, gq.held_out_types(gq.HARMFUL_SOURCES.index(source)), Path("x"))
        d = load_splits(cfg.data, cfg.model.pair_input)
        assert not [e for e in d.train + d.validation if e.source == source]
        assert not [e for e in d.train if e.meta.get("type") in gq.held_out_types(gq.HARMFUL_SOURCES.index(source))]
        assert any(e.meta.get("hard_negative") for e in d.train)


def test_marker_words_are_the_words_of_harmful_prompts_that_benign_ones_rarely_use():
    from jobs.classifier.hard_negatives import marker_words

    harmful = [f"how to build a bomb at home {i}" for i in range(10)] + ["how to steal a car"] * 2
    benign = [f"how to bake a cake at home {i}" for i in range(50)]
    words = dict(marker_words(harmful, benign, min_log_odds=1.0, min_count=3))
    assert "bomb" in words and "build" in words
    assert "steal" not in words  # held by 2 harmful prompts, under min_count
    assert "how" not in words and "home" not in words  # as common in benign prompts
    assert list(words) == sorted(words, key=lambda w: -words[w]) and min(words.values()) >= 1.0
    assert len(marker_words(harmful, benign, min_log_odds=1.0, min_count=3, top=1)) == 1


def test_mined_hard_negatives_use_marker_words_and_never_a_held_out_prompt(tmp_path):
    (tmp_path / "harm.csv").write_text("prompt\n" + "".join(f"how to build a bomb {i}\n" for i in range(40)))
    benign = ([f"recipe for cake {i}" for i in range(300)] + [f"what does a bath bomb smell like {i}" for i in range(30)]
              + [f"explain the word bomb in slang {i}" for i in range(30)])
    (tmp_path / "benign.csv").write_text("prompt\n" + "".join(f"{b}\n" for b in benign))
    data = {"sources": [{"path": str(tmp_path / "harm.csv"), "format": "csv", "harmful": True},
                        {"path": str(tmp_path / "benign.csv"), "format": "csv", "harmful": False}],
            "balance": {"ratio": 1.0}, "val_fraction": 0.3, "test_fraction": 0.0, "builtin_phrasings": False}
    plain = load_splits(from_dict(ClassifierJobConfig, {"data": data}).data)
    cfg = from_dict(ClassifierJobConfig, {"data": {**data, "mined_hard_negatives": {"max_rows": 25}}}).data
    d = load_splits(cfg)
    mined = [e for e in d.train if e.meta.get("mined")]
    assert len(mined) == 25 and all(e.label == COMPLY and not e.is_pair for e in mined)
    assert all("bomb" in e.prompt and e.meta["marker"] in ("bomb", "build") for e in mined)
    held = {e.prompt for e in d.validation}
    assert not held & {e.prompt for e in mined}
    assert len({e.prompt for e in mined}) == 25  # no duplicates, none already in training
    assert not {e.prompt for e in mined} & {e.prompt for e in plain.train}
    # balancing drew ~40 of 360 benign rows at random: mining adds the ones that share the words
    drawn = sum("bomb" in e.prompt for e in plain.train if e.label == COMPLY)
    assert sum("bomb" in e.prompt for e in d.train if e.label == COMPLY) >= drawn + 25
    assert load_splits(cfg).train == d.train  # deterministic
    with pytest.raises(ConfigError, match=r"data\.mined_hard_negatives\.max_rows: must be >= 1, got 0"):
        from_dict(ClassifierJobConfig, {"data": {**data, "mined_hard_negatives": {"max_rows": 0}}})


def test_mined_hard_negatives_take_their_words_from_training_sources_only(tmp_path):
    (tmp_path / "harm.csv").write_text("prompt\n" + "".join(f"how to build a bomb {i}\n" for i in range(40)))
    (tmp_path / "adv.csv").write_text("goal,target\n" + "".join(f"poison the river {i},Sure\n" for i in range(40)))
    benign = ([f"recipe for cake {i}" for i in range(300)] + [f"which poison ivy cream works best {i}" for i in range(30)]
              + [f"build a birdhouse from pallets {i}" for i in range(30)])
    (tmp_path / "benign.csv").write_text("prompt\n" + "".join(f"{b}\n" for b in benign))
    cfg = from_dict(ClassifierJobConfig, {"data": {
        "sources": [{"path": str(tmp_path / "harm.csv"), "format": "csv", "harmful": True},
                    {"path": str(tmp_path / "adv.csv"), "format": "advbench"},
                    {"path": str(tmp_path / "benign.csv"), "format": "csv", "harmful": False}],
        "exclude": {"source": ["advbench"]}, "mined_hard_negatives": {}, "balance": {"ratio": 1.0},
        "val_fraction": 0.2, "test_fraction": 0.0, "builtin_phrasings": False}}).data
    d = load_splits(cfg)
    mined = [e for e in d.train if e.meta.get("mined")]
    assert mined and all(e.meta["marker"] == "build" for e in mined)  # a word of the training source...
    assert not [e for e in mined if "poison" in e.prompt]  # ...never one that marks only the held-out source


def test_temperature_scaling_fixes_an_overconfident_model():
    rng = np.random.default_rng(0)
    true_z = rng.normal(0, 2, 4000)
    y = (rng.random(4000) < sigmoid(true_z)).astype(int)
    z = 5 * true_z  # over-confident: logits scaled x5
    t = fit_temperature(z, y)
    assert 4 < t < 6
    before, after = expected_calibration_error(sigmoid(z), y), expected_calibration_error(sigmoid(z, t), y)
    assert after < before / 3 and after < 0.03
    kinds = calibrate_kinds(np.concatenate([z, true_z]), np.concatenate([y, y]), [True] * 4000 + [False] * 4000)
    assert kinds["pairs"]["temperature"] > 1 and kinds["pairs"]["ece_after"] < kinds["pairs"]["ece_before"]
    assert abs(kinds["prompt_only"]["temperature"] - 1) < 0.15  # already calibrated: left about as it was
    # the mapped threshold makes the same decisions
    for thr in (0.2, 0.5, 0.83):
        assert ((sigmoid(z) >= thr) == (sigmoid(z, t) >= map_threshold(thr, t))).all()
    assert fit_temperature(z, np.ones_like(y)) == 1.0  # one class: nothing to fit


@pytest.fixture(scope="module")
def saved(tiny_bert, tmp_path_factory):
    """A tiny-BERT classifier saved with a meta.json of before calibration."""
    tok, model = load_backbone(tiny_bert)
    path = tmp_path_factory.mktemp("clf") / "model"
    save_classifier(model, tok, {"threshold": 0.5, "prompt_threshold": 0.5, "max_length": 32, "pair_input": "response",
                                 "data": {"fingerprint": "ab" * 32}}, path)
    return path


def test_old_meta_without_temperature_loads_with_t1(saved):
    import torch

    clf = DecisionClassifier.load(saved, device="cpu")
    assert clf.temperature == clf.prompt_temperature == 1.0
    prompts, responses = ["How do I bake bread?", "Build a bomb"], [None, "I can't help with that."]
    p = clf.predict_proba(prompts, responses)
    from jobs.classifier.model import encode, pad_batch

    rows = encode(clf.tokenizer, prompts, responses, 32, "response")
    with torch.no_grad():
        logits = clf.model(**pad_batch(rows, clf.tokenizer.pad_token_id)).logits
    assert np.allclose(p, torch.softmax(logits, -1)[:, REFUSE].numpy(), atol=1e-6)  # the probabilities of before
    meta = json.loads((saved / META).read_text())
    clf2 = DecisionClassifier(clf.model, clf.tokenizer, {**meta, "calibration": {
        "pairs": {"temperature": 4.0}, "prompt_only": {"temperature": 0.5}}}, device="cpu")
    z = np.log(np.array(p) / (1 - np.array(p)))
    assert np.allclose(clf2.predict_proba(prompts, responses), [sigmoid(z[0], 0.5), sigmoid(z[1], 4.0)], atol=1e-5)


def test_calibrate_saved_records_t_and_ece_and_keeps_decisions(saved, tmp_path):
    import shutil

    folder = tmp_path / "m"
    shutil.copytree(saved, folder)
    rows = ([Example(f"tell me about topic {i}", None, i % 2, "s", group=str(i)) for i in range(40)]
            + [Example(f"q{i}", "I can't help." if i % 2 else "Sure, here you go.", i % 2, "s", group=f"p{i}")
               for i in range(40)])
    before = DecisionClassifier.load(folder, device="cpu").predict([e.prompt for e in rows], [e.response for e in rows])
    meta = calibrate_saved(folder, json.loads((folder / META).read_text()), rows, min_rows=0)
    for kind in ("pairs", "prompt_only"):
        c = meta["calibration"][kind]
        assert c["n"] == 40 and c["temperature"] > 0 and c["ece_after"] <= c["ece_before"] + 1e-9
    assert (folder / "reliability.png").stat().st_size > 1000
    after = DecisionClassifier.load(folder, device="cpu")
    assert after.temperature == meta["calibration"]["pairs"]["temperature"]
    decided = after.predict([e.prompt for e in rows], [e.response for e in rows])
    assert [d.decision for d in decided] == [d.decision for d in before]  # thresholds mapped through T


# -- the service ----------------------------------------------------------------------------


def _service(tmp_path, **settings):
    from fastapi.testclient import TestClient

    from service.api import create_api
    from service.classifiers import ModelRegistry
    from service.job_service import JobService
    from service.schemas import Decision
    from service.settings import ServiceSettings, hash_token
    from service.store import JobStore

    s = ServiceSettings.model_validate({"storage_path": str(tmp_path / "storage"), "tokens": [
        {"name": "alice", "sha256": hash_token("t-alice"), "scopes": ["classify", "models:write"]},
        {"name": "bob", "sha256": hash_token("t-bob")}], **settings})
    store = JobStore(s.db_url)
    registry = ModelRegistry(s, store, ttl_s=3600)  # a long cache: registration must not wait for it
    calls = []

    async def classify(path, prompts, responses):
        calls.append(path)
        return [Decision(decision="refuse", p_refuse=0.9) for _ in prompts]

    async def ready():
        return {"store": "ok"}

    app = create_api(s, JobService(s, store, None), registry, classify, ready)
    return TestClient(app), registry, calls


def _classifier_folder(path: Path, fingerprint: str = "cd" * 32) -> Path:
    path.mkdir(parents=True)
    (path / META).write_text(json.dumps({"threshold": 0.5, "metrics": {}, "data": {"fingerprint": fingerprint}}))
    return path


def test_classify_responses_name_the_version_that_decided(tmp_path):
    client, registry, calls = _service(tmp_path, model_dirs={"guard": str(_classifier_folder(tmp_path / "g"))},
                                       default_classifier="guard")
    r = client.post("/v1/classify", json={"items": [{"prompt": "x"}]}, headers={"Authorization": "Bearer t-bob"})
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "guard" and r.json()["version"] == "guard@" + "cd" * 6
    assert registry.models().items[0].version == "guard@cdcdcdcdcdcd" and calls == [str(tmp_path / "g")]
    # the folder retrained in place: a new fingerprint, a new version
    (tmp_path / "g" / META).write_text(json.dumps({"threshold": 0.5, "data": {"fingerprint": "ef" * 32}}))
    registry._cached = None
    r = client.post("/v1/classify", json={"items": [{"prompt": "x"}]}, headers={"Authorization": "Bearer t-bob"})
    assert r.json()["version"] == "guard@efefefefefef"


def test_registering_a_model_makes_it_servable_without_a_redeploy(tmp_path):
    roots = tmp_path / "models"
    folder = _classifier_folder(roots / "guard-v2")
    (tmp_path / "outside").mkdir()
    _classifier_folder(tmp_path / "outside" / "evil")
    client, registry, calls = _service(tmp_path, paths={"model_roots": [str(roots)]})
    alice, bob = {"Authorization": "Bearer t-alice"}, {"Authorization": "Bearer t-bob"}
    registry.models()  # a cached listing from before the registration
    r = client.post("/v1/models", json={"path": str(folder)}, headers=bob)
    assert r.status_code == 403 and "models:write" in r.text  # not in a token's default scopes
    for path in (str(tmp_path / "outside" / "evil"), str(roots / ".." / "outside" / "evil"), "/etc",
                 "~nosuchuser/guard-v2", "guard\x00v2", "g" * 5000):  # the last three: 500s before
        r = client.post("/v1/models", json={"path": path}, headers=alice)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "path"], r.text
    (roots / "empty").mkdir()
    assert client.post("/v1/models", json={"path": "empty"}, headers=alice).status_code == 422  # no meta.json
    r = client.post("/v1/models", json={"path": "guard-v2"}, headers=alice)  # relative to a model root
    assert r.status_code == 201, r.text
    info = r.json()
    assert (info["id"], info["owner"], info["source"], info["path"]) == ("guard-v2", "alice", "registered",
                                                                         str(folder.resolve()))
    assert info["version"] == "guard-v2@cdcdcdcdcdcd"
    assert client.post("/v1/models", json={"path": str(folder)}, headers=alice).status_code == 409  # id taken
    # listed and resolved at once, for its owner; another principal's "not found" until promoted
    assert [m["id"] for m in client.get("/v1/models", headers=alice).json()["items"]] == ["guard-v2"]
    r = client.post("/v1/classify", json={"items": [{"prompt": "x"}], "model": "guard-v2"}, headers=alice)
    assert r.status_code == 200 and r.json()["version"] == "guard-v2@cdcdcdcdcdcd"
    assert calls == [str(folder.resolve())]
    assert client.post("/v1/classify", json={"items": [{"prompt": "x"}], "model": "guard-v2"},
                       headers=bob).status_code == 404
    registry.promote("guard-v2", "root")
    assert client.post("/v1/classify", json={"items": [{"prompt": "x"}]}, headers=bob).json()["model"] == "guard-v2"
    # a second name for the same folder
    r = client.post("/v1/models", json={"path": str(folder), "name": "guard-latest"}, headers=alice)
    assert r.status_code == 201 and registry.resolve("guard-latest")[1] == str(folder.resolve())


def test_the_pool_reloads_a_folder_whose_meta_changed(saved, tmp_path):
    import os
    import shutil

    from service.classifiers import ClassifierPool

    folder = tmp_path / "m"
    shutil.copytree(saved, folder)
    pool = ClassifierPool(capacity=2, device="cpu")
    first = pool.get(str(folder))
    assert pool.get(str(folder)) is first
    meta = json.loads((folder / META).read_text())
    (folder / META).write_text(json.dumps({**meta, "calibration": {"pairs": {"temperature": 2.0}}}))
    st = os.stat(folder / META)
    os.utime(folder / META, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    second = pool.get(str(folder))
    assert second is not first and second.temperature == 2.0


def test_recall_by_category_counts_the_model_and_the_keyword_baseline_per_category():
    import guard_quality as gq
    from jobs.data.records import PromptRecord

    records = [PromptRecord("How do I build a bomb?", True, "x", category="weapons"),
               PromptRecord("Tell me where she lives", True, "x", category="privacy"),
               PromptRecord("What is her phone number?", True, "x", category="privacy"),
               PromptRecord("Write a poem", True, "x")]
    out = gq.by_category(records, [True, False, True, False])
    assert list(out) == ["privacy", "weapons", "-"]  # largest first; no category is "-"
    assert (out["privacy"]["model"]["k"], out["privacy"]["model"]["n"]) == (1, 2)
    assert out["privacy"]["keyword"]["k"] == 0
    assert (out["weapons"]["model"]["k"], out["weapons"]["keyword"]["k"]) == (1, 1)
    assert out["-"]["model"]["k"] == 0


def test_trade_off_reads_recall_at_a_benign_pass_rate_and_the_auroc():
    import guard_quality as gq

    out = gq.trade_off([0.9, 0.8, 0.3], [0.1, 0.2, 0.5, 0.95], (0.75, 1.0))
    assert out["auroc"] == pytest.approx(8 / 12)  # 8 of the 12 (harmful, benign) pairs ordered right
    at = out["recall_at_pass"]["0.75"]
    assert at["benign_pass"] == 0.75 and (at["k"], at["n"]) == (2, 3)  # the threshold sits just above 0.5
    assert out["recall_at_pass"]["1"]["k"] == 0  # passing every benign prompt needs t above 0.95
    assert gq.trade_off([0.9], [0.1], (0.5,))["auroc"] == 1.0
    assert gq.trade_off([], [0.1], (0.5,))["auroc"] is None


def test_an_unknown_fold_name_is_an_error_not_an_empty_run(shared_data, monkeypatch, capsys):
    import guard_quality as gq

    monkeypatch.setattr(sys, "argv", ["guard_quality.py", "--folds", "advbnech", "--no-pairs"])
    assert gq.main() == 2
    err = capsys.readouterr().err
    assert "--folds" in err and "advbnech" in err and "malicious_instruct" in err
