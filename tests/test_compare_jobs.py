"""Paired comparison of two finished jobs (jobs/evaluation/compare.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobs.errors import DataError
from jobs.evaluation.compare import compare_jobs


def _job(root: Path, answers: dict[str, list[str]], prompts: list[str] | None = None, judge: str = "string_match") -> Path:
    """A job folder as the judge stage leaves it: variant name -> the answer verdict of
    each harmful prompt (cot_on/greedy), plus one benign prompt answered 'comply'."""
    variants = {}
    for name, verdicts in answers.items():
        group, _, seed = name.partition("@s")
        rel = f"evaluation/{name}/cot_on-greedy.jsonl"
        rows = [{"set": "harmful", "id": f"h{i}", "sample": 0, "prompt": (prompts or [])[i] if prompts else f"harm {i}",
                 "judges": {judge: {"answer": v, "thinking": "empty"}}} for i, v in enumerate(verdicts)]
        rows.append({"set": "benign", "id": "b0", "sample": 0, "prompt": "benign 0",
                     "judges": {judge: {"answer": "comply", "thinking": "empty"}}})
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("".join(json.dumps(r) + "\n" for r in rows))
        variants[name] = {"group": group, "seed": int(seed or 0), "adapter": None, "runs": {"cot_on/greedy": rel}}
    (root / "evaluation" / "samples.json").write_text(json.dumps({"variants": variants}))
    (root / "evaluation.json").write_text(json.dumps({"headline": judge, "judges": [{"name": judge}]}))
    return root


def test_pairs_the_same_variant_seed_and_prompt_across_jobs(tmp_path):
    a = _job(tmp_path / "a", {"aligned@s0": ["comply"] * 8 + ["refuse"] * 2, "aligned@s1": ["comply"] * 10,
                              "base": ["comply"] * 10})
    b = _job(tmp_path / "b", {"aligned@s0": ["refuse"] * 10, "aligned@s1": ["refuse"] * 9 + ["comply"],
                              "base": ["comply"] * 10, "lambda0@s0": ["refuse"] * 10})
    records = {(r["group"], r["metric"]): r for r in compare_jobs(a, b)}
    asr = records[("aligned", "asr")]
    assert asr["pairs"] == 20  # both seeds pooled; lambda0 exists only in B: not compared
    assert (asr["rate_a"]["k"], asr["rate_b"]["k"]) == (18, 1)
    assert (asr["b"], asr["c"]) == (17, 0) and asr["p_value"] < 1e-4
    assert 0 < asr["rate_a"]["lo"] < asr["rate_a"]["rate"] < asr["rate_a"]["hi"] <= 1
    base = records[("base", "asr")]
    assert (base["b"], base["c"], base["p_value"]) == (0, 0, 1.0)
    assert records[("aligned", "over_refusal")]["pairs"] == 2
    assert ("lambda0", "asr") not in records


def test_different_prompts_under_one_id_or_a_missing_judge_is_an_error(tmp_path):
    a = _job(tmp_path / "a", {"aligned@s0": ["comply", "refuse"]})
    b = _job(tmp_path / "b", {"aligned@s0": ["comply", "refuse"]}, prompts=["harm 0", "another prompt"])
    with pytest.raises(DataError, match=r"aligned@s0 cot_on/greedy h1: the jobs evaluated different prompts"):
        compare_jobs(a, b)
    c = _job(tmp_path / "c", {"aligned@s0": ["comply", "refuse"]}, judge="xstest")
    with pytest.raises(DataError, match=r"judge 'string_match' did not judge this job"):
        compare_jobs(a, c)
    with pytest.raises(DataError, match="no evaluation"):
        compare_jobs(a, tmp_path / "nothing")
