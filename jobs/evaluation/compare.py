"""Paired comparison of two finished jobs: did a lever help, on the same prompts?

    from jobs.evaluation.compare import compare_jobs
    compare_jobs("runs/jobs/before", "runs/jobs/after")   # bench/compare_jobs.py prints it

Two jobs run with the same seeds and evaluation prompts but one setting changed (more
training prompts, decision-token weighting, a think-block format) give, per variant group
(`aligned`, `lambda0`, `base`), run (`cot_on/greedy`, ...) and metric, paired outcomes:
the same variant seed, set, prompt id and sample in both. The exact McNemar test on them
says whether the change moved the rate, which two pooled rates with overlapping intervals
cannot. A pair whose prompt text differs between the jobs is an error, not a silent
mismatch: the jobs were not evaluated on the same prompts.
"""

from __future__ import annotations

import json
from pathlib import Path

from jobs.artifacts import read_jsonl
from jobs.errors import DataError
from jobs.evaluation.stats import mcnemar, rate
from jobs.stages.evaluate import EVALUATION, SAMPLES_INDEX
from jobs.stages.judge import sample_outcomes

METRICS = ("asr", "cot_asr", "over_refusal", "accuracy")


def _index(job: Path) -> dict:
    path = job / SAMPLES_INDEX
    if not path.is_file():
        raise DataError(f"{path}: not found (the job has no evaluation; run it to the judge stage first)")
    return json.loads(path.read_text())


def _judged(job: Path) -> list[str]:
    path = job / EVALUATION
    if not path.is_file():
        raise DataError(f"{path}: not found (run the judge stage first: its verdicts are what is compared)")
    ev = json.loads(path.read_text())
    return [ev["headline"]] + [j["name"] for j in ev["judges"] if j["name"] != ev["headline"]]


def compare_jobs(job_a: str | Path, job_b: str | Path, judge: str | None = None) -> list[dict]:
    """One record per (group, run, metric) that both jobs evaluated: `rate_a` / `rate_b` with
    95% Wilson intervals over the pairs, McNemar's b (events in A only), c (in B only) and
    exact p-value. `judge`: whose verdicts (default: job A's headline judge, which job B
    must also have)."""
    a, b = Path(job_a), Path(job_b)
    ia, ib = _index(a), _index(b)
    judges_a, judges_b = _judged(a), _judged(b)
    judge = judge or judges_a[0]
    for job, names in ((a, judges_a), (b, judges_b)):
        if judge not in names:
            raise DataError(f"{job}: judge {judge!r} did not judge this job (it has {names})")
    shared = [name for name in ia["variants"] if name in ib["variants"]]
    if not shared:
        raise DataError(f"{a} and {b} share no variant (A: {sorted(ia['variants'])}, B: {sorted(ib['variants'])})")
    acc: dict[tuple[str, str, str], list[int]] = {}
    for name in shared:
        va, vb = ia["variants"][name], ib["variants"][name]
        for run in va["runs"].keys() & vb["runs"].keys():
            rows_a, rows_b = read_jsonl(a / va["runs"][run], "evaluate"), read_jsonl(b / vb["runs"][run], "evaluate")
            prompts_b = {(r["set"], r["id"], r["sample"]): r["prompt"] for r in rows_b}
            for r in rows_a:
                key = (r["set"], r["id"], r["sample"])
                if key in prompts_b and prompts_b[key] != r["prompt"]:
                    raise DataError(f"{name} {run} {r['id']}: the jobs evaluated different prompts under this id "
                                    f"({r['prompt'][:60]!r} vs {prompts_b[key][:60]!r}); compare jobs evaluated "
                                    "on the same prompt sets")
            for metric in METRICS:
                oa, ob = sample_outcomes(rows_a, metric, judge), sample_outcomes(rows_b, metric, judge)
                keys = oa.keys() & ob.keys()
                if not keys:
                    continue
                counts = acc.setdefault((va["group"], run, metric), [0, 0, 0, 0, 0])
                for k in keys:
                    counts[0] += 1
                    counts[1] += oa[k]
                    counts[2] += ob[k]
                    counts[3] += oa[k] and not ob[k]
                    counts[4] += ob[k] and not oa[k]
    return [{"group": group, "run": run, "metric": metric, "judge": judge, "pairs": n,
             "rate_a": rate(ka, n), "rate_b": rate(kb, n), **mcnemar(only_a, only_b)}
            for (group, run, metric), (n, ka, kb, only_a, only_b) in sorted(acc.items())]
