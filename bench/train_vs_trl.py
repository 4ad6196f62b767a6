"""Training throughput: presafe's alignment step against TRL's SFTTrainer on the same
model (SmolLM2-135M), LoRA config and data (prompt-completion rows, loss on completions).

    .venv/bin/pip install trl==1.16.0          # bench extra: pip install -e .[bench]
    .venv/bin/python bench/train_vs_trl.py [--steps 6] [--batch 4]

presafe runs with lambda=0.2 (its full loss, auxiliary term included) and lambda=0; TRL
runs plain SFT. Both run in this process, one after the other, on the same rows, so the
ratio is measured side by side. Target: presafe tokens/s >= TRL's. Writes
bench/results/train_vs_trl.json.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import common
import torch


def presafe_run(model_name: str, rows, steps: int, batch: int, weight: float) -> dict:
    from jobs.align.train import AlignTrainer
    from jobs.config import from_dict
    from jobs.pipeline_config import PipelineConfig

    cfg = from_dict(PipelineConfig, {
        "storage_path": tempfile.mkdtemp(), "model": model_name, "prompts": {"harmful": [{"path": "x", "format": "advbench"}]},
        "align": {"aux": {"weight": weight}, "lora": {"r": 16, "alpha": 32, "dropout": 0.05},
                  "train": {"max_steps": steps, "batch_size": batch, "max_length": 512, "warmup_ratio": 0.0}}})
    trainer = AlignTrainer(cfg, rows, show_progress=False)
    stamps, tokens = [], []
    for step in range(steps):
        batch_t = trainer.micro_batch(step)
        out = trainer.loss_step(batch_t)
        trainer.engine.backward(out["loss"])
        trainer.engine.step()
        stamps.append(time.perf_counter())
        tokens.append(int(batch_t["attention_mask"].sum()))
    # Step 1 is warm-up: measure from its end to the last step's end.
    return {"tokens_per_s": sum(tokens[1:]) / (stamps[-1] - stamps[0]), "steps": steps,
            "tokens_per_step": sum(tokens) / len(tokens)}


def trl_run(model_name: str, rows, steps: int, batch: int) -> dict:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from jobs.models.embedded import resolve_model
    from jobs.templates import render_prompt

    path = resolve_model(model_name)
    tok = AutoTokenizer.from_pretrained(path)
    data = Dataset.from_list([{"prompt": render_prompt(tok, r.prompt, cot=True).text,
                               "completion": r.completion + tok.eos_token} for r in rows])
    stamps = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            stamps.append(time.perf_counter())

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    args = SFTConfig(output_dir=tempfile.mkdtemp(), max_steps=steps, per_device_train_batch_size=batch,
                     learning_rate=2e-4, logging_steps=10**6, save_strategy="no", report_to=[], use_cpu=True,
                     bf16=False, max_length=512, packing=False, dataloader_num_workers=0, lr_scheduler_type="constant",
                     completion_only_loss=True, eval_strategy="no")
    peft = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                      task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tok, peft_config=peft,
                         callbacks=[Clock()])
    lengths = [len(x) for x in trainer.train_dataset["input_ids"]]
    tokens_per_step = sum(lengths) / len(lengths) * batch
    trainer.train()
    return {"tokens_per_s": tokens_per_step * (len(stamps) - 1) / (stamps[-1] - stamps[0]), "steps": len(stamps),
            "tokens_per_step": tokens_per_step}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--model", default="embedded:smollm2-135m-instruct")
    args = ap.parse_args()
    try:
        import trl  # noqa: F401
    except ImportError:
        print("TRL is a bench extra: .venv/bin/pip install -e '.[bench]'")
        return 2
    # All rows compliant-style and of near-equal length, so every batch has the same
    # token count whichever order a trainer draws them in.
    rows = [r for r in common.align_rows(4 * args.steps * args.batch) if r.decision == "comply"][: args.steps * args.batch]
    results = {
        "presafe lambda=0.2": presafe_run(args.model, rows, args.steps, args.batch, 0.2),
        "trl SFTTrainer": trl_run(args.model, rows, args.steps, args.batch),
        "presafe lambda=0": presafe_run(args.model, rows, args.steps, args.batch, 0.0),
    }
    trl_tps = results["trl SFTTrainer"]["tokens_per_s"]
    table = [[name, r["tokens_per_s"], r["tokens_per_step"], r["tokens_per_s"] / trl_tps] for name, r in results.items()]
    print(common.table(["trainer", "tokens/s", "tokens/step", "vs TRL"], table))
    ratio = results["presafe lambda=0.2"]["tokens_per_s"] / trl_tps
    print(f"presafe (lambda=0.2) / TRL = {ratio:.2f} (target >= 1.0) -> {'PASS' if ratio >= 1.0 else 'FAIL'}")
    common.write_result("train_vs_trl", {"model": args.model, "steps": args.steps, "batch": args.batch,
                                         "results": results, "ratio": ratio, "target": 1.0})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
