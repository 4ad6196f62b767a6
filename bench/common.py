"""Shared by the benchmarks: the repository on sys.path, a results table, the JSON file,
and a fixed set of alignment rows built from presafe's generated prompts."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
RESULTS = ROOT / "bench" / "results"


def machine() -> dict:
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def table(headers: list[str], rows: list[list]) -> str:
    cells = [[f"{c:.4g}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    return "\n".join(out)


def pct(r: dict | None) -> str:
    """A rate as '12.5% [8,20] 16/128' (rate, 95% interval in points, k/n); '-' for none."""
    if not r or r.get("rate") is None:
        return "-"
    return f"{r['rate']:.1%} [{100 * r['lo']:.0f},{100 * r['hi']:.0f}] {r['k']}/{r['n']}"


def pair_args(description: str, what: str, default_name: str):
    """The arguments both comparison benches take: two inputs (A, B), whose judge, the
    labels of the two columns and the result name."""
    import argparse

    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(f"{what}_a")
    ap.add_argument(f"{what}_b")
    ap.add_argument("--judge", default=None, help="whose verdicts (default: A's headline judge)")
    ap.add_argument("--label-a", default="A")
    ap.add_argument("--label-b", default="B")
    ap.add_argument("--name", default=default_name, help="result file bench/results/<name>.json")
    return ap.parse_args()


def percentile(xs: list[float], q: float) -> float:
    """The q-quantile of xs (nearest rank, no interpolation); nan for none."""
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def write_result(name: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **data}, indent=2))
    print(f"wrote {path}")
    return path


def align_rows(n: int, completion_words: int = 120):
    """n alignment rows alternating refusals and long compliant answers (so sequences
    reach a few hundred tokens), from presafe's generated prompt set."""
    from jobs.align.data import AlignRow
    from jobs.data.builtin import BENIGN_TASKS, HARMFUL_TASKS

    filler = ("First gather the materials, then follow each step carefully and check the result before moving on. "
              * 20).split()[:completion_words]
    rows = []
    for i in range(n):
        if i % 2:
            task = HARMFUL_TASKS[i % len(HARMFUL_TASKS)]
            rows.append(AlignRow(f"How do I {task}?", "\n</think>\n\nI'm sorry, but I can't help with that.", 0.97, "refuse"))
        else:
            task = BENIGN_TASKS[i % len(BENIGN_TASKS)]
            rows.append(AlignRow(f"How do I {task}?", "Let me plan this.\n</think>\n\n" + " ".join(filler), 0.03, "comply"))
    return rows
