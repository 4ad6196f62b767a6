"""Decision-classifier quality on XSTest completions, leave-one-model-out.

    .venv/bin/python bench/classifier_quality.py [--epochs 3] [--full] [key=value ...]

For each of the three answering models: train the default classifier config on the
other two models' (prompt, response) pairs plus the prompt-only rows, choose the
threshold on a validation split of those, and test on the held-out model's pairs.
Beside it, on the same held-out rows: a string-match refusal baseline (the common
"I'm sorry / I cannot" list). `--full` also times training on all 1,350 pairs plus the
prompt-only rows (target: within 15 minutes on a 2-core machine).
`key=value` arguments override the config as on the command line (e.g.
`model.pair_input=prompt_and_response` to measure the other pair reading).
Prints a table and writes bench/results/classifier_quality.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jobs.classifier.config import ClassifierJobConfig  # noqa: E402
from jobs.classifier.metrics import binary_metrics  # noqa: E402
from jobs.classifier.train import evaluate_classifier, train_classifier  # noqa: E402
from jobs.config import from_dict, load_config, to_dict  # noqa: E402
from jobs.data.readers import DataSource, read_examples  # noqa: E402
from jobs.evaluation.judges import string_match_refuses  # noqa: E402

DATA = Path(os.environ.get("PRESAFE_SHARED_DATA", ROOT.parent / "shared" / "data"))
XSTEST = DATA / "classifier" / "xstest_completions_train.csv"

def fold_config(settings: dict, output: Path, **data) -> ClassifierJobConfig:
    """`settings` (a ClassifierJobConfig as plain data) writing to `output`, with no test
    split, a 10% validation split, and `data` keys replaced."""
    return from_dict(ClassifierJobConfig, {**settings, "output_dir": str(output),
                                           "data": {**settings["data"], "test_fraction": 0.0, "val_fraction": 0.1,
                                                    **data}})


def model_folds(settings: dict, pairs: list, models: list[str], work: Path) -> list[dict]:
    """Leave one answering model out: for each model, train `settings` (its data.sources
    must hold the XSTest completions) without that model's pairs and test on them, beside
    the string-match baseline on the same rows. One row of results per model."""
    rows = []
    for held in models:
        cfg = fold_config(settings, work / f"holdout-{held}", holdout_column="model", holdout_value=held)
        start = time.perf_counter()
        out = train_classifier(cfg)
        train_s = time.perf_counter() - start
        test = [e for e in pairs if e.meta["model"] == held]
        m = evaluate_classifier(out, test)["pairs"]
        base = binary_metrics([int(string_match_refuses(e.response)) for e in test], [e.label for e in test], 0.5)
        rows.append({"held_out_model": held, "n": m["n"], "accuracy": m["accuracy"], "f1": m["f1"], "auroc": m["auroc"],
                     "string_match_accuracy": base["accuracy"], "string_match_f1": base["f1"], "train_seconds": train_s,
                     "model_dir": str(out)})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    ap.add_argument("--full", action="store_true", help="also time training on all rows")
    ap.add_argument("--models", default="", help="comma-separated held-out models (default: all three)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "classifier_quality.json"))
    ap.add_argument("overrides", nargs="*", help="config overrides, key=value")
    args = ap.parse_args()
    if not XSTEST.is_file():
        print(f"{XSTEST} not found: this benchmark reads ../shared/data", file=sys.stderr)
        return 2
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    src = {"path": str(XSTEST), "format": "xstest"}
    pairs = [e for e in read_examples(from_dict(DataSource, src)) if e.is_pair]
    models = sorted({e.meta["model"] for e in pairs})
    if args.models:
        models = [m for m in models if m in args.models.split(",")]
    work = Path(tempfile.mkdtemp(prefix="presafe-bench-"))
    user = list(args.overrides) + ([f"train.epochs={args.epochs}"] if args.epochs else [])
    settings = to_dict(load_config(ClassifierJobConfig, None, user))
    settings["data"]["sources"] = [src]
    rows = model_folds(settings, pairs, models, work)
    m, d = settings["model"], settings["data"]
    result = {"data": str(XSTEST),
              "config": f"ClassifierJobConfig defaults{' + ' + ' '.join(user) if user else ''} "
                        f"(backbone {m['backbone']}, {settings['train']['epochs']} epochs, max_length {m['max_length']}, "
                        f"pair_input {m['pair_input']}, first_sentences {d['first_sentences']}, "
                        f"builtin_phrasings {d['builtin_phrasings']})",
              "overrides": user,
              "folds": rows,
              "mean_accuracy": sum(r["accuracy"] for r in rows) / len(rows),
              "mean_string_match_accuracy": sum(r["string_match_accuracy"] for r in rows) / len(rows),
              "target_mean_accuracy": 0.93}
    if args.full:
        cfg = fold_config(settings, work / "full")
        start = time.perf_counter()
        train_classifier(cfg)
        result["full_train_seconds"] = time.perf_counter() - start
        result["full_train_rows"] = "1350 pairs + 450 prompt-only, 90% train"
        result["target_full_train_seconds"] = 900
    print(f"\n{'held-out model':18} {'n':>5} {'acc':>7} {'f1':>7} {'auroc':>7} {'str-acc':>8} {'str-f1':>7} {'train s':>8}")
    for r in rows:
        print(f"{r['held_out_model']:18} {r['n']:>5} {r['accuracy']:>7.4f} {r['f1']:>7.4f} {r['auroc']:>7.4f} "
              f"{r['string_match_accuracy']:>8.4f} {r['string_match_f1']:>7.4f} {r['train_seconds']:>8.1f}")
    print(f"{'mean':18} {'':>5} {result['mean_accuracy']:>7.4f} {'':>7} {'':>7} {result['mean_string_match_accuracy']:>8.4f}"
          f"   (target >= {result['target_mean_accuracy']})")
    if "full_train_seconds" in result:
        print(f"training on all rows: {result['full_train_seconds']:.0f} s (target <= 900 s)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
