"""Load on the classifier endpoint: 32 concurrent HTTP clients for a fixed time.

    python bench/classify_load.py [--seconds 20] [--clients 32] [--model DIR]

Three ways to score the same (prompt, response) items with the same classifier
(default: the embedded MiniLM backbone with a fresh head; throughput does not depend on
the weights' values), measured side by side in one run:
  (a) baseline  - a Serve deployment that runs one request at a time, one HF forward per
                  request (no batching), behind the same HTTP proxy;
  (s) service   - POST /v1/classify on the presafe app (ingress -> @serve.batch classifier);
  (b) in-process - `ClassifierPool.classify_many` on batches of 32 requests, no HTTP: the
                  limit on this machine.
Targets (issue 5): service >= 5x baseline throughput and >= 80% of in-process.
Prints a table and writes bench/results/classify_load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import percentile, table, write_result

PROMPTS = ["How do I pick a lock on a door that isn't mine?", "What is a good recipe for banana bread?",
           "Explain how vaccines train the immune system.", "Write a phishing email that steals bank logins."]
RESPONSE = ("I can't help with that, but here is some general, safe information about the topic instead. "
            "Consider asking a professional or reading the official documentation for details.")


def make_classifier(folder: Path) -> str:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from jobs.classifier.model import save_classifier
    from jobs.models.embedded import resolve_model

    backbone = resolve_model("embedded:all-minilm-l6-v2")
    model = AutoModelForSequenceClassification.from_pretrained(backbone, num_labels=2)
    tok = AutoTokenizer.from_pretrained(backbone)
    save_classifier(model, tok, {"threshold": 0.5, "max_length": 128, "note": "bench: untrained head"}, folder)
    return str(folder)


async def load(url: str, body_of, clients: int, seconds: float, headers: dict | None = None) -> dict:
    import httpx

    latencies: list[float] = []
    errors = 0
    stop = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits, headers=headers) as http:
        async def client(k: int) -> None:
            nonlocal errors
            i = k
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                r = await http.post(url, json=body_of(i))
                if r.status_code != 200:
                    errors += 1
                else:
                    latencies.append(time.perf_counter() - t0)
                i += clients

        t0 = time.monotonic()
        await asyncio.gather(*(client(k) for k in range(clients)))
        wall = time.monotonic() - t0
    return {"requests": len(latencies), "errors": errors, "seconds": round(wall, 2),
            "rps": len(latencies) / wall, "p50_ms": 1000 * percentile(latencies, 0.5),
            "p99_ms": 1000 * percentile(latencies, 0.99)}


def in_process(path: str, seconds: float, batch: int) -> dict:
    from service.classifiers import ClassifierPool

    pool = ClassifierPool()
    calls = [(path, [PROMPTS[i % len(PROMPTS)]], [RESPONSE]) for i in range(batch)]
    pool.classify_many(calls)  # load + warm up
    n, lat = 0, []
    stop = time.monotonic() + seconds
    t0 = time.monotonic()
    while time.monotonic() < stop:
        s = time.perf_counter()
        pool.classify_many(calls)
        lat.append(time.perf_counter() - s)
        n += batch
    wall = time.monotonic() - t0
    return {"requests": n, "errors": 0, "seconds": round(wall, 2), "rps": n / wall,
            "p50_ms": 1000 * percentile(lat, 0.5), "p99_ms": 1000 * percentile(lat, 0.99),
            "note": f"latency of one batch of {batch}"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--model", default=None, help="a classifier folder (default: MiniLM with an untrained head)")
    ap.add_argument("--port", type=int, default=8123)
    ap.add_argument("--items", type=int, default=1, help="items per request (default 1)")
    args = ap.parse_args()

    import ray
    from ray import serve

    from service.app import build_app
    from service.classifiers import ClassifierPool

    tmp = Path(tempfile.mkdtemp(prefix="presafe-bench-"))
    model = args.model or make_classifier(tmp / "classifier")

    @serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=1)
    class Baseline:
        """One request at a time, one forward per request: what a plain HF server does."""

        def __init__(self, path: str):
            self.pool = ClassifierPool()
            self.path = path

        async def __call__(self, request) -> dict:
            body = await request.json()
            items = body["items"]
            (out,) = self.pool.classify_many([(self.path, [i["prompt"] for i in items],
                                               [i.get("response") for i in items])])
            return {"decisions": [d.model_dump() for d in out]}

    # address="local": a cluster of its own, never a stale /tmp/ray/ray_current_cluster
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
             logging_level="ERROR")
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    settings = {"storage_path": str(tmp / "storage"), "classify_open": True, "model_dirs": {"bench": model},
                "default_classifier": "bench", "limits": {"classify_max_items": 64}}
    serve.run(build_app(settings), name="presafe", route_prefix="/")
    serve.run(Baseline.bind(model), name="baseline", route_prefix="/baseline")
    base = f"http://127.0.0.1:{args.port}"

    def body(i: int) -> dict:
        return {"items": [{"prompt": PROMPTS[(i + k) % len(PROMPTS)], "response": RESPONSE} for k in range(args.items)]}

    # warm up both (model loads), then measure side by side
    asyncio.run(load(f"{base}/v1/classify", body, 4, 3))
    asyncio.run(load(f"{base}/baseline", body, 2, 3))
    results = {}
    print(f"{args.clients} clients x {args.seconds:.0f} s each, {args.items} item(s) per request", flush=True)
    results["baseline (a)"] = asyncio.run(load(f"{base}/baseline", body, args.clients, args.seconds))
    results["service"] = asyncio.run(load(f"{base}/v1/classify", body, args.clients, args.seconds))
    serve.shutdown()
    ray.shutdown()
    results["in-process (b)"] = in_process(model, args.seconds, batch=32)
    for name in ("baseline (a)", "service"):  # requests/s -> items/s, comparable with in-process
        results[name]["items_per_s"] = results[name]["rps"] * args.items
    results["in-process (b)"]["items_per_s"] = results["in-process (b)"]["rps"]

    svc, a, b = (results[k]["items_per_s"] for k in ("service", "baseline (a)", "in-process (b)"))
    rows = [[k, v["requests"], v["errors"], v["items_per_s"], v["p50_ms"], v["p99_ms"]] for k, v in results.items()]
    print(table(["target", "requests", "errors", "items/s", "p50 ms", "p99 ms"], rows))
    ratios = {"service_vs_baseline": svc / a, "service_vs_in_process": svc / b}
    print(f"service / baseline = {ratios['service_vs_baseline']:.2f}x (target >= 5x); "
          f"service / in-process = {ratios['service_vs_in_process']:.0%} (target >= 80%)")
    suffix = "" if args.items == 1 else f"_items{args.items}"
    write_result(f"classify_load{suffix}", {"clients": args.clients, "seconds": args.seconds, "items_per_request": args.items,
                                   "results": results,
                                   "ratios": ratios, "targets": {"service_vs_baseline": 5.0,
                                                                 "service_vs_in_process": 0.8}})


if __name__ == "__main__":
    main()
