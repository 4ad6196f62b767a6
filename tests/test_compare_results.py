"""Unpaired comparison of two efficacy results (bench/compare_results.py): the fallback
when the reference's job folder is gone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "compare_results.py"


def _result(path: Path, asr_k: int, seeds=(0, 1), n: int = 128) -> Path:
    rate = {"rate": asr_k / n, "k": asr_k, "n": n, "lo": 0.0, "hi": 1.0}
    path.write_text(json.dumps({
        "seeds": list(seeds), "sets": {"harmful": 64}, "headline": "string_match",
        "groups": {"aligned": {"runs": {"cot_on/t1.0": {
            "accuracy": {"rate": 0.5, "k": 32, "n": 64, "lo": 0.4, "hi": 0.6},
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
    # other seeds: not comparable, a clear error naming both
    bad = _run(str(a), str(_result(tmp_path / "c.json", 20, seeds=(0, 1, 2))), "--name", str(tmp_path / "x"))
    assert bad.returncode != 0 and "differ in seeds ([0, 1] vs [0, 1, 2])" in bad.stderr
    assert not (tmp_path / "x.json").exists()
    missing = _run(str(a), str(tmp_path / "nope.json"), "--name", str(tmp_path / "y"))
    assert missing.returncode != 0 and "nope.json: not a readable efficacy result" in missing.stderr
