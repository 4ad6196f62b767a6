"""Generation engines, two comparisons in one run (writes bench/results/generation.json):

1. Decide-stage generation: presafe's batched HF engine against one-prompt-at-a-time
   `generate`, on SmolLM2-135M with CoT off. Same prompts, same greedy settings, same
   model object. Target: batched >= 5x prompts/s.
2. vLLM against the HF engine's batched path (`generation.engine: vllm | hf`): CoT-on
   generation on the demo model (its held-out harmful, benign and arithmetic prompts), up
   to 256 new tokens stopping at the end token, so lengths vary naturally (where static
   batches wait for their longest sample). Tokens/s counts the generated tokens of each
   engine; the vLLM engine's start (model load, KV cache, warm-up) is timed apart. vLLM
   runs twice: with its auto core binding (one core kept for its scheduler process) and
   with every core bound (`generation.vllm.cpu_threads_bind`). Target on a 2-core
   CPU: vLLM >= 1.5x the HF tokens/s. GPU: not measured here.

    .venv/bin/python bench/generation.py [--prompts 32] [--batch 16] [--max-new-tokens 48]
        [--engine-prompts 64] [--engine-max-new-tokens 256] [--engine-model embedded:demo-reasoner]
"""

from __future__ import annotations

import argparse
import os
import time

import common  # noqa: F401
import torch


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--model", default="embedded:smollm2-135m-instruct")
    ap.add_argument("--engine-prompts", type=int, default=64)
    ap.add_argument("--engine-max-new-tokens", type=int, default=256)
    ap.add_argument("--engine-model", default="embedded:demo-reasoner")
    ap.add_argument("--skip-single", action="store_true",
                    help="only the vLLM vs HF comparison; the batched-vs-single numbers of the last run are kept")
    args = ap.parse_args()
    if args.skip_single:
        import json

        last = common.RESULTS / "generation.json"
        old = json.loads(last.read_text()) if last.is_file() else {}
        result = {k: v for k, v in old.items() if k not in ("machine", "engines")}
        if result:
            result["batched_vs_single_measured"] = old.get("batched_vs_single_measured") or old["machine"]["when"]
    else:
        result = batched_vs_single(args)
    result["engines"] = vllm_vs_hf(args)
    common.write_result("generation", result)
    return 0


def batched_vs_single(args) -> dict:
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
    return {
        "model": args.model, "prompts": args.prompts, "batch": args.batch, "max_new_tokens": args.max_new_tokens,
        "seconds": {"single": t_single, "batched": t_batched},
        "prompts_per_s": {"single": args.prompts / t_single, "batched": args.prompts / t_batched},
        "speedup": speedup, "identical_outputs": same, "target": 5.0,
    }


def vllm_vs_hf(args) -> dict:
    """CoT-on generation of the same prompts by the HF engine (batched) and the vLLM engine."""
    import gc

    from jobs.data.demo_corpus import builtin_prompts
    from jobs.generation import GenerationConfig, HFEngine, VLLMEngine, VLLMSettings, load_causal_lm
    from jobs.templates import render_prompt

    tok, model = load_causal_lm(args.engine_model)
    sets = [builtin_prompts(n) for n in ("demo-harmful-heldout", "demo-benign-heldout", "arithmetic-heldout")]
    prompts = [r.prompt for group in zip(*sets) for r in group][: args.engine_prompts]
    texts = [render_prompt(tok, p, cot=True).text for p in prompts]
    cfg = GenerationConfig(max_new_tokens=args.engine_max_new_tokens, batch_size=args.batch)

    def tokens(outs: list[str]) -> list[int]:
        return [len(tok(o, add_special_tokens=False)["input_ids"]) for o in outs]

    hf = HFEngine(args.engine_model, tokenizer=tok, model=model)
    hf.generate(texts[:2], GenerationConfig(max_new_tokens=8, batch_size=2))  # warm-up
    start = time.perf_counter()
    hf_out = hf.generate(texts, cfg)
    t_hf = time.perf_counter() - start
    del hf, model
    gc.collect()

    # vLLM's CPU build binds its OpenMP threads itself: `auto` keeps a core for the engine's
    # scheduler process (on 2 cores, decoding gets 1), an explicit list gives it them all.
    binds = [("auto", "auto binding"), (f"0-{os.cpu_count() - 1}", "all cores bound")]
    runs = {}
    for bind, label in binds:
        start = time.perf_counter()
        engine = VLLMEngine(args.engine_model, "float32",
                            VLLMSettings(max_model_len=1024, max_num_seqs=args.engine_prompts, cpu_kv_cache_gb=2,
                                         cpu_threads_bind=bind))
        engine.generate(texts[:2], GenerationConfig(max_new_tokens=8))  # warm-up, counted in the start
        t_start = time.perf_counter() - start
        start = time.perf_counter()
        out = engine.generate(texts, cfg)
        seconds = time.perf_counter() - start
        engine.close()
        del engine
        gc.collect()
        n = tokens(out)
        runs[bind] = {"label": label, "seconds": seconds, "start_s": t_start, "tokens": sum(n),
                      "tokens_per_s": sum(n) / seconds, "identical_to_hf": sum(a == b for a, b in zip(hf_out, out))}

    n_hf = tokens(hf_out)
    tps_hf = sum(n_hf) / t_hf
    for r in runs.values():
        r["ratio"] = r["tokens_per_s"] / tps_hf
    rows = [[f"hf batched (batch {args.batch})", tps_hf, t_hf, sum(n_hf), "-", 1.0, "-"]]
    rows += [[f"vllm, {r['label']} ({bind})", r["tokens_per_s"], r["seconds"], r["tokens"], f"{r['start_s']:.1f}",
              r["ratio"], f"{r['identical_to_hf']}/{len(texts)}"] for bind, r in runs.items()]
    rows.append(["vllm on GPU", "not measured here", "-", "-", "-", "-", "-"])
    print(f"\n{args.engine_model}: {len(texts)} prompts, CoT on, <= {args.engine_max_new_tokens} new tokens, greedy; "
          f"output tokens min/median/max {min(n_hf)}/{sorted(n_hf)[len(n_hf) // 2]}/{max(n_hf)} (hf); "
          f"torch threads {torch.get_num_threads()}")
    print(common.table(["engine", "tokens/s", "seconds", "tokens", "start s", "vs hf", "same as hf"], rows))
    best = max(runs.values(), key=lambda r: r["ratio"])
    print(f"vllm ({best['label']}) / hf tokens/s {best['ratio']:.2f}x (target >= 1.5x) -> "
          f"{'PASS' if best['ratio'] >= 1.5 else 'FAIL'}")
    return {
        "model": args.engine_model, "prompts": len(texts), "cot": True, "max_new_tokens": args.engine_max_new_tokens,
        "hf_batch": args.batch, "hf_threads": torch.get_num_threads(),
        "hf": {"seconds": t_hf, "tokens": sum(n_hf), "tokens_per_s": tps_hf},
        "lengths_hf": {"min": min(n_hf), "median": sorted(n_hf)[len(n_hf) // 2], "max": max(n_hf)},
        "vllm": runs, "ratio": best["ratio"], "target": 1.5, "gpu": "not measured here",
    }

if __name__ == "__main__":
    raise SystemExit(main())
