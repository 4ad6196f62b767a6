"""The command-line tool: user errors are one line naming the file/key, exit status 2."""

import json


from clients.cli import main


def test_unknown_config_key_is_one_clear_line(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  epoch: 2\n")
    assert main(["classifier", "train", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"presafe: error: {cfg}:2: unknown key 'train.epoch' (did you mean 'epochs'?)"


def test_bad_override(tmp_path, capsys):
    assert main(["classifier", "train", "--config", "jobs/configs/classifier_quickstart.yaml", "train.epochs=-1"]) == 2
    assert "train.epochs: must be >= 1" in capsys.readouterr().err


def test_missing_model_folder(tmp_path, capsys):
    data = tmp_path / "d.csv"
    data.write_text("prompt,response,label\na,b,refuse\n")
    assert main(["classifier", "eval", "--model", str(tmp_path / "nope"), "--data", str(data)]) == 2
    assert "not a presafe classifier (no meta.json)" in capsys.readouterr().err


def test_eval_and_predict_on_a_trained_classifier(tiny_bert, tmp_path, capsys):
    from tests.test_classifier import cfg_for, toy_rows
    from jobs.classifier.train import ClassifierTrainer

    rows = toy_rows(24)
    trainer = ClassifierTrainer(cfg_for(tiny_bert, tmp_path), rows, rows, show_progress=False)
    for e in range(1, 7):
        trainer.train_epoch(e)
    _, (threshold, prompt_threshold), _ = trainer.validate()
    trainer.save(tmp_path / "clf", {"threshold": threshold, "prompt_threshold": prompt_threshold, "max_length": 32})
    data = tmp_path / "eval.jsonl"
    data.write_text("".join(json.dumps({"prompt": e.prompt, "response": e.response or "",
                                        "label": "refuse" if e.label else "comply"}) + "\n" for e in rows))
    out_json = tmp_path / "m.json"
    assert main(["classifier", "eval", "--model", str(tmp_path / "clf"), "--data", str(data), "--json", str(out_json)]) == 0
    table = capsys.readouterr().out
    assert "pairs" in table and "prompt_only" in table
    metrics = json.loads(out_json.read_text())
    assert metrics["pairs"]["accuracy"] == 1.0 and metrics["pairs"]["n"] == 48
    assert main(["classifier", "predict", "--model", str(tmp_path / "clf"), "--prompt", "q",
                 "--response", "sorry i cannot help"]) == 0
    assert json.loads(capsys.readouterr().out)["decision"] == "refuse"


def test_bad_data_file_in_eval_names_line(tiny_bert, tmp_path, capsys):
    from jobs.classifier.model import save_classifier
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    save_classifier(AutoModelForSequenceClassification.from_pretrained(tiny_bert), AutoTokenizer.from_pretrained(tiny_bert),
                    {"threshold": 0.5}, tmp_path / "clf")
    data = tmp_path / "bad.csv"
    data.write_text("prompt,response,label\na,b,refuse\nc,d,perhaps\n")
    assert main(["classifier", "eval", "--model", str(tmp_path / "clf"), "--data", str(data)]) == 2
    assert f"{data}:3: unknown label 'perhaps'" in capsys.readouterr().err


def test_models_list_runs(capsys):
    assert main(["models", "list"]) == 0
    assert "embedded:all-minilm-l6-v2" in capsys.readouterr().out
