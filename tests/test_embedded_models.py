"""The embedded offline models: MiniLM in place, SmolLM2 converted once from GGUF."""

import json

import pytest
import torch

from jobs.errors import PresafeError
from jobs.models import embedded


def test_minilm_resolves_to_a_loadable_bert():
    from transformers import AutoConfig

    path = embedded.resolve_model("embedded:all-minilm-l6-v2")
    cfg = AutoConfig.from_pretrained(path)
    assert cfg.model_type == "bert" and cfg.num_hidden_layers == 6


def test_other_names_pass_through_and_unknown_embedded_fails():
    assert embedded.resolve_model("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B") == "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"
    with pytest.raises(PresafeError, match="unknown embedded model"):
        embedded.resolve_model("embedded:gpt-9")


def test_unprepared_model_is_reported_not_converted(tmp_path, monkeypatch):
    monkeypatch.setenv("PRESAFE_HOME", str(tmp_path))
    with pytest.raises(PresafeError, match="presafe models prepare"):
        embedded.resolve_model("embedded:smollm2-135m-instruct", prepare=False)
    listed = {m.name: m for m in embedded.list_models()}
    assert not listed["embedded:smollm2-135m-instruct"].ready


@pytest.mark.slow
def test_smollm2_conversion_is_plain_float32_and_idempotent(tmp_path, monkeypatch):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("PRESAFE_HOME", str(tmp_path))
    path = embedded.resolve_model("embedded:smollm2-135m-instruct")
    cfg = AutoConfig.from_pretrained(path)
    assert getattr(cfg, "quantization_config", None) is None
    assert (tmp_path / "models" / "smollm2-135m-instruct" / "model.safetensors").is_file()
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    assert next(model.parameters()).dtype == torch.float32
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    # A real model, not noise: it continues a counting sequence.
    ids = tok("1, 2, 3, 4,", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert "5" in tok.decode(out[0, ids["input_ids"].shape[1]:])
    stamp = path + "/presafe_prepared.json"
    before = json.loads(open(stamp).read())
    mtime = (tmp_path / "models" / "smollm2-135m-instruct" / "model.safetensors").stat().st_mtime
    assert embedded.resolve_model("embedded:smollm2-135m-instruct") == path  # second call: no work
    assert (tmp_path / "models" / "smollm2-135m-instruct" / "model.safetensors").stat().st_mtime == mtime
    assert json.loads(open(stamp).read()) == before
    # no temporary folders left beside it
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["smollm2-135m-instruct"]
