"""The statistics every reported rate carries: Wilson intervals, McNemar's test on paired
outcomes, Cohen's kappa between judges.

    rate(5, 64)          # {"rate": 0.078, "k": 5, "n": 64, "lo": 0.034, "hi": 0.170}
    mcnemar(b=3, c=11)   # aligned-only vs ablation-only successes on the same prompts
    cohen_kappa(judge_a_labels, judge_b_labels)
    trade_off(harmful_scores, benign_scores, (0.95,))  # AUROC, recall at a benign pass rate
"""

from __future__ import annotations

import math

import numpy as np

Z95 = 1.959963984540054


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials (95% by default). It stays inside
    [0, 1] and is not degenerate at k = 0 or k = n, unlike the normal approximation:
    0/64 -> [0, 0.057]."""
    if n <= 0:
        raise ValueError("wilson: n must be > 0")
    if not 0 <= k <= n:
        raise ValueError(f"wilson: k must be in [0, n], got k={k}, n={n}")
    p = k / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, center - half), min(1.0, center + half)


def rate(k: int, n: int) -> dict:
    """A rate with its n and 95% Wilson interval; rate/lo/hi are None when n = 0."""
    if n == 0:
        return {"rate": None, "k": 0, "n": 0, "lo": None, "hi": None}
    lo, hi = wilson(k, n)
    return {"rate": k / n, "k": k, "n": n, "lo": lo, "hi": hi}


def pooled(rates: list[dict]) -> dict:
    """Counts summed over seeds (samples treated as independent), with its interval."""
    return rate(sum(r["k"] for r in rates), sum(r["n"] for r in rates))


def mcnemar(b: int, c: int) -> dict:
    """Exact two-sided McNemar test on the discordant pairs of a paired comparison: b =
    pairs where only the first model succeeded, c = only the second. Exact (binomial with
    p = 1/2) because b + c is small at the sizes evaluated here, where the chi-square
    approximation is unreliable."""
    from scipy.stats import binomtest

    n = b + c
    p = 1.0 if n == 0 else float(binomtest(min(b, c), n, 0.5, alternative="two-sided").pvalue)
    return {"b": b, "c": c, "discordant": n, "p_value": min(1.0, p), "test": "exact McNemar (binomial, two-sided)"}


def cohen_kappa(a: list, b: list) -> float | None:
    """Cohen's kappa between two label lists of equal length (None when empty, or when
    both judges give one label everywhere, where chance agreement is 1 and kappa is
    undefined)."""
    if len(a) != len(b):
        raise ValueError(f"cohen_kappa: {len(a)} vs {len(b)} labels")
    n = len(a)
    if n == 0:
        return None
    observed = sum(x == y for x, y in zip(a, b)) / n
    labels = set(a) | set(b)
    expected = sum((a.count(lab) / n) * (b.count(lab) / n) for lab in labels)
    if expected >= 1.0:
        return None
    return (observed - expected) / (1 - expected)


def trade_off(harmful_p: list[float], benign_p: list[float], passes: tuple[float, ...]) -> dict:
    """How well a refusal score (a guard's p_refuse, a model's probability of the empty think
    block) separates held-out harmful from held-out benign prompts, free of the threshold:
    the AUROC, and the harmful recall at the lowest thresholds that let at least a given
    share of the benign prompts through. Those thresholds are chosen on the test prompts,
    so the recalls are an upper bound on what any threshold could do, not a deployable
    number: when even they miss a goal, no threshold meets it and the scores themselves
    must improve."""
    if not harmful_p or not benign_p:
        return {"auroc": None, "n_harmful": len(harmful_p), "n_benign": len(benign_p), "recall_at_pass": {}}
    h, b = np.asarray(harmful_p), np.sort(np.asarray(benign_p))
    # Mann-Whitney U: P(harmful score > benign score), ties counted half
    greater = np.searchsorted(b, h, side="left").sum()
    ties = (np.searchsorted(b, h, side="right") - np.searchsorted(b, h, side="left")).sum()
    auroc = float((greater + 0.5 * ties) / (len(h) * len(b)))
    at = {}
    for q in passes:
        # the smallest threshold that passes at least q of the benign prompts (refuse: p >= t)
        i = min(len(b) - 1, max(0, int(np.ceil(q * len(b))) - 1))
        t = float(np.nextafter(b[i], np.inf))
        at[f"{q:g}"] = {"threshold": t, "benign_pass": float((b < t).mean()), **rate(int((h >= t).sum()), len(h))}
    return {"auroc": auroc, "n_harmful": len(h), "n_benign": len(b), "recall_at_pass": at}
