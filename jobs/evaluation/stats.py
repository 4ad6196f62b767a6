"""The statistics every reported rate carries: Wilson intervals, McNemar's test on paired
outcomes, Cohen's kappa between judges.

    rate(5, 64)          # {"rate": 0.078, "k": 5, "n": 64, "lo": 0.034, "hi": 0.170}
    mcnemar(b=3, c=11)   # aligned-only vs ablation-only successes on the same prompts
    cohen_kappa(judge_a_labels, judge_b_labels)
"""

from __future__ import annotations

import math

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
