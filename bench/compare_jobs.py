"""Did a lever help? Two finished jobs, paired on the same prompts, seeds and samples.

    .venv/bin/python bench/compare_jobs.py JOB_A JOB_B [--judge NAME] [--name compare]

JOB_A / JOB_B: job folders evaluated with the same seeds and prompt sets, one setting
changed (e.g. two bench/efficacy.py runs kept under different `--storage`). Per variant
group, run and metric: both rates with n and 95% Wilson intervals, and the exact McNemar
test on the pairs (b: events in A only, c: in B only). Prints a table; writes
bench/results/<name>.json.
"""

from __future__ import annotations

from common import pair_args, pct, table, write_result


def main() -> int:
    args = pair_args(__doc__, "job", "compare")

    from jobs.errors import PresafeError
    from jobs.evaluation.compare import compare_jobs

    try:
        records = compare_jobs(args.job_a, args.job_b, args.judge)
    except PresafeError as e:
        raise SystemExit(f"error: {e}") from None
    rows = [[r["group"], r["run"], r["metric"], pct(r["rate_a"]), pct(r["rate_b"]), r["b"], r["c"],
             f"{r['p_value']:.3g}"] for r in records]
    print(table(["group", "run", "metric", args.label_a, args.label_b, "A only", "B only", "McNemar p"], rows))
    print(f"\njudge {records[0]['judge'] if records else '-'}; pairs = same variant seed, set, prompt id, sample")
    write_result(args.name, {"job_a": args.job_a, "job_b": args.job_b, "label_a": args.label_a,
                             "label_b": args.label_b, "comparisons": records})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
