"""The alignment losses: pure functions of tensors and masks.

    L = L_LM(targets) + lambda * BCE(head(h_l at t*), s)

Shapes: B = batch, T = sequence, H = hidden size, V = vocabulary, N = number of target
tokens in the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100


def shifted_targets(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(positions [B, T] bool, next-token ids [N]): position t predicts labels[t + 1];
    positions whose next label is IGNORE (prompt, padding) are dropped."""
    nxt = torch.full_like(labels, IGNORE)
    nxt[:, :-1] = labels[:, 1:]
    mask = nxt != IGNORE
    return mask, nxt[mask]


def lm_loss(token_logits: torch.Tensor, token_targets: torch.Tensor,
            token_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross-entropy over the N target tokens of the batch (a token-level mean, as
    in SFT); with token_weights [N], the weighted mean sum(w * nll) / sum(w).
    token_logits: [N, V]; token_targets: [N]."""
    if token_targets.numel() == 0:
        return token_logits.sum() * 0.0
    if token_weights is None:
        return F.cross_entropy(token_logits.float(), token_targets)
    nll = F.cross_entropy(token_logits.float(), token_targets, reduction="none")
    return (nll * token_weights).sum() / token_weights.sum().clamp_min(1e-8)


def gather_pre_cot(hidden_states: tuple[torch.Tensor, ...], layers: list[int], t_star: torch.Tensor,
                   pooling: str = "t_star") -> torch.Tensor:
    """The pre-CoT representation per row, [B, H]: the mean over `layers` of the hidden
    state at t* (pooling "t_star"), or of the mean over prompt positions 0..t*
    (pooling "prompt_mean", SafeKey-style span pooling).
    hidden_states: per layer [B, T, H] (index 0 = embeddings, i = after layer i);
    t_star: [B] positions."""
    rows = torch.arange(t_star.shape[0], device=t_star.device)
    if pooling == "t_star":
        picked = [hidden_states[layer][rows, t_star] for layer in layers]  # each [B, H]
    else:
        T = hidden_states[0].shape[1]
        span = (torch.arange(T, device=t_star.device)[None, :] <= t_star[:, None]).unsqueeze(-1)  # [B, T, 1]
        picked = [(hidden_states[layer] * span).sum(1) / span.sum(1) for layer in layers]
    return torch.stack(picked, 0).mean(0)


def pre_cot_positions(hidden_states: tuple[torch.Tensor, ...], layers: list[int], t_star: torch.Tensor,
                      positions: int) -> torch.Tensor:
    """The representation at t* - positions + 1 .. t* per row, [B, positions, H] (the mean
    over `layers`), oldest first; positions before the sequence start repeat position 0."""
    offsets = torch.arange(positions - 1, -1, -1, device=t_star.device)  # [P]: P-1 .. 0
    idx = (t_star[:, None] - offsets[None, :]).clamp_min(0)  # [B, P]
    rows = torch.arange(t_star.shape[0], device=t_star.device)[:, None]  # [B, 1]
    return torch.stack([hidden_states[layer][rows, idx] for layer in layers], 0).mean(0)


def decision_loss(head_logits: torch.Tensor, signal: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy between head logits [B] (or [B, P]: one per pre-CoT
    position, all with the row's signal) and decision signals [B] in [0, 1] (soft
    p_refuse or hard 0/1)."""
    if head_logits.dim() == 2:
        signal = signal[:, None].expand_as(head_logits)
    return F.binary_cross_entropy_with_logits(head_logits.float(), signal.float())


def total_loss(lm: torch.Tensor, aux: torch.Tensor | None, weight: float) -> torch.Tensor:
    """lm + weight * aux. weight 0 (or no aux) is exactly the plain SFT loss."""
    if weight == 0 or aux is None:
        return lm
    return lm + weight * aux
