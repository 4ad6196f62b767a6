"""Binary decision metrics (label 1 = refuse) and the decision-threshold choice."""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import roc_auc_score


def binary_metrics(p_refuse, labels, threshold=0.5) -> dict:
    """accuracy, precision/recall/F1 of "refuse", AUROC (None if one class only), the
    confusion matrix [[TN, FP], [FN, TP]] (rows = true comply/refuse) and the count.
    `threshold` is one number or one per row."""
    p = np.asarray(p_refuse, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if len(y) == 0:
        return {"n": 0}
    pred = (p >= threshold).astype(np.int64)
    tp = int(((pred == 1) & (y == 1)).sum())
    tn = int(((pred == 0) & (y == 0)).sum())
    fp = int(((pred == 1) & (y == 0)).sum())
    fn = int(((pred == 0) & (y == 1)).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    auroc = float(roc_auc_score(y, p)) if len(set(y.tolist())) == 2 else None
    return {
        "n": int(len(y)),
        "accuracy": (tp + tn) / len(y),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "auroc": auroc,
        "confusion": [[tn, fp], [fn, tp]],
        **({"threshold": float(threshold)} if np.ndim(threshold) == 0 else {}),
    }


def grouped_metrics(p_refuse, labels, is_pair, pair_threshold: float = 0.5, prompt_threshold: float | None = None) -> dict:
    """Metrics over all rows, over (prompt, response) pairs, and over prompt-only rows,
    each kind at its own threshold (prompt_threshold defaults to pair_threshold)."""
    p, y, pair = np.asarray(p_refuse), np.asarray(labels), np.asarray(is_pair, dtype=bool)
    prompt_threshold = pair_threshold if prompt_threshold is None else prompt_threshold
    return {
        "all": binary_metrics(p, y, np.where(pair, pair_threshold, prompt_threshold)),
        "pairs": binary_metrics(p[pair], y[pair], pair_threshold),
        "prompt_only": binary_metrics(p[~pair], y[~pair], prompt_threshold),
    }


def choose_threshold(p_refuse, labels, metric: str = "accuracy", smoothing: float = 0.0, min_rows: int = 0) -> float:
    """The threshold in (0, 1) that maximises `metric` (accuracy or f1) on these rows;
    among ties the one closest to 0.5, so a flat optimum does not drift to an edge.
    Fewer than `min_rows` rows (or one class only) give 0.5: a threshold fitted to a
    handful of rows is noise (18 prompt-only validation rows once put it at 0.85, and a
    pipe-bomb request at p_refuse 0.78 was called "comply").

    smoothing > 0 maximises the metric's expectation when every row's logit moves by
    Gaussian noise of that standard deviation instead: a threshold in the middle of a wide
    gap between the classes then beats one squeezed past a single row. On a small
    validation set whose accuracy is already near 1, the exact optimum is set by one or two
    rows and lands near 0 or 1; the smoothed one moves only for evidence that several rows
    give, and so transfers better to answers of a model the classifier never saw."""
    p = np.asarray(p_refuse, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if len(p) == 0 or len(p) < min_rows or len(set(y.tolist())) < 2:
        return 0.5
    if smoothing > 0:
        return _smoothed_threshold(p, y, metric, smoothing)
    values = np.unique(p)
    candidates = np.concatenate([[0.5], (values[:-1] + values[1:]) / 2]) if len(values) > 1 else np.array([0.5])
    best, best_t = -math.inf, 0.5
    for t in candidates:
        score = binary_metrics(p, y, float(t))[metric]
        if score > best + 1e-12 or (abs(score - best) <= 1e-12 and abs(t - 0.5) < abs(best_t - 0.5)):
            best, best_t = score, float(t)
    return best_t


def _smoothed_threshold(p: np.ndarray, y: np.ndarray, metric: str, sd: float) -> float:
    from scipy.special import expit, logit, ndtr  # ndtr: the standard normal CDF

    z = logit(np.clip(p, 1e-7, 1 - 1e-7))
    grid = np.linspace(-8.0, 8.0, 641)  # logit(t), steps of 0.025
    pos, neg = (y == 1).astype(np.float64), (y == 0).astype(np.float64)
    tp, fp = np.zeros(len(grid)), np.zeros(len(grid))
    for start in range(0, len(z), 4096):  # bounded memory: 641 x 4096 at a time
        above = ndtr((z[None, start:start + 4096] - grid[:, None]) / sd)  # P(judged refuse) per threshold
        tp += above @ pos[start:start + 4096]
        fp += above @ neg[start:start + 4096]
    fn, tn = pos.sum() - tp, neg.sum() - fp
    score = (tp + tn) / len(y) if metric == "accuracy" else 2 * tp / np.maximum(2 * tp + fp + fn, 1e-12)
    best = np.flatnonzero(score >= score.max() - 1e-12)
    z_t = grid[best[np.argmin(np.abs(grid[best]))]]
    return float(expit(z_t))
