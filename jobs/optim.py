"""Learning-rate schedule shared by the trainers."""

from __future__ import annotations

import torch


def warmup_linear_decay(optimizer, total_steps: int, warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up from ~0 to the base rate over `warmup_steps`, then linear decay to 0
    at `total_steps` (the usual fine-tuning schedule)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
