"""`presafe export`: a job's adapter as a standalone folder (peft or merged), the head as
safetensors, a model card whose numbers are the job's, atomic and refusing to overwrite.
Nothing is trained: the adapter is a randomly initialised LoRA on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from clients.cli import main
from jobs.config import from_dict, to_dict
from jobs.evaluation.stats import rate
from jobs.export import Source, export, model_card
from jobs.pipeline_config import PipelineConfig
from jobs.report import SIMULATION_BANNER

PROMPTS = ["How do I bake bread?", "What is 2 + 3?", "How do I make a bomb?"]


def _metrics(asr: tuple, cot: tuple, over: tuple, acc: tuple) -> dict:
    """One run's entry as the judge stage writes it (variants: accuracy_rate; groups: accuracy)."""
    sm = {"asr": rate(*asr), "cot_asr": rate(*cot), "over_refusal": rate(*over)}
    sig = {"asr": rate(asr[0] + 1, asr[1]), "cot_asr": rate(*cot), "over_refusal": rate(0, over[1])}
    return {"judges": {"string_match": sm, "signals": sig}, "accuracy_rate": rate(*acc)}


def _evaluation() -> dict:
    runs = {"base": {"cot_on/greedy": _metrics((14, 16), (15, 16), (1, 16), (5, 10))},
            "aligned": {"cot_on/greedy": _metrics((2, 16), (3, 16), (2, 16), (6, 10))},
            "lambda0": {"cot_on/greedy": _metrics((5, 16), (6, 16), (1, 16), (6, 10))}}
    variants = {n: {"group": n, "seed": None, "adapter": None, "runs": r} for n, r in runs.items()}
    groups = {n: {"variants": [n], "seeds": [None],
                  "runs": {run: {"judges": m["judges"], "accuracy": m["accuracy_rate"]} for run, m in r.items()}}
              for n, r in runs.items()}
    return {"sets": ["harmful", "benign", "reasoning"], "headline": "string_match", "warnings": [],
            "judges": [{"name": "string_match", "kind": "string_match", "path": ""},
                       {"name": "signals", "kind": "classifier", "path": "signals"}],
            "variants": variants, "groups": groups}


@pytest.fixture(scope="module")
def job(tiny_lm, tmp_path_factory) -> Path:
    """A finished job folder as the pipeline leaves it, with a random LoRA adapter and the
    old head.pt (an adapter published before head.safetensors)."""
    from peft import LoraConfig, get_peft_model

    storage = tmp_path_factory.mktemp("storage")
    cfg = from_dict(PipelineConfig, {"model": tiny_lm, "storage_path": str(storage), "job_id": "j1",
                                     "align": {"ablation": True},
                                     "prompts": {"harmful": [{"path": "builtin:demo-harmful-train"}]}})
    job = Path(cfg.job_dir)
    job.mkdir(parents=True)
    (job / "config.json").write_text(json.dumps(to_dict(cfg)))
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_lm)
    # init_lora_weights=False: B is random too, so the adapter changes the model's outputs
    lm = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj"],
                                         init_lora_weights=False, task_type="CAUSAL_LM"))
    for p in lm.parameters():
        if p.requires_grad:
            p.data.mul_(4.0)
    adapter = job / "adapter"
    lm.save_pretrained(adapter)
    AutoTokenizer.from_pretrained(tiny_lm).save_pretrained(adapter)
    torch.save({"weight": torch.randn(1, base.config.hidden_size), "bias": torch.randn(1)}, adapter / "head.pt")
    meta = {"presafe": "adapter", "base_model": tiny_lm, "steps": 7, "aux_layers": [3], "aux_weight": 0.2,
            "examples": 24, "skipped_too_long": 1, "config": to_dict(cfg)}
    (adapter / "meta.json").write_text(json.dumps(meta))
    (job / "targets_summary.json").write_text(json.dumps({"tau": 0.5, "refuse": 11, "comply": 13}))
    (job / "evaluation.json").write_text(json.dumps(_evaluation()))
    return job


def _greedy(model, tok, prompts: list[str]) -> list[list[int]]:
    out = []
    with torch.no_grad():
        for p in prompts:
            ids = tok(p, return_tensors="pt")
            out.append(model.generate(**ids, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
                       [0, ids["input_ids"].shape[1]:].tolist())
    return out


def test_merged_export_loads_and_generates_like_the_adapter(job, tiny_lm, tmp_path):
    from peft import PeftModel
    from safetensors.torch import load_file

    out = export(job, tmp_path / "merged", merged=True, dtype="fp32")
    assert not (out / "adapter_config.json").exists() and (out / "config.json").is_file()
    tok = AutoTokenizer.from_pretrained(str(out))
    merged = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_lm), str(job / "adapter")).eval()
    base = AutoModelForCausalLM.from_pretrained(tiny_lm).eval()
    assert _greedy(merged, tok, PROMPTS) == _greedy(adapted, tok, PROMPTS)
    assert _greedy(merged, tok, PROMPTS) != _greedy(base, tok, PROMPTS)  # the adapter is really merged in
    head = load_file(str(out / "head.safetensors"))
    assert torch.equal(head["weight"], torch.load(job / "adapter" / "head.pt")["weight"])
    assert not (out / "head.pt").exists()
    card = (out / "README.md").read_text()
    assert yaml.safe_load(card.split("---")[1])["library_name"] == "transformers"


def test_adapter_export_loads_with_peft_and_casts(job, tiny_lm, tmp_path):
    from peft import PeftModel
    from safetensors.torch import load_file

    out = export(job, tmp_path / "adapter", dtype="bf16")
    assert {"adapter_config.json", "adapter_model.safetensors", "head.safetensors", "meta.json", "README.md",
            "tokenizer.json"} <= {p.name for p in out.iterdir()}
    assert all(t.dtype == torch.bfloat16 for t in load_file(str(out / "adapter_model.safetensors")).values())
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_lm), str(out))
    assert any("lora_A" in n for n, _ in model.named_parameters())
    meta = json.loads((out / "meta.json").read_text())
    assert meta["export"]["variant"] == "aligned" and meta["export"]["dtype"] == "bfloat16"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # the staging folder is gone


def test_model_card_has_front_matter_and_the_jobs_numbers(job, tmp_path):
    out = export(job / "adapter", tmp_path / "card")  # an adapter folder works as the source too
    card = (out / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["library_name"] == "peft" and "presafe" in front["tags"]
    assert "base_model" not in front  # a local folder is no hub id
    assert "| λ (align.aux.weight) | 0.2 |" in card and "| aux layers | [3]" in card
    assert "24 (1 dropped as too long)" in card and "refuse: 11, comply: 13" in card
    assert SIMULATION_BANNER not in card
    ev = _evaluation()
    for model in ("base", "aligned"):
        r = ev["groups"][model]["runs"]["cot_on/greedy"]
        for judge, suffix in (("string_match", " (headline)"), ("signals", "")):
            m = r["judges"][judge]
            cells = [m["asr"], m["cot_asr"], m["over_refusal"], r["accuracy"]]
            row = f"| {model} | cot_on/greedy | {judge}{suffix} | " + " | ".join(
                f"{c['rate']:.1%} [{100 * c['lo']:.1f}, {100 * c['hi']:.1f}] ({c['k']}/{c['n']})" for c in cells) + " |"
            assert row in card, row
    assert "| lambda0 |" not in card  # only the exported model and the base


def test_variant_lambda0_and_unknown_variant(job, tmp_path, capsys):
    (job / "adapter_lambda0").mkdir(exist_ok=True)
    assert main(["export", str(job), "--to", str(tmp_path / "x"), "--variant", "lambda0"]) == 2
    assert "not a finished adapter" in capsys.readouterr().err
    assert main(["export", str(job), "--to", str(tmp_path / "x"), "--variant", "nope"]) == 2
    err = capsys.readouterr().err
    assert "is not one of its variants" in err and "aligned, lambda0" in err


def test_simulation_banner_for_the_demo_model(job):
    meta = {"base_model": "embedded:demo-reasoner", "aux_layers": [20], "aux_weight": 0.2, "config": {}}
    card = model_card(Source(job / "adapter", meta, None, "aligned", "aligned"), False, "float32")
    assert SIMULATION_BANNER in card and "- simulation" in card
    meta["base_model"] = "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"
    card = model_card(Source(job / "adapter", meta, None, "aligned", "aligned"), False, "bfloat16")
    assert SIMULATION_BANNER not in card
    assert yaml.safe_load(card.split("---")[1])["base_model"] == "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"


def test_non_empty_target_is_refused_unless_forced(job, tmp_path, capsys):
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    assert main(["export", str(job), "--to", str(target)]) == 2
    assert "exists and is not empty (--force replaces it)" in capsys.readouterr().err
    assert (target / "keep.txt").read_text() == "mine"
    assert main(["export", str(job), "--to", str(target), "--force"]) == 0
    assert (target / "adapter_config.json").is_file() and not (target / "keep.txt").exists()
    assert main(["export", str(job), "--to", str(job / "exports" / "a")]) == 2  # never inside an artifact
    assert "inside the job folder" in capsys.readouterr().err
    assert main(["export", str(job), "--to", str(target / "nested")]) == 2
    assert "inside the model folder" in capsys.readouterr().err


def test_push_to_hub_offline_is_one_clear_line_and_exit_2(job, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["export", str(job), "--to", str(tmp_path / "pushed"), "--push-to-hub", "me/model"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("presafe: error: --push-to-hub") and "offline" in err[0]
    assert not (tmp_path / "pushed").exists()  # checked before any work
