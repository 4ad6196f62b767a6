"""Decide-stage generation: presafe's batched engine against one-prompt-at-a-time
`generate`, on SmolLM2-135M with CoT off.

    .venv/bin/python bench/generation.py [--prompts 32] [--batch 16] [--max-new-tokens 48]

Same prompts, same greedy settings, same model object, measured in one run. Target:
batched >= 5x prompts/s. Writes bench/results/generation.json.
"""

from __future__ import annotations

import argparse
import time

import common  # noqa: F401
import torch


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--model", default="embedded:smollm2-135m-instruct")
    args = ap.parse_args()

    from jobs.data.builtin import BENIGN_TASKS, FRAMES, HARMFUL_TASKS
    from jobs.generation import GenerationConfig, HFEngine, load_causal_lm
    from jobs.templates import render_prompt

    tok, model = load_causal_lm(args.model)
    tasks = [t for pair in zip(HARMFUL_TASKS, BENIGN_TASKS) for t in pair]
    prompts = [FRAMES[i % len(FRAMES)].format(t=tasks[i % len(tasks)]) for i in range(args.prompts)]
    texts = [render_prompt(tok, p, cot=False).text for p in prompts]
    engine = HFEngine(args.model, tokenizer=tok, model=model)
    cfg = GenerationConfig(max_new_tokens=args.max_new_tokens, batch_size=args.batch)

    engine.generate(texts[:2], cfg)  # warm-up
    start = time.perf_counter()
    batched = engine.generate(texts, cfg)
    t_batched = time.perf_counter() - start

    start = time.perf_counter()
    single = []
    with torch.no_grad():
        for text in texts:
            ids = tok(text, add_special_tokens=False, return_tensors="pt")
            out = model.generate(**ids, max_new_tokens=args.max_new_tokens, do_sample=False,
                                 eos_token_id=engine.stop_ids, pad_token_id=tok.pad_token_id)
            single.append(tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))
    t_single = time.perf_counter() - start

    same = sum(a.strip() == b.strip() for a, b in zip(batched, single))
    speedup = t_single / t_batched
    rows = [["one prompt at a time", args.prompts / t_single, t_single, 1.0],
            [f"presafe batched (batch {args.batch})", args.prompts / t_batched, t_batched, speedup]]
    print(common.table(["engine", "prompts/s", "seconds", "speed-up"], rows))
    print(f"identical greedy outputs: {same}/{args.prompts}")
    print(f"speed-up {speedup:.2f}x (target >= 5x) -> {'PASS' if speedup >= 5 else 'FAIL'}")
    common.write_result("generation", {
        "model": args.model, "prompts": args.prompts, "batch": args.batch, "max_new_tokens": args.max_new_tokens,
        "seconds": {"single": t_single, "batched": t_batched},
        "prompts_per_s": {"single": args.prompts / t_single, "batched": args.prompts / t_batched},
        "speedup": speedup, "identical_outputs": same, "target": 5.0,
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
