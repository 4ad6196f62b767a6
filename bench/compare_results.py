"""Did a lever help, when the reference's job folder is gone? Two efficacy results, unpaired.

    .venv/bin/python bench/compare_results.py A.json B.json [--judge NAME] [--name compare_results]

A.json / B.json: bench/results/efficacy_*.json files (bench/efficacy.py), evaluated on the
same prompt sets. Where their seeds differ (a 3-seed run against a 2-seed reference), both
are cut to the seeds they share, from the per-seed rates the results keep (each seed has
n / seeds rows, so its count is exact); results that share no seed do not compare. Per
variant group (aligned, lambda0), run (cot_on/greedy,
cot_on/t1.0, ...) and metric (ASR, over-refusal, accuracy): both pooled rates with n and
95% Wilson intervals, and the two-sided Fisher exact test on the 2x2 table of counts.

Prefer bench/compare_jobs.py (McNemar on the same prompts and samples) whenever both job
folders exist: it pairs what this test treats as independent, so it has more power; this
one is the conservative fallback for a reference whose answers were not kept. Prints a
table; writes bench/results/<name>.json.
"""

from __future__ import annotations

import json
from pathlib import Path

from common import pair_args, pct, table, write_result
from jobs.evaluation.stats import rate as counted  # noqa: E402  (common puts the repository on sys.path)

METRICS = ("asr", "over_refusal")


def on_seeds(rate: dict, seeds: list[int], keep: list[int]) -> dict | None:
    """A pooled rate cut to the seeds in `keep`, from its `per_seed` rates (each seed holds
    n / len(seeds) rows); None when the rate keeps no per-seed values."""
    if keep == seeds:
        return rate
    per_seed = rate.get("per_seed")
    if not per_seed or len(per_seed) != len(seeds) or rate["n"] % len(seeds):
        return None
    n_seed = rate["n"] // len(seeds)
    k = sum(round(per_seed[seeds.index(s)] * n_seed) for s in keep)
    return {**counted(k, n_seed * len(keep)), "per_seed": [per_seed[seeds.index(s)] for s in keep]}


def cells(result: dict, judge: str, keep: list[int] | None = None) -> dict[tuple[str, str, str], dict]:
    """(group, run, metric) -> the pooled rate {rate, k, n, lo, hi} of one efficacy result,
    over the seeds in `keep` (default: all of the result's seeds)."""
    seeds = list(result.get("seeds") or [])
    keep = seeds if keep is None else keep
    found = {}
    for group, g in result["groups"].items():
        for run, r in g["runs"].items():
            if r.get("accuracy") and r["accuracy"].get("n"):
                found[(group, run, "accuracy")] = r["accuracy"]
            per_judge = r["judges"].get(judge)
            for metric in METRICS:
                if per_judge and per_judge.get(metric) and per_judge[metric].get("n"):
                    found[(group, run, metric)] = per_judge[metric]
    out = {}
    for key, rate in found.items():
        cut = on_seeds(rate, seeds, keep)
        if cut is None:
            raise SystemExit(f"error: {'/'.join(key)}: no per-seed rates to cut to seeds {keep}")
        out[key] = cut
    return out


def fisher_p(k_a: int, n_a: int, k_b: int, n_b: int) -> float:
    from scipy.stats import fisher_exact

    return float(fisher_exact([[k_a, n_a - k_a], [k_b, n_b - k_b]], alternative="two-sided")[1])


def main() -> int:
    args = pair_args(__doc__, "result", "compare_results")

    loaded = []
    for path in (args.result_a, args.result_b):
        try:
            loaded.append(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise SystemExit(f"error: {path}: not a readable efficacy result ({e})") from None
    a, b = loaded
    for path, r in zip((args.result_a, args.result_b), loaded):
        if "groups" not in r or "headline" not in r:
            raise SystemExit(f"error: {path}: no 'groups'/'headline': not a bench/efficacy.py result")
    if a.get("sets") != b.get("sets"):
        raise SystemExit(f"error: the results differ in set sizes ({a.get('sets')} vs {b.get('sets')}): "
                         "their rates are not comparable")
    seeds = [s for s in a.get("seeds") or [] if s in (b.get("seeds") or [])]
    if not seeds:
        raise SystemExit(f"error: the results share no seed ({a.get('seeds')} vs {b.get('seeds')}): "
                         "their rates are not comparable")
    judge = args.judge or a["headline"]
    ca, cb = cells(a, judge, seeds), cells(b, judge, seeds)
    shared = [key for key in ca if key in cb]
    if not shared:
        raise SystemExit(f"error: no group/run/metric is in both results for judge {judge!r}")
    records = []
    for group, run, metric in shared:
        ra, rb = ca[(group, run, metric)], cb[(group, run, metric)]
        records.append({"group": group, "run": run, "metric": metric, "rate_a": ra, "rate_b": rb,
                        "p_value": fisher_p(ra["k"], ra["n"], rb["k"], rb["n"])})
    rows = [[r["group"], r["run"], r["metric"], pct(r["rate_a"]), pct(r["rate_b"]), f"{r['p_value']:.3g}"]
            for r in records]
    print(table(["group", "run", "metric", args.label_a, args.label_b, "Fisher p (unpaired)"], rows))
    print(f"\njudge {judge}; seeds {seeds}; unpaired: prefer bench/compare_jobs.py (McNemar) when both job folders exist")
    write_result(args.name, {"result_a": args.result_a, "result_b": args.result_b, "label_a": args.label_a,
                             "label_b": args.label_b, "judge": judge, "seeds": seeds, "test": "fisher_exact_two_sided_unpaired",
                             "comparisons": records})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
