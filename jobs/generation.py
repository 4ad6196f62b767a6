"""Batched text generation behind a small interface (Hugging Face `generate` now; vLLM
or another engine can implement the same `generate`).

Batches are length-sorted and left-padded (decoder-only models continue from the right
edge); generation stops at the chat end token (the tokenizer's eos) as well as at the
model's own eos ids.
"""

from __future__ import annotations

from dataclasses import dataclass
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
