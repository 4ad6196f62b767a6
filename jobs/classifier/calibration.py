"""Calibrated p_refuse: temperature scaling per row kind, ECE, and the reliability plot.

p_refuse is a number people read ("0.9: refuse"), so after training one temperature per
kind of row (pairs, prompt-only) is fitted on the validation split: p = sigmoid(z / T),
z = logit_refuse - logit_comply, with the scalar T that minimises the NLL (Guo et al.,
2017). T > 1 softens an over-confident model. Scaling by T never reorders rows, so a
threshold t maps to sigmoid(logit(t) / T) and every decision stays what it was.

    T = fit_temperature(z, labels)
    expected_calibration_error(p_refuse, labels)     # 15 equal-width bins of p_refuse
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

KINDS = ("pairs", "prompt_only")
ECE_BINS = 15


def nll(z, labels, temperature: float) -> float:
    """Mean negative log-likelihood of the labels (1 = refuse) under sigmoid(z / T)."""
    z = np.asarray(z, dtype=np.float64) / temperature
    y = np.asarray(labels, dtype=np.float64)
    # log(1 + e^-|z|) form: stable for |z| in the hundreds
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def fit_temperature(z, labels, lo: float = 0.05, hi: float = 20.0) -> float:
    """The T in [lo, hi] minimising nll(z, labels, T): a grid over log T, then golden-section
    search around the best point (the NLL is unimodal in log T for a fixed z). 1.0 when the
    rows hold one class only (then any T > hi "wins" and means nothing)."""
    z, y = np.asarray(z, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    if len(z) == 0 or len(set(y.tolist())) < 2:
        return 1.0
    grid = np.linspace(math.log(lo), math.log(hi), 61)
    losses = [nll(z, y, math.exp(g)) for g in grid]
    i = int(np.argmin(losses))
    a, b = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(40):
        c, d = b - ratio * (b - a), a + ratio * (b - a)
        if nll(z, y, math.exp(c)) <= nll(z, y, math.exp(d)):
            b = d
        else:
            a = c
    return float(math.exp((a + b) / 2))


def reliability(p_refuse, labels, bins: int = ECE_BINS) -> list[dict]:
    """Per equal-width bin of p_refuse over [0, 1]: rows, mean p_refuse, fraction refused
    (empty bins left out)."""
    p, y = np.asarray(p_refuse, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    which = np.minimum((p * bins).astype(np.int64), bins - 1)  # p = 1.0 falls in the last bin
    return [{"bin": b, "n": int((which == b).sum()), "mean_p": float(p[which == b].mean()),
             "frac_refuse": float(y[which == b].mean())} for b in range(bins) if (which == b).any()]


def expected_calibration_error(p_refuse, labels, bins: int = ECE_BINS) -> float | None:
    """sum over bins of (rows in bin / rows) * |mean p_refuse - fraction refused|; None
    for no rows."""
    n = len(p_refuse)
    if n == 0:
        return None
    return float(sum(r["n"] / n * abs(r["mean_p"] - r["frac_refuse"]) for r in reliability(p_refuse, labels, bins)))


def sigmoid(z, temperature: float = 1.0) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64) / temperature))


def calibrate_kinds(z, labels, is_pair, min_rows: int = 0) -> dict:
    """{kind: {temperature, ece_before, ece_after, n}} for pairs and prompt-only rows; a kind
    with fewer than `min_rows` rows or one class keeps T = 1."""
    z, y, pair = np.asarray(z, dtype=np.float64), np.asarray(labels), np.asarray(is_pair, dtype=bool)
    out = {}
    for kind, mask in (("pairs", pair), ("prompt_only", ~pair)):
        zk, yk = z[mask], y[mask]
        t = fit_temperature(zk, yk) if len(zk) >= min_rows else 1.0
        out[kind] = {"temperature": t, "n": int(mask.sum()),
                     "ece_before": expected_calibration_error(sigmoid(zk), yk),
                     "ece_after": expected_calibration_error(sigmoid(zk, t), yk)}
    return out


def map_threshold(threshold: float, temperature: float) -> float:
    """The calibrated threshold that makes the same decisions: sigmoid(logit(t) / T)."""
    t = min(max(threshold, 1e-12), 1 - 1e-12)
    return float(sigmoid(math.log(t / (1 - t)), temperature))


def reliability_plot(curves: dict[str, tuple], path: str | Path, title: str = "reliability of p_refuse") -> Path:
    """A PNG: fraction refused against mean p_refuse per bin, one line per named curve
    (name -> (p_refuse, labels)), the diagonal for perfect calibration, ECE in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    for name, (p, y) in curves.items():
        if len(p) == 0:
            continue
        bins = reliability(p, y)
        ax.plot([b["mean_p"] for b in bins], [b["frac_refuse"] for b in bins], marker="o", markersize=3,
                label=f"{name} (n={len(p)}, ECE {expected_calibration_error(p, y):.3f})")
    ax.set_xlabel("mean p_refuse in bin")
    ax.set_ylabel("fraction refused")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper left")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path
