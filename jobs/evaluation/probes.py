"""Decision probes: where in the network is the safety decision decodable before CoT?

For each layer, a logistic-regression probe on the hidden state at t* (the last token of
the CoT-ON generation prompt) predicts the decision label; its cross-validated AUROC per
layer is the diagnostic (base vs aligned model).
"""

from __future__ import annotations

import numpy as np
import torch

from jobs.templates import TemplateConfig, render_prompt


@torch.no_grad()
def pre_cot_features(model, tokenizer, prompts: list[str], template: TemplateConfig | None = None,
                     batch_size: int = 16) -> np.ndarray:
    """Hidden states at t* for every layer: [N prompts, L + 1, H] (index 0 = embeddings).
    Prompts are right-padded in length-sorted batches, so t* needs no shifting."""
    rendered = [render_prompt(tokenizer, p, cot=True, cfg=template) for p in prompts]
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    order = sorted(range(len(rendered)), key=lambda i: len(rendered[i].input_ids))
    out: list[np.ndarray | None] = [None] * len(rendered)
    model.eval()
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        width = max(len(rendered[i].input_ids) for i in idx)
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, i in enumerate(idx):
            n = len(rendered[i].input_ids)
            ids[row, :n] = torch.tensor(rendered[i].input_ids)
            mask[row, :n] = 1
        hs = model(input_ids=ids.to(device), attention_mask=mask.to(device), output_hidden_states=True).hidden_states
        stacked = torch.stack(hs, 1)  # [B, L + 1, T, H]
        for row, i in enumerate(idx):
            out[i] = stacked[row, :, rendered[i].t_star].float().cpu().numpy()
    return np.stack(out)  # type: ignore[arg-type]


def probe_auroc_by_layer(features: np.ndarray, labels: list[int], folds: int = 5, seed: int = 0) -> list[float | None]:
    """Cross-validated AUROC of a logistic probe per layer; None where a fold lacks a class."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.asarray(labels)
    if len(set(y.tolist())) < 2 or min(np.bincount(y)) < folds:
        return [None] * features.shape[1]
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    aurocs: list[float | None] = []
    for layer in range(features.shape[1]):
        x = features[:, layer, :]
        scores = np.zeros(len(y))
        for train, test in cv.split(x, y):
            probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, C=0.1))
            probe.fit(x[train], y[train])
            scores[test] = probe.predict_proba(x[test])[:, 1]
        aurocs.append(float(roc_auc_score(y, scores)))
    return aurocs
