"""Step time of the alignment loss with the auxiliary term (lambda=0.2) over plain SFT
(lambda=0), on SmolLM2-135M with LoRA at sequence length 256.

    .venv/bin/python bench/aux_overhead.py [--steps 8] [--batch 4]

Both settings run in the same process on the same model and batches, interleaved step by
step (this machine is noisy), and only the loss weight differs. Target: ratio <= 1.03.
Writes bench/results/aux_overhead.json.
"""

from __future__ import annotations

import argparse
import statistics
import time

import common  # noqa: F401  (sys.path, offline env)
import torch


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=8, help="timed steps per setting")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--model", default="embedded:smollm2-135m-instruct")
    args = ap.parse_args()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from jobs.align.data import build_example, collate
    from jobs.align.model import PreCoTModel, add_lora, resolve_layers
    from jobs.models.embedded import resolve_model
    from jobs.pipeline_config import LoraSettings
    from jobs.templates import TemplateConfig

    path = resolve_model(args.model)
    tok = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    lm = add_lora(base, LoraSettings())
    model = PreCoTModel(lm, resolve_layers([], base.config.num_hidden_layers), aux_weight=0.0)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    # Fixed-length batches: every row padded/cut to exactly --seq tokens.
    examples = [build_example(tok, r, TemplateConfig(), args.seq, hard=False) for r in common.align_rows(args.batch * 2)]
    for e in examples:
        while len(e.input_ids) < args.seq:
            e.input_ids.append(tok.eos_token_id)
            e.labels.append(tok.eos_token_id)
    batches = [collate(examples[i : i + args.batch], tok.pad_token_id) for i in range(0, len(examples), args.batch)]
    assert all(b["input_ids"].shape == (args.batch, args.seq) for b in batches)

    def step(weight: float, batch) -> float:
        model.aux_weight = weight
        start = time.perf_counter()
        out = model(**batch)
        out["loss"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    for w in (0.0, 0.2):  # warm-up
        step(w, batches[0])
    times = {0.0: [], 0.2: []}
    for i in range(args.steps):
        order = (0.0, 0.2) if i % 2 == 0 else (0.2, 0.0)  # alternate who goes first
        for w in order:
            times[w].append(step(w, batches[i % len(batches)]))
    med = {w: statistics.median(t) for w, t in times.items()}
    ratio = med[0.2] / med[0.0]
    rows = [["lambda=0 (plain SFT)", med[0.0], min(times[0.0]), 1.0],
            ["lambda=0.2 (pre-CoT aux)", med[0.2], min(times[0.2]), ratio]]
    print(common.table(["setting", "median step s", "min step s", "ratio"], rows))
    print(f"ratio {ratio:.3f} (target <= 1.03) -> {'PASS' if ratio <= 1.03 else 'FAIL'}")
    common.write_result("aux_overhead", {
        "model": args.model, "batch": args.batch, "seq": args.seq, "steps": args.steps,
        "step_seconds": {"lambda_0": times[0.0], "lambda_0.2": times[0.2]},
        "median": {"lambda_0": med[0.0], "lambda_0.2": med[0.2]}, "ratio": ratio, "target": 1.03,
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
