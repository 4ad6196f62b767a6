"""Scale-out of the align stage: 1 worker vs 2 workers on two Ray nodes, and what a
checkpoint costs, on the smoke model (embedded:tiny-random-lm, LoRA, λ = 0.2).

    .venv/bin/python bench/scaling.py [--steps 30] [--repeats 2] [--checkpoint-every 5]

Starts a two-node Ray cluster on this machine (jobs.local_cluster: a head and a second
node as separate `ray start` process trees, 1 CPU each), then runs the align stage as a
driver on it (`presafe stage align`), interleaving the configurations so that machine
noise hits them alike:

  1 worker                         one node
  2 workers, SPREAD                one per node (gloo all-reduce over loopback TCP)
  each with checkpoints every N steps and without

Throughput = tokens trained per second of the training loop (meta.json train_seconds:
model loading and Ray start-up excluded), summed over workers. Checkpoint overhead per
save, measured inside the workers (the slowest rank): writing the DeepSpeed state (with
its barriers), and `ray.train.report` taking it (Ray Train copies the folder to its
storage, then waits until its controller has taken the previous report: it polls every
~2 s); and as (loop time with checkpoints - without) / saves.

What 2 cores can and cannot show: two 1-CPU workers use both cores, so the speed-up is
the data-parallel gain minus the all-reduce, on a model so small that the all-reduce and
Python overhead weigh more than they would for a 7B model. The network is loopback: no
real interconnect, no cross-machine latency. The numbers say the scale-out path works and
costs little per step; they are not a prediction for GPU nodes.
Writes bench/results/scaling.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from common import ROOT, align_rows, table, write_result


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--checkpoint-every", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=4, help="rows per worker per step")
    args = ap.parse_args()

    import yaml

    from jobs.artifacts import write_jsonl
    from jobs.config import from_dict, to_dict
    from jobs.local_cluster import LocalCluster
    from jobs.pipeline_config import PipelineConfig

    presafe = str(Path(sys.executable).with_name("presafe"))
    work = Path(tempfile.mkdtemp(prefix="presafe-scaling-"))
    rows = [r.__dict__ for r in align_rows(256, completion_words=60)]
    variants = []
    for workers in (1, 2):
        for ckpt in (0, args.checkpoint_every):
            variants.append({"name": f"{workers}w-{'ckpt' if ckpt else 'nockpt'}", "workers": workers, "ckpt": ckpt})

    def config(v: dict, repeat: int) -> Path:
        cfg = from_dict(PipelineConfig, {
            "storage_path": str(work / "jobs"), "job_id": f"{v['name']}-{repeat}", "model": "embedded:tiny-random-lm",
            "prompts": {"harmful": [{"path": "builtin:demo-harmful-train", "format": "builtin"}]},
            "align": {"lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}, "aux": {"weight": 0.2},
                      "train": {"max_steps": args.steps, "batch_size": args.batch_size, "max_length": 160,
                                "log_every": 5, "checkpoint_every": v["ckpt"]},
                      "scale": {"num_workers": v["workers"], "cpus_per_worker": 1, "placement_strategy": "SPREAD",
                                "shared_filesystem": True}}})
        job = Path(cfg.job_dir)
        write_jsonl(job / "targets.jsonl", rows)
        path = work / f"{v['name']}-{repeat}.yaml"
        path.write_text(yaml.safe_dump(to_dict(cfg)))
        return job

    runs: dict[str, list[dict]] = {v["name"]: [] for v in variants}
    with LocalCluster(work / "cluster", {"head": 1, "second": 1}) as cluster:
        names = cluster.node_names()
        for repeat in range(args.repeats):
            for v in variants:
                job = config(v, repeat)
                out = cluster.run([presafe, "stage", "align", "--config", str(work / f"{v['name']}-{repeat}.yaml")],
                                  cwd=ROOT)
                if out.returncode != 0:
                    print(out.stderr[-3000:], file=sys.stderr)
                    raise SystemExit(f"{v['name']}: the align stage failed (exit {out.returncode})")
                meta = json.loads((job / "adapter" / "meta.json").read_text())
                tokens = sum(w["tokens"] for w in meta["workers"])
                saves = max(w["checkpoints"] for w in meta["workers"])
                runs[v["name"]].append({"seconds": meta["train_seconds"], "tokens": tokens,
                                        "nodes": sorted({names[w["node_id"]] for w in meta["workers"]}),
                                        "saves": saves,
                                        # every rank waits for the slowest at the barriers inside a save
                                        "save_seconds": max(w["checkpoint_save_seconds"] for w in meta["workers"])
                                        / saves if saves else None,
                                        "report_seconds": max(w["checkpoint_report_seconds"] for w in meta["workers"])
                                        / saves if saves else None})
                print(f"  {v['name']} repeat {repeat}: {meta['train_seconds']:.1f} s, {tokens} tokens, "
                      f"nodes {runs[v['name']][-1]['nodes']}", flush=True)

    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[name])

    saves = (args.steps - 1) // args.checkpoint_every if args.checkpoint_every else 0
    summary = {}
    for w in (1, 2):
        base, ck = f"{w}w-nockpt", f"{w}w-ckpt"
        summary[w] = {"tokens_per_s": med(base, "tokens") / med(base, "seconds"),
                      "seconds": med(base, "seconds"), "seconds_with_ckpt": med(ck, "seconds"),
                      "loop_difference_per_save_s": (med(ck, "seconds") - med(base, "seconds")) / max(1, saves),
                      "state_write_per_save_s": med(ck, "save_seconds"),
                      "ray_report_per_save_s": med(ck, "report_seconds"),
                      "nodes": runs[base][0]["nodes"]}
    speedup = summary[2]["tokens_per_s"] / summary[1]["tokens_per_s"]
    print()
    print(table(["workers", "nodes", "tokens/s", "loop s", f"loop s (ckpt every {args.checkpoint_every})",
                 "loop diff / save (s)", "state write / save (s)", "ray.train.report / save (s)"],
                [[w, "+".join(s["nodes"]), s["tokens_per_s"], s["seconds"], s["seconds_with_ckpt"],
                  s["loop_difference_per_save_s"], s["state_write_per_save_s"], s["ray_report_per_save_s"]]
                 for w, s in summary.items()]))
    print(f"\n2 workers on 2 nodes vs 1 worker: {speedup:.2f}x tokens/s ({args.steps} steps of {args.batch_size} rows "
          f"per worker, median of {args.repeats})")
    write_result("scaling", {"steps": args.steps, "batch_size_per_worker": args.batch_size,
                             "checkpoint_every": args.checkpoint_every, "saves_per_run": saves,
                             "repeats": args.repeats, "runs": runs, "summary": summary, "speedup_2_vs_1": speedup})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
