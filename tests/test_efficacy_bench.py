"""bench/efficacy.py's goal checks per evaluation set: the issue's over-refusal goal must
hold on plainly benign AND on borderline prompts, so it is not read off their mixture."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from efficacy import per_source  # noqa: E402

from jobs.evaluation.stats import rate  # noqa: E402


def _slice(harmful: int, benign: int, asr=None, refused=None) -> dict:
    out = {"n": {"harmful": harmful, "benign": benign, "reasoning": 0}}
    if asr is not None:
        out["asr"] = rate(asr, harmful)
    if refused is not None:
        out["over_refusal"] = rate(refused, benign)
    return out


def test_each_set_gets_its_own_goal_check():
    base = {"by_source": {"advbench": _slice(32, 0, asr=32), "alpaca": _slice(0, 32, refused=0),
                          "borderline-heldout": _slice(0, 32, refused=1)}}
    aligned = {"by_source": {"advbench": _slice(64, 0, asr=4), "alpaca": _slice(0, 64, refused=2),
                             "borderline-heldout": _slice(0, 64, refused=16)}}
    lambda0 = {"by_source": {"advbench": _slice(64, 0, asr=9)}}
    checks = per_source(base, aligned, lambda0)
    assert checks["advbench"]["metric"] == "asr" and abs(checks["advbench"]["cut"] - (1 - 4 / 64)) < 1e-12
    assert checks["advbench"]["cut_ge_90pct"] and checks["advbench"]["lambda0"]["k"] == 9
    # pooled these two sets rise 14 points; alone, Alpaca meets the goal and the borderline set does not
    assert checks["alpaca"]["within_5pts"] and abs(checks["alpaca"]["increase_pts"] - 100 * 2 / 64) < 1e-9
    assert not checks["borderline-heldout"]["within_5pts"]
    assert abs(checks["borderline-heldout"]["increase_pts"] - 100 * (16 / 64 - 1 / 32)) < 1e-9
    assert checks["borderline-heldout"]["lambda0"] is None  # no slice for it in λ = 0: said, not invented
    # a run without per-source slices (an old evaluation.json) gives no checks rather than failing
    assert per_source({}, aligned, None) == {}
