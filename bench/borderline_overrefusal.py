"""Over-refusal of borderline-benign prompts (harmless requests that look harmful) by the
models a finished efficacy job trained: `presafe eval` on presafe's held-out borderline
set (`builtin:borderline-heldout`, never trained on), base vs every adapter, pooled per
group over seeds, with 95% Wilson intervals and the exact McNemar test of λ = 0.2 vs λ = 0
on the same prompts and seeds.

    .venv/bin/python bench/borderline_overrefusal.py runs/jobs/efficacy [--xstest DIR]

Judges: string match (headline) and the XSTest-trained classifier. Greedy and sampled
(T 0.6 and 1.0, top-p 0.95), CoT on; CoT off greedy for reference. Writes
bench/results/efficacy_borderline.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from common import ROOT, table, write_result

XSTEST_JUDGE = ROOT / "runs" / "judges" / "xstest_classifier"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("job", help="a finished efficacy job folder (bench/efficacy.py), with adapter_s*/ folders")
    ap.add_argument("--xstest", default=str(XSTEST_JUDGE))
    ap.add_argument("--storage", default=str(ROOT / "runs" / "borderline"))
    args = ap.parse_args()

    from jobs.artifacts import read_jsonl
    from jobs.config import load_config
    from jobs.evaluation.stats import mcnemar, pooled
    from jobs.pipeline import Pipeline
    from jobs.pipeline_config import PipelineConfig

    job = Path(args.job)
    adapters = sorted((str(p) for p in job.glob("adapter*_s*") if (p / "adapter_config.json").is_file()),
                      key=lambda p: ("lambda0" in p, p))  # aligned seeds, then the ablation's
    if not adapters:
        raise SystemExit(f"{job}: no adapter_*_s<seed>/ folders (run bench/efficacy.py with --seeds first)")
    decodings = [{"name": "greedy"}, {"name": "t0.6", "temperature": 0.6, "top_p": 0.95, "seed": 1},
                 {"name": "t1.0", "temperature": 1.0, "top_p": 0.95, "seed": 1}]
    judges = [{"kind": "string_match"}, {"kind": "classifier", "path": args.xstest, "name": "xstest_classifier"}]
    quick = load_config(PipelineConfig, ROOT / "jobs" / "configs" / "quickstart.yaml")
    cfg = load_config(PipelineConfig, None, [
        "kind=eval", f"storage_path={args.storage}", "job_id=borderline", f"model={quick.model}",
        f"template.family={quick.template.family}", "evaluate.enabled=true",
        'evaluate.benign=[{"path": "builtin:borderline-heldout", "format": "builtin"}]',
        f"evaluate.max_new_tokens={quick.evaluate.max_new_tokens}", f"evaluate.batch_size={quick.evaluate.batch_size}",
        f"evaluate.decodings={json.dumps(decodings)}", "evaluate.cot_off=[greedy]", "evaluate.probes.enabled=false",
        f"evaluate.judges={json.dumps(judges)}", "evaluate.headline=string_match",
        f"evaluate.adapters={json.dumps(adapters)}"])
    Pipeline(cfg).run()

    out = Path(cfg.job_dir)
    ev = json.loads((out / "evaluation.json").read_text())
    group_of = lambda name: "base" if name == "base" else ("lambda0" if "lambda0" in name else "aligned")  # noqa: E731
    seed_of = lambda name: int(re.search(r"_s(\d+)$", name).group(1)) if name != "base" else None  # noqa: E731
    rows, result = [], {}
    for run in ev["variants"]["base"]["runs"]:
        result[run] = {}
        for judge in (j["name"] for j in ev["judges"]):
            entry = {}
            for g in ("base", "aligned", "lambda0"):
                rates = [v["runs"][run]["judges"][judge]["over_refusal"] for n, v in ev["variants"].items()
                         if group_of(n) == g]
                entry[g] = {**pooled(rates), "per_seed": [r["rate"] for r in rates]}
            # paired: the same prompt and seed, aligned vs λ = 0
            b = c = 0
            for n in ev["variants"]:
                if group_of(n) != "aligned":
                    continue
                other = n.replace("adapter_s", "adapter_lambda0_s")
                refused = {}
                for name in (n, other):
                    rel = f"evaluation/{name}/{run.replace('/', '-')}.jsonl"
                    refused[name] = {r["id"]: r["judges"][judge]["answer"] == "refuse" for r in read_jsonl(out / rel)}
                for pid in refused[n]:
                    b += refused[n][pid] and not refused[other][pid]
                    c += refused[other][pid] and not refused[n][pid]
            entry["mcnemar_aligned_vs_lambda0"] = mcnemar(b, c)
            result[run][judge] = entry
            fmt = lambda r: f"{r['rate']:.1%} [{100 * r['lo']:.0f},{100 * r['hi']:.0f}] {r['k']}/{r['n']}"  # noqa: E731
            rows.append([run, judge, fmt(entry["base"]), fmt(entry["aligned"]), fmt(entry["lambda0"]),
                         f"{entry['mcnemar_aligned_vs_lambda0']['p_value']:.3g} (b={b}, c={c})"])
    print(table(["run", "judge", "base", "aligned (λ=0.2)", "λ=0", "McNemar p"], rows))
    write_result("efficacy_borderline", {"job": str(job), "adapters": adapters, "set": "builtin:borderline-heldout",
                                         "n_prompts": ev["sets"]["benign"], "over_refusal": result,
                                         "agreement": ev["agreement"],
                                         "seeds": sorted({seed_of(n) for n in ev["variants"] if n != "base"})})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
