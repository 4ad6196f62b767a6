"""The shared service's job queue under load: many submissions from several principals
against the live service (a local Ray cluster, the presafe Serve app, the Ray Jobs API).

    .venv/bin/python bench/queue_load.py [--jobs 200] [--principals 4] [--quota 2]
                                         [--max-running 4] [--job-seconds 1] [--body noop|tiny]

Each principal has its own token (quota `--quota` jobs running at once, max_priority 2)
and submits its share of the jobs from its own thread, one request after another, with
priorities 0/1/2 drawn from a fixed seed; at most `--max-running` jobs run at once over
all principals. Measured:

- submit latency (POST /v1/jobs, 201) p50 / p99 / max, per principal and overall;
- admission order, from the job records (created_at, priority, launched_at, ended_at):
  when a job was launched, no job that ranks before it (higher priority, or the same
  priority and submitted earlier) and was waiting then (for over `--order-slack` s: a
  scheduler pass reads the queue once, so a job submitted during a pass waits for the
  next) may have an owner under quota;
  FIFO within each principal and priority; never more than the quota per principal or
  `--max-running` overall running at once;
- no job lost: every submitted id is listed by GET /v1/jobs (admin, paginated) and
  SUCCEEDED; the store holds exactly the submitted jobs;
- memory: resident set size of the service's replica processes (ingress + classifier)
  and the Serve controller, sampled each second; flat = the last sample within 10% of the
  one taken after the first 10% of submissions (warm-up).

`--body noop` (the default) runs each job's Ray driver as a small script that sleeps
`--job-seconds` instead of `python -m jobs.pipeline`: the bench measures the queue, the
store, the scheduler and the Ray Jobs round trip, not training (the pipeline has its own
benches). `--body tiny` runs the real pipeline on the smoke config cut to 2 align steps,
no evaluation (about a minute each on 2 cores: use --jobs 8).

Prints a table and writes bench/results/queue_load.json.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import stat
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, percentile, table, write_result

UNFINISHED = ("QUEUED", "PENDING", "RUNNING")


def noop_driver(folder: Path) -> str:
    """An executable the service runs as `<it> -m jobs.pipeline --config X`: it ignores
    its arguments and sleeps PRESAFE_BENCH_JOB_S seconds."""
    path = folder / "noop-driver"
    path.write_text("#!/bin/sh\n# presafe bench/queue_load.py: a job body that only takes time\n"
                    "sleep \"${PRESAFE_BENCH_JOB_S:-1}\"\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return str(path)


def tiny_config() -> dict:
    import yaml

    cfg = yaml.safe_load((ROOT / "jobs" / "configs" / "smoke.yaml").read_text())
    cfg["evaluate"] = {"enabled": False}
    cfg["align"]["ablation"] = False
    cfg["align"]["train"].update(max_steps=2, checkpoint_every=0, log_every=1)
    cfg["prompts"]["limit_per_set"] = 4
    return cfg


def service_pids() -> dict[str, int]:
    """pid of each Serve replica and of the Serve controller (Ray's state API)."""
    from ray.util.state import list_actors

    pids = {}
    for a in list_actors(filters=[("state", "=", "ALIVE")], limit=1000):
        name = a.class_name or ""
        if name.startswith("ServeReplica:presafe") or name == "ServeController":
            pids[name.removeprefix("ServeReplica:presafe:") + f"#{a.pid}"] = a.pid
    return pids


class MemorySampler(threading.Thread):
    def __init__(self, pids: dict[str, int], every_s: float = 1.0):
        super().__init__(daemon=True)
        self.pids, self.every_s, self.samples = pids, every_s, []  # (t, {name: rss bytes})
        self.stop = threading.Event()

    def run(self) -> None:
        import psutil

        while not self.stop.is_set():
            rss = {}
            for name, pid in self.pids.items():
                try:
                    rss[name] = psutil.Process(pid).memory_info().rss
                except psutil.Error:
                    rss[name] = None
            self.samples.append((time.monotonic(), rss))
            self.stop.wait(self.every_s)

    def at(self, t: float) -> dict[str, int]:
        return min(self.samples, key=lambda s: abs(s[0] - t))[1]


def ts(value: str | None) -> float | None:
    return datetime.fromisoformat(value).timestamp() if value else None


def order_violations(recs: list[dict], quota: int, slack_s: float) -> list[str]:
    """Launches that skipped a job ranked before them whose owner was under quota then and
    which had been waiting for more than `slack_s` (a scheduler pass reads the queue once,
    then refreshes and launches, each Ray submit taking a while: a job submitted during a
    pass is seen by the next one)."""
    out = []
    launched = [r for r in recs if r["launched_at"]]
    for j in launched:
        t = ts(j["launched_at"])
        rank_j = (-j["priority"], ts(j["created_at"]))
        for k in recs:
            if k is j or (-k["priority"], ts(k["created_at"])) >= rank_j:
                continue
            if ts(k["created_at"]) >= t - slack_s or (k["launched_at"] and ts(k["launched_at"]) <= t):
                continue  # not yet submitted when the pass read the queue, or already launched
            running = sum(1 for r in launched if r["owner"] == k["owner"] and r is not j
                          and ts(r["launched_at"]) <= t and (r["ended_at"] is None or ts(r["ended_at"]) > t))
            if running < quota:
                out.append(f"{j['id']} (owner {j['owner']}, priority {j['priority']}) launched while {k['id']} "
                           f"(owner {k['owner']}, priority {k['priority']}, {running} running < quota {quota}) waited")
    return out


def max_overlap(recs: list[dict], owner: str | None = None) -> int:
    spans = [(ts(r["launched_at"]), ts(r["ended_at"]) or float("inf")) for r in recs
             if r["launched_at"] and (owner is None or r["owner"] == owner)]
    points = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda p: (p[0], p[1]))
    most = cur = 0
    for _, d in points:
        cur += d
        most = max(most, cur)
    return most


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--principals", type=int, default=4)
    ap.add_argument("--quota", type=int, default=2, help="jobs running at once per principal (token max_running_jobs)")
    ap.add_argument("--max-running", type=int, default=4, help="jobs running at once over all principals")
    ap.add_argument("--job-seconds", type=float, default=1.0, help="--body noop: how long each job's driver sleeps")
    ap.add_argument("--body", choices=("noop", "tiny"), default="noop")
    ap.add_argument("--order-slack", type=float, default=2.0,
                    help="seconds: a job submitted this shortly before a launch may not have been seen by that "
                         "scheduler pass (reported apart, not a violation)")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--name", default="queue_load")
    args = ap.parse_args()

    import httpx
    import ray
    from ray import serve

    from service.app import build_app
    from service.settings import hash_token

    work = Path(tempfile.mkdtemp(prefix="presafe-queue-load-"))
    names = [f"p{i}" for i in range(args.principals)]
    tokens = {n: f"tok-{n}-{os.urandom(8).hex()}" for n in [*names, "admin"]}
    ctx = ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=True, dashboard_host="127.0.0.1",
                   logging_level="ERROR", log_to_driver=False)
    with socket.socket() as sock:  # a free port, not a guess that may hit another server
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = {
        "storage_path": str(work / "storage"),
        "tokens": [{"name": n, "sha256": hash_token(tokens[n]), "scopes": ["jobs:read", "jobs:write"],
                    "max_running_jobs": args.quota, "max_priority": 2} for n in names]
                  + [{"name": "admin", "sha256": hash_token(tokens["admin"]), "scopes": ["admin"]}],
        "queue": {"max_running_per_owner": args.quota, "max_running": args.max_running,
                  "driver_num_cpus": 0.0 if args.body == "noop" else 0.25, "interval_s": 0.5},
        "ray_address": f"http://{ctx.dashboard_url}",
        "job_entrypoint_python": noop_driver(work) if args.body == "noop" else sys.executable,
        "job_env": {"HF_HUB_OFFLINE": "1", "PRESAFE_BENCH_JOB_S": str(args.job_seconds)},
    }
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(settings), name="presafe", route_prefix="/")
    url = f"http://127.0.0.1:{port}"
    config = tiny_config()
    sampler = MemorySampler(service_pids())
    sampler.start()

    rng = random.Random(0)
    plan = {n: [rng.choice((0, 0, 1, 2)) for _ in range(args.jobs // args.principals)] for n in names}
    submitted: dict[str, list[tuple[str, float]]] = {n: [] for n in names}
    failures: list[str] = []
    progress = {"n": 0}
    warm = {"t": None}
    lock = threading.Lock()

    def submit_all(name: str) -> None:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {tokens[name]}"}, timeout=120) as c:
            for i, prio in enumerate(plan[name]):
                t0 = time.perf_counter()
                r = c.post("/v1/jobs", json={"config": config, "name": f"{name}-{i}", "priority": prio})
                dt = time.perf_counter() - t0
                if r.status_code != 201:
                    failures.append(f"{name}-{i}: {r.status_code} {r.text[:200]}")
                    continue
                submitted[name].append((r.json()["id"], dt))
                with lock:
                    progress["n"] += 1
                    if warm["t"] is None and progress["n"] >= max(1, args.jobs // 10):
                        warm["t"] = time.monotonic()

    start = time.monotonic()
    threads = [threading.Thread(target=submit_all, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    submit_s = time.monotonic() - start
    ids = {i for n in names for i, _ in submitted[n]}
    print(f"submitted {len(ids)} jobs in {submit_s:.1f} s ({len(failures)} refused); waiting for them to finish",
          flush=True)

    admin = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {tokens['admin']}"}, timeout=120)

    def all_records() -> list[dict]:
        out, offset = [], 0
        while True:
            page = admin.get("/v1/jobs", params={"offset": offset, "limit": 100}).json()
            out += page["items"]
            offset += len(page["items"])
            if not page["items"] or offset >= page["total"]:
                return out

    deadline = time.monotonic() + args.timeout
    last = None
    while True:
        recs = all_records()
        left = sum(r["status"] in UNFINISHED for r in recs)
        if left != last:
            print(f"  {len(recs) - left}/{len(recs)} finished", flush=True)
            last = left
        if left == 0 or time.monotonic() > deadline:
            break
        time.sleep(2)
    total_s = time.monotonic() - start
    sampler.stop.set()
    sampler.join()

    listed = {r["id"] for r in recs}
    statuses = {}
    for r in recs:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    violations = order_violations(recs, args.quota, args.order_slack)
    within_slack = len(order_violations(recs, args.quota, 0.0)) - len(violations)
    fifo_broken = []
    for n in names:
        for prio in (0, 1, 2):
            mine = [r for r in recs if r["owner"] == n and r["priority"] == prio and r["launched_at"]]
            by_created = [r["id"] for r in sorted(mine, key=lambda r: ts(r["created_at"]))]
            by_launch = [r["id"] for r in sorted(mine, key=lambda r: ts(r["launched_at"]))]
            if by_created != by_launch:
                fifo_broken.append(f"{n} priority {prio}")
    per_owner_peak = {n: max_overlap(recs, n) for n in names}
    overall_peak = max_overlap(recs)

    rows = []
    for n in names:
        lat = [dt for _, dt in submitted[n]]
        rows.append([n, len(lat), percentile(lat, 0.5) * 1000, percentile(lat, 0.99) * 1000, max(lat) * 1000,
                     per_owner_peak[n]])
    lat = [dt for n in names for _, dt in submitted[n]]
    rows.append(["all", len(lat), percentile(lat, 0.5) * 1000, percentile(lat, 0.99) * 1000, max(lat) * 1000,
                 overall_peak])
    print(table(["principal", "jobs", "submit p50 ms", "submit p99 ms", "max ms", "peak running"], rows))

    warm_rss = sampler.at(warm["t"] or start)
    end_rss = sampler.samples[-1][1]
    memory = {}
    for name in warm_rss:
        a, b = warm_rss.get(name), end_rss.get(name)
        peak = max((s[1].get(name) or 0) for s in sampler.samples)
        memory[name] = {"after_warmup_mb": a and a / 2**20, "end_mb": b and b / 2**20, "peak_mb": peak / 2**20,
                        "flat": bool(a and b and b <= 1.10 * a)}
    print(table(["process", "after warm-up MB", "end MB", "peak MB", "flat (<= +10%)"],
                [[k, v["after_warmup_mb"] or 0.0, v["end_mb"] or 0.0, v["peak_mb"], v["flat"]]
                 for k, v in memory.items()]))
    lost = sorted(ids - listed)
    extra = sorted(listed - ids)
    checks = {
        "no_job_lost": not lost and not extra and len(ids) == args.jobs - len(failures),
        "all_succeeded": statuses.get("SUCCEEDED", 0) == len(ids),
        "admission_order": not violations,  # beyond --order-slack
        "fifo_within_principal_and_priority": not fifo_broken,
        "quota_respected": all(p <= args.quota for p in per_owner_peak.values()),
        "max_running_respected": overall_peak <= args.max_running,
        "memory_flat": all(v["flat"] for v in memory.values()),
        "no_submit_refused": not failures,
    }
    for k, v in checks.items():
        print(f"{k}: {'PASS' if v else 'FAIL'}")
    for v in violations[:5] + fifo_broken[:5] + failures[:5]:
        print("  ", v)
    print(f"admission: {len(violations)} launches skipped a job ranked before them that had waited over "
          f"{args.order_slack} s with its owner under quota; {within_slack} skipped one submitted within that slack "
          "(the next pass took it)")
    print(f"{len(ids)} jobs: submitted in {submit_s:.1f} s, all finished in {total_s:.1f} s; statuses {statuses}")
    write_result(args.name, {
        "jobs": args.jobs, "principals": args.principals, "quota": args.quota, "max_running": args.max_running,
        "body": args.body, "job_seconds": args.job_seconds if args.body == "noop" else None,
        "submit_latency_ms": {"p50": percentile(lat, 0.5) * 1000, "p99": percentile(lat, 0.99) * 1000,
                              "max": max(lat) * 1000, "per_principal": {r[0]: {"n": r[1], "p50": r[2], "p99": r[3]}
                                                                        for r in rows[:-1]}},
        "submit_seconds": round(submit_s, 1), "total_seconds": round(total_s, 1), "statuses": statuses,
        "peak_running": {"overall": overall_peak, **per_owner_peak}, "memory": memory, "checks": checks,
        "order_slack_s": args.order_slack, "skips_within_slack": within_slack, "violations": violations[:20], "fifo_broken": fifo_broken, "refused": failures[:20], "lost": lost,
        "records": [{k: r[k] for k in ("id", "owner", "priority", "status", "created_at", "launched_at", "started_at",
                                       "ended_at")} for r in recs],
        "note": "--body noop: each job's driver sleeps instead of training; the queue, store, scheduler and "
                "Ray Jobs round trip are what is measured",
    })
    serve.shutdown()
    ray.shutdown()
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
