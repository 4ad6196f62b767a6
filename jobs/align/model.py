"""The LRM with LoRA adapters and the pre-CoT decision head, in one module so DeepSpeed
wraps (and ZeRO-3 partitions) them together.

`PreCoTModel.forward` is the method's loss step: decoder forward, LM loss on target tokens
only (the vocabulary projection runs on those rows alone), the head on the hidden state
at t*, and L = L_LM + lambda * BCE.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from jobs.align.losses import (
    decision_loss,
    gather_pre_cot,
    lm_loss,
    pre_cot_positions,
    shifted_targets,
    total_loss,
)
from jobs.errors import ConfigError
from jobs.pipeline_config import AlignConfig, LoraSettings

HEAD = "head.safetensors"
LEGACY_HEAD = "head.pt"
"""Adapters published before the head moved to safetensors hold a torch pickle instead."""


def model_shape(name_or_path: str) -> tuple[int, set[str]]:
    """(number of decoder layers, names of the model's Linear modules) without loading
    weights: the architecture is built on the meta device."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from jobs.models.embedded import architecture_source

    config = AutoConfig.from_pretrained(architecture_source(name_or_path))
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    linear = {name.rsplit(".", 1)[-1] for name, m in skeleton.named_modules() if isinstance(m, nn.Linear)}
    return config.num_hidden_layers, linear


def check_against_model(align: AlignConfig, name_or_path: str, key: str = "align") -> list[int]:
    """Fail before any work when LoRA targets or aux layers do not fit the model; returns
    the resolved hidden-state layer indices (1..L)."""
    n_layers, linear = model_shape(name_or_path)
    unknown = [m for m in align.lora.target_modules if m not in linear]
    if unknown:
        raise ConfigError(f"{key}.lora.target_modules: {unknown} not in the model; its linear modules are {sorted(linear)}")
    return resolve_layers(align.aux.layers, n_layers, key)


def resolve_layers(layers: list[int], n_layers: int, key: str = "align") -> list[int]:
    if not layers:
        return [max(1, round(0.75 * n_layers))]
    out = []
    for layer in layers:
        idx = layer if layer > 0 else n_layers + 1 + layer
        if not 1 <= idx <= n_layers:
            raise ConfigError(f"{key}.aux.layers: layer {layer} is out of range for a {n_layers}-layer model "
                              f"(use 1..{n_layers} or -1..-{n_layers})")
        out.append(idx)
    return out


def add_lora(model, lora: LoraSettings):
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                     target_modules=list(lora.target_modules), task_type="CAUSAL_LM", bias="none")
    return get_peft_model(model, cfg)


class PreCoTModel(nn.Module):
    """LoRA-adapted causal LM + a linear head (hidden -> 1) on the pre-CoT hidden state."""

    def __init__(self, lm, layers: list[int], aux_weight: float, detach: bool = False, pooling: str = "t_star",
                 head: str = "normalized", positions: int = 1):
        super().__init__()
        self.lm = lm
        hidden = lm.get_base_model().config.hidden_size
        self.head = nn.Linear(hidden, 1)
        self.normalize = head == "normalized"
        if self.normalize:  # logit 0 at the start: no gradient into the LM before the head has a direction
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)
        self.layers = layers
        self.aux_weight = aux_weight
        self.detach = detach
        self.pooling = pooling
        self.positions = positions

    def head_logits(self, h: torch.Tensor) -> torch.Tensor:
        """[..., H] pooled hidden states -> [...] decision logits."""
        h = h.to(self.head.weight.dtype)
        if self.normalize:
            h = F.layer_norm(h, h.shape[-1:])
        return self.head(h).squeeze(-1)

    def forward(self, input_ids, attention_mask, labels, t_star, signal, label_weights=None,
                label_temperatures=None) -> dict[str, torch.Tensor]:
        """input_ids/attention_mask/labels: [B, T]; t_star: [B]; signal: [B] in [0, 1];
        label_weights: [B, T] per-label LM-loss weights (None = all 1);
        label_temperatures: [B, T] per-label divisors of the logits in the LM loss (None = 1).
        Returns loss, lm_loss, aux_loss (detached copies for logging) and head_logits [B]
        (at t*; with positions > 1 the aux loss also reads the positions before it)."""
        base = self.lm.get_base_model()
        out = base.get_decoder()(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True,
                                 use_cache=False)
        positions, targets = shifted_targets(labels)
        # Project only the target positions onto the vocabulary: prompt tokens carry no
        # LM loss, so their [V]-wide logits would be wasted work and memory.
        token_logits = base.get_output_embeddings()(out.last_hidden_state[positions])  # [N, V]
        weights = None if label_weights is None else _at_positions(label_weights, positions)
        if label_temperatures is not None:
            token_logits = token_logits / _at_positions(label_temperatures, positions).unsqueeze(-1).to(token_logits.dtype)
        lm = lm_loss(token_logits, targets, weights)
        if self.positions > 1:
            h = pre_cot_positions(out.hidden_states, self.layers, t_star, self.positions)  # [B, P, H]
        else:
            h = gather_pre_cot(out.hidden_states, self.layers, t_star, self.pooling)  # [B, H]
        if self.detach:
            h = h.detach()
        logits = self.head_logits(h)  # [B] or [B, P]
        aux = decision_loss(logits, signal)
        loss = total_loss(lm, aux, self.aux_weight)
        head_logits = logits[:, -1] if logits.dim() == 2 else logits  # t*
        return {"loss": loss, "lm_loss": lm.detach(), "aux_loss": aux.detach(), "head_logits": head_logits.detach()}


def _at_positions(per_label: torch.Tensor, positions) -> torch.Tensor:
    """[B, T] per-label values -> [N] at the predicting positions: label t + 1 is predicted
    at position t (the last position predicts nothing and gets 1)."""
    shifted = torch.ones_like(per_label)
    shifted[:, :-1] = per_label[:, 1:]
    return shifted[positions]


def save_head(state: dict[str, torch.Tensor], folder, layers: list[int], pooling: str,
              head: str = "normalized") -> None:
    """The decision head (weight [1, H], bias [1]) as safetensors, not a pickle: loading it
    runs no code. The metadata says what it reads (layers 1..L, pooling at t*, and whether
    the features are layer-normalized first: `head` normalized | raw)."""
    from pathlib import Path

    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(Path(folder) / HEAD),
              metadata={"format": "pt", "presafe": "pre-cot decision head", "aux_layers": ",".join(map(str, layers)),
                        "pooling": pooling, "features": "layer_norm" if head == "normalized" else "raw"})


def load_head(folder) -> dict[str, torch.Tensor]:
    """The decision head's state dict from an adapter folder: head.safetensors, else the
    head.pt of older adapters (loaded with weights_only, so no pickled code runs)."""
    from pathlib import Path

    from safetensors.torch import load_file

    folder = Path(folder)
    if (folder / HEAD).is_file():
        return load_file(str(folder / HEAD))
    if (folder / LEGACY_HEAD).is_file():
        return torch.load(folder / LEGACY_HEAD, map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{folder}: no {HEAD} (or {LEGACY_HEAD}): not a presafe adapter folder")
