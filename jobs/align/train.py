"""Align the LRM: LoRA + the pre-CoT auxiliary loss, under Ray Train and DeepSpeed.

    presafe stage align --config jobs/configs/smoke.yaml [align.aux.weight=0 align.output_name=adapter_sft]

Reads top to bottom: `AlignTrainer` (plain objects: model + LoRA + head in one module, a
DeepSpeed engine even on one CPU process, `loss_step`, `fit` with logging and
checkpoints) -> `train_loop_per_worker` (the Ray Train shell: resume from the latest
checkpoint, report metrics and checkpoints) -> `run_align` (the driver: TorchTrainer,
then the adapter published atomically, optionally merged).
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm.auto import tqdm

from jobs import events
from jobs.align.data import AlignRow, build_example, collate, epoch_order, read_rows, refusal_share_counts
from jobs.align.model import PreCoTModel, add_lora, check_against_model, save_head
from jobs.artifacts import publish_dir
from jobs.config import from_dict, to_dict
from jobs.errors import DataError, PresafeError
from jobs.optim import warmup_linear_decay
from jobs.pipeline_config import PipelineConfig
from jobs.scale import ensure_process_group, train_kwargs

STATE = "state.json"
EXPORT = "export"
META = "meta.json"

ReportFn = Callable[[dict, "Path | None"], None]


class AlignTrainer:
    """One worker's share of the alignment. Plain torch + DeepSpeed; no Ray in here."""

    def __init__(self, cfg: PipelineConfig, rows: list[AlignRow], rank: int = 0, world_size: int = 1,
                 checkpoint_root: Path | None = None, show_progress: bool = True):
        import deepspeed
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from jobs.models.embedded import resolve_model

        self.cfg, self.rank, self.world_size = cfg, rank, world_size
        a = cfg.align
        layers = check_against_model(a, cfg.model)
        path = resolve_model(cfg.model)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        torch.manual_seed(a.train.seed)
        base = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, cfg.dtype) if cfg.dtype != "auto" else "auto")
        if a.train.gradient_checkpointing:
            # Recompute activations in backward: what lets 7B/8B models fit long CoT targets.
            base.config.use_cache = False
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            base.enable_input_require_grads()
        self.model = PreCoTModel(add_lora(base, a.lora), layers, a.aux.weight, a.aux.detach, a.aux.pooling,
                                 a.aux.head, a.aux.positions)
        self.layers = layers
        hard = a.aux.target == "hard"
        built = [build_example(self.tokenizer, r, cfg.template, a.train.max_length, hard, a.train.decision_tokens)
                 for r in rows]
        self.examples = [e for e in built if e is not None]
        self.refuse = [r.decision == "refuse" for r, e in zip(rows, built) if e is not None]
        self.skipped = len(built) - len(self.examples)
        if not self.examples:
            raise DataError(f"all {len(built)} targets are longer than align.train.max_length="
                            f"{a.train.max_length} tokens (prompt + target + eos); they are dropped, never "
                            "truncated: raise max_length or shorten the targets (targets.self_generation)")
        self.epoch_size = sum(refusal_share_counts(sum(self.refuse), len(self.refuse) - sum(self.refuse),
                                                   a.train.refusal_share))
        per_rank = self.epoch_size // world_size
        self.micro_per_epoch = per_rank // a.train.batch_size
        if self.micro_per_epoch == 0:
            raise DataError(f"{len(self.examples)} usable targets are fewer than one batch "
                            f"({a.train.batch_size} x {world_size} workers)")
        steps_per_epoch = max(1, self.micro_per_epoch // a.train.grad_accum)
        self.total_steps = a.train.max_steps or steps_per_epoch * a.train.epochs
        self.checkpoint_root = checkpoint_root
        self.show_progress = show_progress and rank == 0
        self.resumed_from_step = 0
        self.resume_source: str | None = None  # "ray" (Ray Train's storage) or "local", when resumed
        self.micro_done = self.tokens_done = 0  # this process's work (not counting before a resume)
        # checkpoints saved, the time to write their state, and the time to hand them to Ray Train
        self.checkpoints, self.checkpoint_save_seconds, self.checkpoint_report_seconds = 0, 0.0, 0.0

        lora_params = [p for n, p in self.model.lm.named_parameters() if p.requires_grad]
        groups = [{"params": lora_params, "lr": a.train.learning_rate, "weight_decay": a.train.weight_decay},
                  {"params": list(self.model.head.parameters()), "lr": a.train.head_learning_rate, "weight_decay": 0.0}]
        optimizer = torch.optim.AdamW(groups)
        scheduler = warmup_linear_decay(optimizer, self.total_steps, int(a.train.warmup_ratio * self.total_steps))
        ds = dict(a.scale.deepspeed or {"zero_optimization": {"stage": 0}})
        ds.setdefault("train_micro_batch_size_per_gpu", a.train.batch_size)
        ds.setdefault("gradient_accumulation_steps", a.train.grad_accum)
        ds.setdefault("gradient_clipping", a.train.grad_clip)
        ds.setdefault("train_batch_size", a.train.batch_size * a.train.grad_accum * world_size)
        ds.setdefault("steps_per_print", 10**9)
        self.zero_stage = int((ds.get("zero_optimization") or {}).get("stage", 0))
        ensure_process_group()
        self.engine, _, _, _ = deepspeed.initialize(model=self.model, optimizer=optimizer, lr_scheduler=scheduler,
                                                    config=ds)

    # -- data ---------------------------------------------------------------------------

    def micro_batch(self, index: int) -> dict[str, torch.Tensor]:
        """Micro-batch `index` of this rank in the run's fixed order: the same permutation
        on every rank (seeded by epoch), then a strided shard."""
        a = self.cfg.align.train
        epoch, within = divmod(index, self.micro_per_epoch)
        g = torch.Generator().manual_seed(a.seed * 1000 + epoch)
        perm = epoch_order(self.refuse, a.refusal_share, g)
        shard = perm[self.rank :: self.world_size]
        idx = shard[within * a.batch_size : (within + 1) * a.batch_size]
        batch = collate([self.examples[i] for i in idx], self.tokenizer.pad_token_id, a.decision_weight,
                        a.decision_temperature)
        return {k: v.to(self.engine.device) for k, v in batch.items()}

    # -- one step -------------------------------------------------------------------------

    def loss_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Forward + loss on one micro-batch (see PreCoTModel.forward)."""
        return self.engine(**batch)

    # -- loop -----------------------------------------------------------------------------

    def fit(self, report: ReportFn, resume_from: Path | None = None) -> Path:
        """Train to total_steps, calling `report(metrics, checkpoint_dir)` every log step,
        every checkpoint and at the end (the final checkpoint holds the export).
        Every rank calls report the same number of times."""
        a = self.cfg.align.train
        step = self.load_state(resume_from) if resume_from is not None else 0
        self.resumed_from_step = step
        if step:
            print(f"[align] resumed from {resume_from} at step {step}/{self.total_steps}", flush=True)
        self.engine.train()
        window = _Window()
        bar = tqdm(total=self.total_steps, initial=step, desc=f"align (lambda={self.cfg.align.aux.weight:g})",
                   disable=not self.show_progress, file=sys.stderr, mininterval=1.0, dynamic_ncols=True)
        start = time.perf_counter()
        while step < self.total_steps:
            for micro in range(a.grad_accum):
                batch = self.micro_batch(step * a.grad_accum + micro)
                out = self.loss_step(batch)
                self.engine.backward(out["loss"])
                self.engine.step()
                window.add(out, batch)
                self.micro_done += 1
                self.tokens_done += int(batch["attention_mask"].sum())
            step += 1
            bar.update(1)
            metrics = None
            if step % a.log_every == 0 or step == self.total_steps:
                metrics = window.flush(step, self.world_size, self.engine.get_lr())
                bar.set_postfix(lm=f"{metrics['lm_loss']:.3f}", aux=f"{metrics['aux_loss']:.3f}")
            ckpt, t0 = None, time.perf_counter()
            if a.checkpoint_every and step % a.checkpoint_every == 0 and step < self.total_steps:
                ckpt = self.save_state(step)
            t1 = time.perf_counter()
            if metrics is not None or ckpt is not None:
                report(metrics or {"step": step}, ckpt)  # with a checkpoint: Ray Train uploads it to its storage
            if ckpt is not None:
                self.checkpoints += 1
                self.checkpoint_save_seconds += t1 - t0
                self.checkpoint_report_seconds += time.perf_counter() - t1
                self.prune_local_checkpoints(keep=2)
        bar.close()
        final = self.export(step, time.perf_counter() - start)
        report({"step": step, "done": True}, final)
        return final

    # -- checkpoints ----------------------------------------------------------------------

    def _checkpoint_dir(self, name: str) -> Path:
        root = self.checkpoint_root or Path(tempfile.mkdtemp(prefix="presafe-align-"))
        path = root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def save_state(self, step: int) -> Path:
        """Everything needed to resume (LoRA, head, optimizer and scheduler state per rank);
        state.json is written last, by rank 0, after every rank has saved."""
        import torch.distributed as dist

        path = self._checkpoint_dir(f"step_{step:07d}")
        self.engine.save_checkpoint(str(path / "ds"), tag="state", client_state={"step": step},
                                    exclude_frozen_parameters=True)
        dist.barrier()
        if self.rank == 0:
            (path / STATE).write_text(json.dumps({"step": step, "total_steps": self.total_steps}))
        dist.barrier()
        return path

    def prune_local_checkpoints(self, keep: int) -> None:
        """Drop all but the newest `keep` local step checkpoints: each was handed to Ray Train
        (copied to its storage, which keeps its own `num_to_keep`) when it was reported, and
        the ranks are never more than one checkpoint apart (the barriers in save_state)."""
        if self.checkpoint_root is None:
            return
        for old in sorted(self.checkpoint_root.glob("step_*"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)

    def load_state(self, path: Path) -> int:
        if (path / EXPORT).is_dir():  # train_loop_per_worker publishes a finished run's export as it is
            raise PresafeError(f"{path} is a finished run's final checkpoint, not one to resume training from")
        _, client = self.engine.load_checkpoint(str(path / "ds"), tag="state", load_module_strict=False)
        return int(client["step"])

    def trainable_state(self) -> tuple[dict, dict]:
        """(LoRA state dict in peft naming, head state dict), full tensors on every rank:
        under ZeRO-3 the trainable parameters are gathered first (saving from rank 0
        alone would write empty, shape-0 tensors)."""
        from peft import get_peft_model_state_dict

        module = self.engine.module
        trainable = [p for p in module.parameters() if p.requires_grad]
        if self.zero_stage == 3:
            import deepspeed

            ctx = deepspeed.zero.GatheredParameters(trainable, modifier_rank=None)
        else:
            ctx = contextlib.nullcontext()
        with ctx:
            lora = {k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(module.lm).items()}
            head = {k: v.detach().cpu().clone() for k, v in module.head.state_dict().items()}
        return lora, head

    def export(self, step: int, seconds: float) -> Path:
        """The final checkpoint: export/ holds the peft adapter, tokenizer, head.safetensors and
        meta.json (written by rank 0; every rank takes part in the gather)."""
        import torch.distributed as dist

        lora, head = self.trainable_state()
        workers = [None] * self.world_size
        dist.all_gather_object(workers, self.worker_record())
        path = self._checkpoint_dir("final")
        if self.rank == 0:
            out = path / EXPORT
            if out.exists():
                shutil.rmtree(out)
            self.engine.module.lm.save_pretrained(out, state_dict=lora)
            self.tokenizer.save_pretrained(out)
            save_head(head, out, self.layers, self.cfg.align.aux.pooling, self.cfg.align.aux.head)
            meta = {
                "presafe": "adapter",
                "base_model": self.cfg.model,
                "steps": step,
                "train_seconds": seconds,
                "world_size": self.world_size,
                "resumed_from_step": self.resumed_from_step,
                "resumed_from": self.resume_source,
                "workers": workers,
                "zero_stage": self.zero_stage,
                "aux_layers": self.layers,
                "aux_weight": self.cfg.align.aux.weight,
                "examples": len(self.examples),
                "skipped_too_long": self.skipped,
                "refusal_examples": sum(self.refuse),
                "epoch_examples": self.epoch_size,
                "config": to_dict(self.cfg),
            }
            (out / META).write_text(json.dumps(meta, indent=2, default=str))
        dist.barrier()
        return path

    def worker_record(self) -> dict:
        """Who trained what: rank, Ray node, host, pid, and the micro-batches and tokens this
        process trained since it (re)started, and the checkpoints it saved: the time to write
        the DeepSpeed state (with the barriers around it) and the time `ray.train.report`
        took to take it (Ray Train copies it to its storage)."""
        import os
        import socket

        node_id = None
        with contextlib.suppress(Exception):  # no Ray here (plain in-process use): no node id
            import ray

            if ray.is_initialized():
                node_id = ray.get_runtime_context().get_node_id()
        return {"rank": self.rank, "node_id": node_id, "host": socket.gethostname(), "pid": os.getpid(),
                "micro_batches": self.micro_done, "tokens": self.tokens_done,
                "checkpoints": self.checkpoints, "checkpoint_save_seconds": round(self.checkpoint_save_seconds, 4),
                "checkpoint_report_seconds": round(self.checkpoint_report_seconds, 4)}


class _Window:
    """Running sums between two log steps."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.lm, self.aux, self.n, self.tokens = 0.0, 0.0, 0, 0
        self.logits, self.signals = [], []
        self.start = time.perf_counter()

    def add(self, out: dict, batch: dict) -> None:
        self.lm += float(out["lm_loss"])
        self.aux += float(out["aux_loss"])
        self.n += 1
        self.tokens += int(batch["attention_mask"].sum())
        self.logits += out["head_logits"].float().cpu().tolist()
        self.signals += batch["signal"].cpu().tolist()

    def flush(self, step: int, world_size: int, lr) -> dict:
        from sklearn.metrics import roc_auc_score

        elapsed = max(time.perf_counter() - self.start, 1e-9)
        probs = [1 / (1 + math.exp(-x)) for x in self.logits]
        labels = [int(s >= 0.5) for s in self.signals]
        metrics = {
            "step": step,
            "lm_loss": self.lm / max(1, self.n),
            "aux_loss": self.aux / max(1, self.n),
            "head_accuracy": sum(int(p >= 0.5) == y for p, y in zip(probs, labels)) / max(1, len(labels)),
            "head_auroc": float(roc_auc_score(labels, probs)) if len(set(labels)) == 2 else None,
            # Every rank processes about as many tokens as this one.
            "tokens_per_s": self.tokens * world_size / elapsed,
            "lr": float(lr[0]) if isinstance(lr, (list, tuple)) else float(lr),
        }
        self.reset()
        return metrics


def latest_local_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint under root (state.json written, or a final export)."""
    if not root.is_dir():
        return None
    final = root / "final" / EXPORT / META
    if final.is_file():
        return root / "final"
    done = sorted(p for p in root.glob("step_*") if (p / STATE).is_file())
    return done[-1] if done else None


def train_loop_per_worker(args: dict) -> dict:
    """Ray Train entry point. Resumes from Ray's latest checkpoint (worker restarts, a rerun
    with the same run name) or, failing that, from the newest complete local checkpoint of
    this training fingerprint (see `training_fingerprint`)."""
    import ray.train

    cfg = from_dict(PipelineConfig, args["config"])
    events.attach_worker(args.get("events", {}))
    rows = [AlignRow(**r) for r in args["rows"]]
    ctx = ray.train.get_context()
    root = Path(args["checkpoint_root"])
    ray_ckpt = ray.train.get_checkpoint()
    if ray_ckpt is not None:
        resume, source = Path(ray_ckpt.to_directory()), "ray"
    else:
        resume, source = latest_local_checkpoint(root), "local"
    if resume is not None and (resume / EXPORT / META).is_file():
        # The run had finished (the driver died before publishing): its export is the result.
        print(f"[align] this run had finished: publishing its final checkpoint ({source}: {resume})", flush=True)
        return {"final_dir": str(resume)}
    trainer = AlignTrainer(cfg, rows, ctx.get_world_rank(), ctx.get_world_size(), checkpoint_root=root)
    trainer.resume_source = source if resume is not None else None

    def report(metrics: dict, checkpoint_dir: Path | None) -> None:
        if ctx.get_world_rank() == 0 and metrics.get("step"):
            stage = f"align:{cfg.align.output_name}"
            events.progress(stage, int(metrics["step"]), trainer.total_steps, "steps")
            if "lm_loss" in metrics:
                events.emit("metrics", stage=stage, metrics=metrics)
        if metrics.get("step") and "lm_loss" in metrics and ctx.get_world_rank() == 0:
            print("[align] " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                        for k, v in metrics.items()), flush=True)
        if checkpoint_dir is None:
            # Metrics alone go to the event log and stdout above, not through Ray Train: its
            # report blocks until the controller has taken the previous one (it polls every
            # ~2 s), which would stall fast steps.
            return
        ray.train.report({k: v for k, v in metrics.items() if v is not None},
                         checkpoint=ray.train.Checkpoint.from_directory(str(checkpoint_dir)),
                         delete_local_checkpoint_after_upload=False)

    final = trainer.fit(report, resume)
    return {"final_dir": str(final)}


def run_align(cfg: PipelineConfig, targets_path: Path | None = None) -> Path:
    """Train and publish `<job_dir>/<align.output_name>/` (peft adapter + head.safetensors + meta.json
    [+ merged/]). Returns that folder."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    job = Path(cfg.job_dir).resolve()
    check_against_model(cfg.align, cfg.model)
    rows = read_rows(targets_path or job / "targets.jsonl")
    a = cfg.align
    out = job / a.output_name
    # Checkpoints belong to one training fingerprint (config + targets): a rerun of the same
    # training resumes from them; a changed config or new targets start afresh.
    fingerprint = training_fingerprint(cfg, rows)
    checkpoints = job / f"{a.output_name}.checkpoints"
    if not cfg.resume:
        shutil.rmtree(checkpoints, ignore_errors=True)
    root = checkpoints / fingerprint
    root.mkdir(parents=True, exist_ok=True)
    run_name = f"align-{cfg.job_id}-{a.output_name}-{fingerprint}"
    if not cfg.resume:  # a fresh Ray Train run too: a reused name would resume its checkpoints
        run_name += f"-{time.strftime('%Y%m%dT%H%M%S')}"
    ray_kwargs = train_kwargs(a.scale, "align.scale", str(job / ".ray"))
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": to_dict(cfg), "rows": [r.__dict__ for r in rows], "checkpoint_root": str(root),
                           "events": events.driver_channel()},
        scaling_config=ray_kwargs["scaling_config"],
        torch_config=TorchConfig(backend=a.scale.resolved_backend),
        run_config=RunConfig(name=run_name, storage_path=ray_kwargs["storage_path"],
                             storage_filesystem=ray_kwargs["storage_filesystem"],
                             failure_config=FailureConfig(max_failures=a.scale.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)),
    )
    result = trainer.fit()
    final = Path((result.return_value or {}).get("final_dir", ""))
    if not (final / EXPORT).is_dir():
        if result.checkpoint is None:
            raise PresafeError("alignment finished without a final checkpoint")
        final = Path(result.checkpoint.to_directory())
    staged = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=job))
    try:
        shutil.copytree(final / EXPORT, staged / "adapter")
        if a.merge:
            merge_adapter(cfg.model, staged / "adapter", staged / "adapter" / "merged", cfg.dtype)
        publish_dir(staged / "adapter", out)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    shutil.rmtree(checkpoints, ignore_errors=True)
    return out


def training_fingerprint(cfg: PipelineConfig, rows: list[AlignRow]) -> str:
    """What the trained weights depend on: the model, template, dtype, the align section
    (not where it is published or whether it is merged) and the targets."""
    import hashlib

    align = to_dict(cfg.align)
    for key in ("output_name", "merge", "ablation"):
        align.pop(key, None)
    for key in ("storage_path", "shared_filesystem", "max_failures"):
        align["scale"].pop(key, None)
    if align["train"].get("refusal_share") is None:  # unset: fingerprints from before the setting stand
        align["train"].pop("refusal_share", None)
    data = {"model": cfg.model, "dtype": cfg.dtype, "template": to_dict(cfg.template), "align": align,
            # An empty prefix is left out, so rows written before recovery rows existed keep their fingerprint.
            "rows": [{k: v for k, v in r.__dict__.items() if k != "prefix" or v} for r in rows]}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]


def merge_adapter(base_name: str, adapter_dir: Path, target: Path, dtype: str = "float32") -> Path:
    """Base + LoRA merged into a plain Hugging Face model folder."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from jobs.models.embedded import resolve_model

    base = AutoModelForCausalLM.from_pretrained(resolve_model(base_name), dtype=getattr(torch, dtype))
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(target)
    AutoTokenizer.from_pretrained(str(adapter_dir)).save_pretrained(target)
    return target
