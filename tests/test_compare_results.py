"""Unpaired comparison of two efficacy results (bench/compare_results.py): the fallback
when the reference's job folder is gone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "compare_results.py"


def _result(path: Path, asr_k: int, seeds=(0, 1), n: int = 128, per_seed_k=None) -> Path:
    rate = {"rate": asr_k / n, "k": asr_k, "n": n, "lo": 0.0, "hi": 1.0}
    if per_seed_k is not None:
        rate["per_seed"] = [k / (n // len(seeds)) for k in per_seed_k]
    accuracy = {"rate": 0.5, "k": 16 * len(seeds), "n": 32 * len(seeds), "lo": 0.4, "hi": 0.6}
    if per_seed_k is not None:
        accuracy["per_seed"] = [0.5] * len(seeds)
    path.write_text(json.dumps({
        "seeds": list(seeds), "sets": {"harmful": 64}, "headline": "string_match",
        "groups": {"aligned": {"runs": {"cot_on/t1.0": {
            "accuracy": accuracy,
            "judges": {"string_match": {"asr": rate, "over_refusal": {**rate, "k": 0, "rate": 0.0}}}}}}}}))
    return path


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True, timeout=120)


def test_fisher_exact_per_cell_and_refuses_results_that_do_not_compare(tmp_path):
    from scipy.stats import fisher_exact

    a, b = _result(tmp_path / "a.json", 46), _result(tmp_path / "b.json", 20)
    out = _run(str(a), str(b), "--name", str(tmp_path / "cmp"))
    assert out.returncode == 0, out.stderr
    records = {r["metric"]: r for r in json.loads((tmp_path / "cmp.json").read_text())["comparisons"]}
    assert set(records) == {"asr", "over_refusal", "accuracy"}
    expected = fisher_exact([[46, 82], [20, 108]])[1]
    assert abs(records["asr"]["p_value"] - expected) < 1e-12 and records["asr"]["p_value"] < 0.001
    assert records["accuracy"]["p_value"] == 1.0  # the same counts
    # no seed in common: not comparable, a clear error naming both
    bad = _run(str(a), str(_result(tmp_path / "c.json", 20, seeds=(2, 3))), "--name", str(tmp_path / "x"))
    assert bad.returncode != 0 and "share no seed ([0, 1] vs [2, 3])" in bad.stderr
    assert not (tmp_path / "x.json").exists()
    missing = _run(str(a), str(tmp_path / "nope.json"), "--name", str(tmp_path / "y"))
    assert missing.returncode != 0 and "nope.json: not a readable efficacy result" in missing.stderr


def test_a_result_with_more_seeds_is_cut_to_the_shared_ones(tmp_path):
    """A 3-seed run against a 2-seed reference: B's counts are those of seeds 0 and 1 only."""
    a = _result(tmp_path / "a.json", 46)
    b = _result(tmp_path / "b.json", 30, seeds=(0, 1, 2), n=192, per_seed_k=(5, 7, 18))
    out = _run(str(a), str(b), "--name", str(tmp_path / "cmp"))
    assert out.returncode == 0, out.stderr
    result = json.loads((tmp_path / "cmp.json").read_text())
    assert result["seeds"] == [0, 1]
    asr = next(r for r in result["comparisons"] if r["metric"] == "asr")
    assert (asr["rate_b"]["k"], asr["rate_b"]["n"]) == (12, 128)  # 5 + 7 of 64 + 64: seed 2's 18 left out
    assert (asr["rate_a"]["k"], asr["rate_a"]["n"]) == (46, 128)
    # a rate that kept no per-seed values cannot be cut: said, not guessed
    bare = _run(str(a), str(_result(tmp_path / "d.json", 30, seeds=(0, 1, 2), n=192)), "--name", str(tmp_path / "z"))
    assert bare.returncode != 0 and "no per-seed rates to cut to seeds [0, 1]" in bare.stderr
