"""The memory plan (jobs/memory.py) and `presafe preflight` (jobs/preflight.py): arithmetic
against hand-computed values, the shipped GPU configs against their declared budgets
(architectures from their published hyperparameters, built on the meta device: no
download), and the command on tiny models."""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

import pytest
from transformers import AutoConfig, LlamaConfig, Qwen2Config, Qwen3Config

from clients.cli import main
from jobs.config import load_config
from jobs.errors import ConfigError
from jobs.memory import (
    GB,
    check_memory,
    generation_parts,
    kv_bytes_per_token,
    largest_batch,
    max_new_tokens_for,
    plan_memory,
    shape_from_config,
    training_parts,
)
from jobs.pipeline_config import PipelineConfig

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "jobs" / "configs" / "smoke.yaml")
GPU_CONFIGS = sorted((ROOT / "jobs" / "configs" / "gpu").glob("*.yaml"))
ALL_PROJ = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# The published config.json numbers of the GPU configs' models (only what shapes memory).
KNOWN = {
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B": (Qwen2Config, dict(
        vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
        num_attention_heads=28, num_key_value_heads=4)),
    "deepseek-ai/DeepSeek-R1-Distill-Llama-8B": (LlamaConfig, dict(
        vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8)),
    "Qwen/Qwen3-8B": (Qwen3Config, dict(
        vocab_size=151936, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
        num_attention_heads=32, num_key_value_heads=8, head_dim=128)),
}
_shapes: dict = {}


def known_shape(name: str):
    """The ModelShape of a GPU config's model from its architecture numbers (meta device)."""
    if name not in _shapes:
        cls, numbers = KNOWN[name]
        _shapes[name] = shape_from_config(cls(tie_word_embeddings=False, **numbers), name)
    return _shapes[name]


def llama_8b_folder(tmp: Path, tokenizer_from: str) -> str:
    """A model folder with Llama-3.1-8B's architecture, a tiny tokenizer and an empty weights
    file: preflight reads config.json and the tokenizer, never the weights."""
    cls, numbers = KNOWN["deepseek-ai/DeepSeek-R1-Distill-Llama-8B"]
    cls(tie_word_embeddings=False, **numbers).save_pretrained(tmp)
    for f in Path(tokenizer_from).iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "chat_template")):
            shutil.copy(f, tmp / f.name)
    (tmp / "model.safetensors").touch()
    return str(tmp)


def test_kv_bytes_params_and_lora_match_hand_computed_llama_8b():
    s = known_shape("deepseek-ai/DeepSeek-R1-Distill-Llama-8B")
    # Per layer: q, o 4096x4096; k, v 4096x1024 (8 KV heads x 128); gate, up, down 4096x14336; 2 norms.
    layer = 2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336 + 2 * 4096
    assert s.layer_params == layer == 218_112_000
    # + untied embeddings and output layer (128256 x 4096 each) + the final norm.
    assert s.params == 32 * layer + 2 * 128256 * 4096 + 4096 == 8_030_261_248
    # K and V x 32 layers x 8 KV heads x head_dim 128 x 2 bytes (bf16): GQA, not 32 heads.
    assert kv_bytes_per_token(s, 2) == 2 * 32 * 8 * 128 * 2 == 131_072
    # LoRA r=16 on all projections: r x (in + out) per module, summed: ~42 M, as the README says.
    per_layer = 2 * (4096 + 4096) + 2 * (4096 + 1024) + 3 * (4096 + 14336)
    assert s.lora_params(16, ALL_PROJ) == 16 * 32 * per_layer == 41_943_040


def test_kv_bytes_use_head_dim_attribute_when_it_differs_from_hidden_over_heads():
    # Qwen3 declares head_dim; here 32, not hidden/heads = 16.
    cfg = Qwen3Config(vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=32)
    s = shape_from_config(cfg)
    assert (s.kv_heads, s.head_dim) == (2, 32)
    assert kv_bytes_per_token(s, 4) == 2 * 3 * 2 * 32 * 4
    # A config without head_dim falls back to hidden / heads; without KV heads, to heads (MHA).
    s = shape_from_config(LlamaConfig(vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4))
    assert (s.kv_heads, s.head_dim) == (4, 16)


def test_training_estimate_agrees_with_the_readme_table():
    # README "GPU configs": ~12-13 GB per GPU for ZeRO-3 x 4, micro-batch 1 x 4096, checkpointing.
    for name, (readme_weights, lo, hi) in {"deepseek-ai/DeepSeek-R1-Distill-Qwen-7B": (15.2, 11, 14),
                                           "deepseek-ai/DeepSeek-R1-Distill-Llama-8B": (16.1, 11, 14),
                                           "Qwen/Qwen3-8B": (16.4, 12, 14)}.items():
        s = known_shape(name)
        assert s.params * 2 / GB == pytest.approx(readme_weights, abs=0.05)
        parts = training_parts(s, 2, 16, ALL_PROJ, 1, 4096, 4, 3, True, 1.5)
        assert parts["weights"] == s.params * 2 / 4
        assert parts["logits"] == 4096 * s.vocab * 4
        assert lo < sum(parts.values()) / GB < hi, name
        # Without checkpointing every layer's activations stay: the estimate must grow a lot.
        assert sum(training_parts(s, 2, 16, ALL_PROJ, 1, 4096, 4, 3, False, 1.5).values()) > 2 * sum(parts.values())


def test_auto_batch_picks_the_largest_batch_that_fits():
    s = known_shape("deepseek-ai/DeepSeek-R1-Distill-Llama-8B")
    cfg = load_config(PipelineConfig, SMOKE, ["model=deepseek-ai/DeepSeek-R1-Distill-Llama-8B", "dtype=bfloat16",
                                              "resources.gpu_memory_gb=24", "decide.generation.batch_size=0",
                                              "decide.generation.max_new_tokens=1024", "evaluate.batch_size=1"])
    rows = check_memory(cfg, known_shape)
    b = cfg.decide.generation.batch_size
    assert rows[0].auto and rows[0].batch == b
    total = lambda n: sum(generation_parts(s, 2, n, 512, 1024, 1.5).values())  # noqa: E731
    assert total(b) <= 24 * GB < total(b + 1)
    assert b == largest_batch(s, 2, 512, 1024, 24 * GB, 1.5) > 1
    # Auto needs a declared GPU: refused naming both keys.
    cfg = load_config(PipelineConfig, SMOKE, ["decide.generation.batch_size=0"])
    with pytest.raises(ConfigError, match=r"decide\.generation\.batch_size=0 \(auto\).*resources\.gpu_memory_gb"):
        check_memory(cfg, known_shape_tiny)


def known_shape_tiny(name: str):
    return shape_from_config(LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2), name)


def test_per_set_max_new_tokens_and_auto_batches(tmp_path):
    path = tmp_path / "c.yaml"
    text = Path(SMOKE).read_text().replace("  max_new_tokens: 12\n  batch_size: 16\n", "  max_new_tokens: 12\n"
                                           "  max_new_tokens_by_set: {harmful: 1024, benign: 1024, reasoning: 8192}\n")
    assert "max_new_tokens_by_set" in text
    path.write_text(text)
    cfg = load_config(PipelineConfig, path)
    e = cfg.evaluate
    assert [max_new_tokens_for(e, k) for k in ("harmful", "benign", "reasoning")] == [1024, 1024, 8192]
    cfg = load_config(PipelineConfig, SMOKE, ["evaluate.max_new_tokens_by_set.harmful=1024"])
    assert (max_new_tokens_for(cfg.evaluate, "harmful"), max_new_tokens_for(cfg.evaluate, "reasoning")) == (1024, 12)
    with pytest.raises(ConfigError, match=r"evaluate\.max_new_tokens_by_set\.benign: must be >= 1"):
        load_config(PipelineConfig, SMOKE, ["evaluate.max_new_tokens_by_set.benign=0"])
    # Short refusals get a bigger auto batch than MATH-500's long chains of thought.
    cfg = load_config(PipelineConfig, SMOKE, [
        "model=Qwen/Qwen3-8B", "dtype=bfloat16", "resources.gpu_memory_gb=24", "evaluate.max_new_tokens=8192",
        "evaluate.max_new_tokens_by_set.harmful=1024", "evaluate.batch_size_by_set.harmful=0",
        "evaluate.batch_size_by_set.reasoning=0", "evaluate.batch_size=2"])
    rows = {r.stage: r for r in check_memory(cfg, known_shape)}
    assert rows["evaluate (harmful)"].new_tokens == 1024 and rows["evaluate (reasoning)"].new_tokens == 8192
    assert cfg.evaluate.batch_size_by_set.harmful > 4 * cfg.evaluate.batch_size_by_set.reasoning >= 4
    assert rows["evaluate (benign)"].batch == 2  # unset: evaluate.batch_size


@pytest.mark.parametrize("path", GPU_CONFIGS, ids=lambda p: p.stem)
def test_gpu_configs_fit_their_declared_budget_and_the_24gb_line(path):
    cfg = load_config(PipelineConfig, path)
    assert cfg.resources.gpu_memory_gb == 80
    rows = check_memory(cfg, known_shape)
    assert all(r.budget == 80 * GB and r.total <= r.budget for r in rows)
    # As shipped (vLLM), a 24 GB card fits: vLLM sizes its KV cache to the card...
    assert cfg.generation.engine == "vllm"
    rows = check_memory(load_config(PipelineConfig, path, ["resources.gpu_memory_gb=24"]), known_shape)
    assert all(r.total <= 24 * GB for r in rows)
    # ...the hf engine's generation batches do not...
    with pytest.raises(ConfigError, match="resources.gpu_memory_gb=24"):
        check_memory(load_config(PipelineConfig, path, ["generation.engine=hf", "resources.gpu_memory_gb=24"]),
                     known_shape)
    # ...unless the header's 24 GB override line shrinks them.
    line = next(x for x in path.read_text().splitlines() if x.startswith("#   presafe run") and "=24" in x)
    overrides = shlex.split(line.lstrip("# "))[3:]
    cfg = load_config(PipelineConfig, path, overrides)
    rows = check_memory(cfg, known_shape)
    assert all(r.total <= 24 * GB for r in rows)
    assert cfg.decide.generation.batch_size >= 1 and cfg.targets.self_generation.batch_size >= 1
    # evaluate.batch_size in the line is the largest that fits (the comment says so).
    ev = next(r for r in rows if r.stage.startswith("evaluate"))
    assert ev.batch == ev.largest


def test_preflight_passes_on_the_smoke_config(capsys):
    assert main(["preflight", "--config", SMOKE]) == 0
    out = capsys.readouterr().out
    assert "embedded:tiny-random-lm" in out and "family generic" in out
    assert "t* = " in out and "<think> in the CoT-ON prompt: 1" in out
    for stage in ("decide", "targets (self-generation)", "evaluate (harmful)", "evaluate (reasoning)",
                  "align (per worker)"):
        assert stage in out
    assert "preflight: ok" in out


@pytest.mark.parametrize("family,opens", [("qwen3", 0), ("r1", 1)])
def test_preflight_checks_t_star_on_thinking_families(tiny_lm_factory, capsys, family, opens):
    folder = tiny_lm_factory(family)
    assert main(["preflight", "--config", SMOKE, f"model={folder}"]) == 0
    out = capsys.readouterr().out
    assert f"family {family}" in out and f"<think> in the CoT-ON prompt: {opens}" in out
    if family == "r1":
        assert "it ends '" in out and "<think>\\n'" in out


def test_preflight_refuses_a_template_without_a_thinking_switch(tiny_lm, capsys):
    # qwen3 forced on a model whose template ignores enable_thinking: CoT off == CoT on.
    assert main(["preflight", "--config", SMOKE, f"model={tiny_lm}", "template.family=qwen3"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "template.family" in err and "closed think block" in err


def test_preflight_fails_naming_the_keys_when_an_8b_model_overflows_24gb(tmp_path, tiny_lm_factory, capsys):
    folder = llama_8b_folder(tmp_path, tiny_lm_factory("r1"))
    assert AutoConfig.from_pretrained(folder).num_hidden_layers == 32
    common = ["--config", SMOKE, f"model={folder}", "dtype=bfloat16", "resources.gpu_memory_gb=24"]
    assert main(["preflight", *common, "evaluate.max_new_tokens=8192", "evaluate.batch_size=32"]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("presafe: error: ")
    for key in ("evaluate (harmful)", "evaluate.batch_size=32", "evaluate.max_new_tokens", "resources.gpu_memory_gb=24",
                "131072 bytes/token", "the largest batch that fits is 5"):
        assert key in err, key
    assert "NO" in captured.out  # the table is printed before the verdict
    assert main(["preflight", *common, "decide.generation.batch_size=64", "decide.generation.max_new_tokens=4096"]) == 2
    err = capsys.readouterr().err
    assert "decide.generation.batch_size=64" in err and "decide.generation.max_new_tokens" in err
    # The same model fits with a batch that does.
    assert main(["preflight", *common, "evaluate.max_new_tokens=8192", "evaluate.batch_size=5"]) == 0


def test_preflight_on_an_unreachable_hub_id_exits_2_with_one_line(capsys):
    assert main(["preflight", "--config", SMOKE, "model=no-such-org/no-such-model-xyz"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "model: 'no-such-org/no-such-model-xyz': cannot reach the hub" in err and "not in the local cache" in err


def test_plan_without_a_budget_checks_nothing():
    cfg = load_config(PipelineConfig, SMOKE, ["evaluate.batch_size=100000"])
    rows = plan_memory(cfg, known_shape_tiny)
    assert all(r.budget is None and r.problem is None for r in rows)


def test_generation_refuses_an_unresolved_auto_batch(tiny_lm):
    from jobs.generation import GenerationConfig, HFEngine

    with pytest.raises(ConfigError, match="auto"):
        HFEngine(tiny_lm).generate(["hi"], GenerationConfig(batch_size=0, max_new_tokens=2))
