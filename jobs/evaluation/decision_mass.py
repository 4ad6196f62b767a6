"""How much probability does a model put on the empty think block at t*?

With CoT on, the generation prompt ends at t* (``<think>\\n``). A refusal target opens
with the empty think block (``\\n</think>``): the decision made before any CoT. Under
sampling a refusal holds only when the sampler draws those tokens; otherwise the model
thinks first, and on the demo model a harmful prompt that thinks first is nearly always
answered (docs/alignment_results.md, "Where sampled refusals break").

The probability of drawing them is exact from one forward pass, no sampling:

    P_T = prod_j q_T(c_j | prompt, c_<j)

where c are the tokens of ``"\\n" + think_close`` and q_T is the next-token distribution
the sampler draws from: logits divided by the temperature, cut to the top-p nucleus (the
tokens Hugging Face's top-p warper keeps) and renormalized. Temperature 0 (greedy) gives
1 when every c_j is the argmax, else 0. The mean of 1 - P_T over harmful prompts is the
rate at which sampling opens a think block, the path nearly every sampled attack success
takes; over benign prompts, P_T is the rate of decisions to refuse at once.
"""

from __future__ import annotations

import numpy as np
import torch

from jobs.templates import TemplateConfig, render_prompt


def sampled_probability(logits: torch.Tensor, tokens: torch.Tensor, temperature: float, top_p: float = 1.0,
                        top_k: int = 0) -> torch.Tensor:
    """Probability that a sampler draws `tokens` ([B, m]) at the positions whose logits are
    `logits` ([B, m, V]): the product over positions of the temperature-scaled, top-k and
    top-p truncated, renormalized next-token probability (greedy at temperature 0: 1 when
    every token is the argmax). Returns [B]."""
    if temperature == 0:
        return (logits.argmax(-1) == tokens).all(-1).to(logits.dtype)
    scaled = logits.float() / temperature
    if top_k and top_k < scaled.shape[-1]:
        kth = scaled.topk(top_k, dim=-1).values[..., -1:]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    probs = scaled.softmax(-1)
    if top_p < 1.0:
        # As the top-p warper: drop the least likely tokens whose cumulative mass is at
        # most 1 - top_p, always keeping the most likely one.
        sorted_probs, order = probs.sort(-1)
        drop_sorted = sorted_probs.cumsum(-1) <= 1 - top_p
        drop_sorted[..., -1] = False
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        probs = probs.masked_fill(drop, 0.0)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1).prod(-1)


@torch.no_grad()
def continuation_probability(model, prefixes: list[list[int]], continuation: list[int],
                             decodings: list[tuple], batch_size: int = 16, pad_id: int = 0) -> np.ndarray:
    """[N prefixes, D decodings]: the probability that decoding d ((temperature, top_p) or
    (temperature, top_p, top_k)) continues prefix i with exactly the tokens `continuation`. Right-padded in
    length-sorted batches, so every prefix keeps its own positions."""
    if not continuation:
        raise ValueError("continuation_probability: empty continuation")
    device = next(model.parameters()).device
    m = len(continuation)
    cont = torch.tensor(continuation, dtype=torch.long)
    out = np.zeros((len(prefixes), len(decodings)))
    order = sorted(range(len(prefixes)), key=lambda i: len(prefixes[i]))
    model.eval()
    for start in range(0, len(order), batch_size):
        idx = order[start: start + batch_size]
        seqs = [list(prefixes[i]) + continuation[:-1] for i in idx]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, s in enumerate(seqs):
            ids[row, :len(s)] = torch.tensor(s)
            mask[row, :len(s)] = 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float().cpu()
        # the logits at the prefix's last token predict continuation[0], and so on
        at = torch.stack([torch.arange(len(prefixes[i]) - 1, len(prefixes[i]) - 1 + m) for i in idx])
        picked = logits.gather(1, at.unsqueeze(-1).expand(-1, -1, logits.shape[-1]))  # [B, m, V]
        tokens = cont.expand(len(idx), m)
        for d, (temperature, top_p, *rest) in enumerate(decodings):
            top_k = rest[0] if rest else 0
            out[idx, d] = sampled_probability(picked, tokens, temperature, top_p, top_k).numpy()
    return out


def empty_think_tokens(tokenizer, template: TemplateConfig | None = None) -> list[int]:
    """The tokens that close the think block at once after t*: ``"\\n" + think_close``."""
    cfg = template or TemplateConfig()
    return list(tokenizer("\n" + cfg.think_close, add_special_tokens=False)["input_ids"])


def empty_think_probability(model, tokenizer, prompts: list[str], decodings: list[tuple],
                            template: TemplateConfig | None = None, batch_size: int = 16) -> np.ndarray:
    """[N prompts, D decodings]: P_T of the empty think block right after each prompt's
    CoT-ON generation prompt (see the module docstring)."""
    prefixes = [render_prompt(tokenizer, p, cot=True, cfg=template).input_ids for p in prompts]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return continuation_probability(model, prefixes, empty_think_tokens(tokenizer, template), decodings,
                                    batch_size, pad_id=pad or 0)
