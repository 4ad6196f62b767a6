"""Train the decision classifier under Ray Train.

    presafe classifier train --config jobs/configs/classifier_quickstart.yaml [key=value ...]

Reads top to bottom: `load_splits` (data) -> `ClassifierTrainer` (plain torch: model,
optimizer, `loss_step`, epochs, validation; testable without Ray) ->
`train_loop_per_worker` (the Ray Train shell: one trainer per worker, a report per
epoch, a checkpoint whenever validation improves) -> `train_classifier` (the driver:
TorchTrainer, then export of the best checkpoint with test metrics, atomically).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from jobs.classifier.config import BalanceConfig, ClassifierDataConfig, ClassifierJobConfig
from jobs.classifier.hard_negatives import mine_hard_negatives
from jobs.classifier.metrics import choose_threshold, grouped_metrics
from jobs.artifacts import publish_dir
from jobs.classifier.model import (META, DecisionClassifier, encode, load_backbone, pad_batch, save_classifier, score,
                                   score_logits)
from jobs.config import from_dict, to_dict
from jobs.data.readers import DataSource, read_examples, read_prompts
from jobs.data.records import COMPLY, LABEL_NAMES, REFUSE, Example
from jobs.data.splits import _rank, split_by_seed, split_by_value
from jobs.errors import DataError, PresafeError
from jobs.optim import warmup_linear_decay
from jobs.scale import ensure_process_group

log = logging.getLogger("presafe.classifier")


@dataclass
class ClassifierData:
    train: list[Example]
    validation: list[Example]
    test: list[Example]


def load_splits(cfg: ClassifierDataConfig, pair_input: str = "response") -> ClassifierData:
    """Read every source and split: explicit validation/test sources win; otherwise a
    held-out column value becomes the test set, and the rest is split by seed with rows
    of the same prompt kept together. Rows of `exclude` are dropped first, then the
    prompt-only rows are class-balanced (`balance`). Augmented rows (swapped prompts,
    first sentences, built-in phrasings) and hard negatives join the training split only.
    `pair_input` is the model's (`model.pair_input`): prompts are swapped only for a model
    that reads them."""
    rows = excluded([ex for src in cfg.sources for ex in read_examples(src)], cfg.exclude)
    val = [ex for src in cfg.validation for ex in read_examples(src)]
    test = [ex for src in cfg.test for ex in read_examples(src)]
    pool = rows  # every prompt-only row, before balancing: where hard negatives are mined
    if cfg.balance is not None:
        rows = balance_prompt_only(rows, cfg.balance, cfg.seed)
    if not cfg.prompt_only:
        rows, val, test = ([e for e in part if e.is_pair] for part in (rows, val, test))
    if cfg.holdout_column:
        rows, held = split_by_value(rows, lambda e: str(e.meta.get(cfg.holdout_column, "")), cfg.holdout_value)
        test = test + held
    fractions = (
        1 - (0 if val else cfg.val_fraction) - (0 if test else cfg.test_fraction),
        0 if val else cfg.val_fraction,
        0 if test else cfg.test_fraction,
    )
    train, v, t = split_by_seed(rows, fractions, cfg.seed, group=lambda e: e.group)
    if not train:
        raise DataError("no training rows after splitting (check data.sources and the split fractions)")
    if len({e.label for e in train}) < 2:  # the user's rows, before any built-in ones join
        raise DataError("the training rows hold only one label; a decision classifier needs both refuse and comply rows")
    extra = []
    if cfg.swap_prompts and pair_input == "prompt_and_response":
        extra += swapped_prompt_pairs(train, cfg.seed)
    if cfg.first_sentences:
        extra += first_sentence_pairs(train)
    if cfg.builtin_phrasings and not any(s.format == "builtin" and s.path == "builtin:decisions" for s in cfg.sources):
        builtin = read_examples(DataSource(path="builtin:decisions", format="builtin"))
        extra += [e for e in builtin if e.is_pair]  # pairs only: prompt-only rows come from the user's data
    held_prompts = {e.prompt for e in (val or v) + (test or t) if not e.is_pair}
    if cfg.hard_negatives and cfg.prompt_only:
        extra += [e for e in hard_negative_rows(cfg.hard_negatives, cfg.exclude) if e.prompt not in held_prompts]
    if cfg.mined_hard_negatives is not None and cfg.prompt_only:
        mined, markers = mine_hard_negatives(pool, train + extra, held_prompts, cfg.mined_hard_negatives, cfg.seed)
        log.info("mined %d hard negatives with %d marker words (%s, ...)", len(mined), len(markers),
                 ", ".join(markers[:12]))
        extra += mined
    data = ClassifierData(train + extra, val or v, test or t)
    if not data.validation:
        raise DataError("no validation rows: raise data.val_fraction or give data.validation sources")
    return data


def excluded(rows: list[Example], exclude: dict[str, list[str]]) -> list[Example]:
    """`rows` without those whose source (key `source`) or meta[key] is listed in `exclude`;
    a key `<source>.<meta key>` (`xstest.type`) applies to that source's rows only."""
    if not exclude:
        return rows

    def value(e: Example, key: str) -> str | None:
        if key == "source":
            return e.source
        if "." in key:
            source, key = key.rsplit(".", 1)
            if e.source != source:
                return None
        return str(e.meta.get(key, ""))

    return [e for e in rows if not any(value(e, k) in set(vs) for k, vs in exclude.items())]


def hard_negative_rows(sources: list[DataSource], exclude: dict[str, list[str]] | None = None) -> list[Example]:
    """Prompt-only rows of prompt sets (labelled by their harmful flag), marked
    meta["hard_negative"]; meta["type"] is the set's category (an XSTest type)."""
    out = []
    for src in sources:
        for p in read_prompts(src):
            if p.harmful is None:
                raise DataError(f"{src.path}: hard negatives need `harmful: false` (or a named prompt set)")
            out.append(Example(p.prompt, None, REFUSE if p.harmful else COMPLY, p.source, group=p.prompt,
                               meta={"harmful": p.harmful, "type": p.category, "hard_negative": True}))
    return excluded(out, exclude or {})


def balance_prompt_only(rows: list[Example], cfg: BalanceConfig, seed: int) -> list[Example]:
    """Pairs unchanged; of the prompt-only rows, r refuse and c = round(ratio * r) comply
    rows, r as large as both classes (and max_per_class) allow. Which rows: the first of
    each source in a seeded hash order, so the draw is the same on every machine and a
    row's fate does not change when rows are added to another source."""
    pairs = [e for e in rows if e.is_pair]
    by_class: dict[int, list[Example]] = {REFUSE: [], COMPLY: []}
    for e in rows:
        if not e.is_pair:
            by_class[e.label].append(e)
    cap = math.inf if cfg.max_per_class is None else cfg.max_per_class
    n_refuse = int(min(len(by_class[REFUSE]), cap, len(by_class[COMPLY]) / cfg.ratio, cap / cfg.ratio) + 1e-9)
    n_comply = min(len(by_class[COMPLY]), round(cfg.ratio * n_refuse))
    kept = []
    for label, n in ((REFUSE, n_refuse), (COMPLY, n_comply)):
        groups: dict[str, list[Example]] = {}
        for e in by_class[label]:
            groups.setdefault(e.source if cfg.by_source else "", []).append(e)
        for name, quota in _spread({k: len(g) for k, g in groups.items()}, n).items():
            order = sorted(groups[name], key=lambda e: _rank(f"{e.source}:{e.group}:{e.prompt}", seed))
            kept += order[:quota]
    keep = {id(e) for e in kept}
    return pairs + [e for e in rows if not e.is_pair and id(e) in keep]


def _spread(sizes: dict[str, int], n: int) -> dict[str, int]:
    """n rows over groups of these sizes as evenly as possible (water-filling: a group
    smaller than its share gives all it has, the rest is shared by the others)."""
    quota = {k: 0 for k in sizes}
    left, open_groups = min(n, sum(sizes.values())), sorted(sizes)
    while left > 0 and open_groups:
        share = left // len(open_groups)
        if share == 0:  # fewer rows left than groups: one more each, in name order
            for k in open_groups[:left]:
                quota[k] += 1
            break
        for k in open_groups:
            take = min(share, sizes[k] - quota[k])
            quota[k] += take
            left -= take
        open_groups = [k for k in open_groups if quota[k] < sizes[k]]
    return quota


def swapped_prompt_pairs(rows: list[Example], seed: int) -> list[Example]:
    """For each pair, a copy whose prompt comes from the other kind of prompt (harmful <->
    benign, where known) with the label kept. In real data harmful prompts are nearly
    always refused, so without these rows a classifier learns to guess the decision from
    the prompt and misreads a model that complies with a harmful request."""
    rng = random.Random(seed)
    prompts = {True: [], False: [], None: []}
    for e in rows:
        if not e.is_pair:
            prompts[e.meta.get("harmful")].append(e.prompt)
    everything = [p for group in prompts.values() for p in group]
    out = []
    for e in rows:
        if not e.is_pair:
            continue
        harmful = e.meta.get("harmful")
        pool = prompts[not harmful] if harmful is not None and prompts[not harmful] else everything
        if pool:
            out.append(Example(rng.choice(pool), e.response, e.label, e.source, group=e.group,
                               meta={**e.meta, "swapped_prompt": True}))
    return out


def first_sentence(text: str) -> str:
    """The text up to its first sentence end (. ! ? then a space) or line break."""
    text = text.strip()
    m = re.search(r"[.!?](?=\s|$)|\n", text)
    return text[: m.end()].strip() if m else text


def first_sentence_pairs(rows: list[Example], min_chars: int = 8, max_share: float = 0.6) -> list[Example]:
    """For each pair (not an augmented copy) whose first sentence is at least `min_chars`
    long and under `max_share` of the response, a copy answering with that sentence
    alone, label kept."""
    out = []
    for e in rows:
        if not e.is_pair or e.meta.get("swapped_prompt"):
            continue
        head = first_sentence(e.response)
        if min_chars <= len(head) < max_share * len(e.response.strip()):
            out.append(Example(e.prompt, head, e.label, e.source, group=e.group, meta={**e.meta, "first_sentence": True}))
    return out


def fingerprint(examples: list[Example]) -> str:
    """sha256 of the training rows (text and label), recorded in meta.json."""
    h = hashlib.sha256()
    for e in examples:
        h.update(json.dumps([e.prompt, e.response, e.label]).encode())
    return h.hexdigest()


class ClassifierTrainer:
    """One worker's model, optimizer and loop. Plain torch: no Ray in here."""

    def __init__(self, cfg: ClassifierJobConfig, train: list[Example], validation: list[Example],
                 rank: int = 0, world_size: int = 1, device: str | None = None, show_progress: bool = True):
        self.cfg, self.rank, self.world_size = cfg, rank, world_size
        self.device = torch.device(device or ("cuda" if cfg.scale.use_gpu and torch.cuda.is_available() else "cpu"))
        torch.manual_seed(cfg.train.seed)
        self.tokenizer, model = load_backbone(cfg.model.backbone)
        self.model = model.to(self.device)
        self.show_progress = show_progress and rank == 0
        m = cfg.model
        self.train_rows = encode(self.tokenizer, [e.prompt for e in train], [e.response for e in train],
                                 m.max_length, m.pair_input, m.prompt_truncation)
        self.train_labels = [e.label for e in train]
        self.val = validation
        self.val_rows = encode(self.tokenizer, [e.prompt for e in validation], [e.response for e in validation],
                               m.max_length, m.pair_input, m.prompt_truncation)
        self.steps_per_epoch = max(1, len(self.train_rows) // (cfg.train.batch_size * world_size))
        total = self.steps_per_epoch * cfg.train.epochs
        warmup = int(cfg.train.warmup_ratio * total)
        no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight")
        groups = [
            {"params": [p for n, p in self.model.named_parameters() if not n.endswith(no_decay)],
             "weight_decay": cfg.train.weight_decay},
            {"params": [p for n, p in self.model.named_parameters() if n.endswith(no_decay)], "weight_decay": 0.0},
        ]
        self.optimizer = torch.optim.AdamW(groups, lr=cfg.train.learning_rate)
        self.scheduler = warmup_linear_decay(self.optimizer, total, warmup)
        self.engine = None
        self.ddp = None
        if cfg.scale.deepspeed is not None:
            self._init_deepspeed()
        elif world_size > 1:
            self.ddp = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device] if self.device.type == "cuda" else None
            )

    def _init_deepspeed(self) -> None:
        import deepspeed

        ensure_process_group()
        ds = dict(self.cfg.scale.deepspeed)
        ds.setdefault("train_micro_batch_size_per_gpu", self.cfg.train.batch_size)
        ds.setdefault("gradient_accumulation_steps", 1)
        ds.setdefault("gradient_clipping", self.cfg.train.grad_clip)
        ds.setdefault("train_batch_size", ds["train_micro_batch_size_per_gpu"] * ds["gradient_accumulation_steps"]
                      * self.world_size)
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=self.model, optimizer=self.optimizer, lr_scheduler=self.scheduler, config=ds
        )

    def loss_step(self, rows: list[list[int]], labels: list[int]) -> torch.Tensor:
        """Mean cross-entropy over the batch of token rows (forward + loss)."""
        batch = {k: v.to(self.device) for k, v in pad_batch(rows, self.tokenizer.pad_token_id).items()}
        forward = self.engine or self.ddp or self.model
        logits = forward(**batch).logits.float()  # [batch, 2]
        return F.cross_entropy(logits, torch.tensor(labels, device=self.device))

    def _batches(self, epoch: int):
        # Same permutation on every rank (seeded by epoch), then a strided shard; every
        # rank gets the same number of batches so collective ops never wait forever.
        g = torch.Generator().manual_seed(self.cfg.train.seed * 1000 + epoch)
        perm = torch.randperm(len(self.train_rows), generator=g).tolist()
        shard = perm[self.rank :: self.world_size]
        bs = self.cfg.train.batch_size
        for step in range(self.steps_per_epoch):
            idx = shard[step * bs : (step + 1) * bs]
            if idx:
                yield [self.train_rows[i] for i in idx], [self.train_labels[i] for i in idx]

    def train_epoch(self, epoch: int) -> dict:
        self.model.train()
        losses, seen, start = [], 0, time.perf_counter()
        bar = tqdm(self._batches(epoch), total=self.steps_per_epoch, desc=f"classifier epoch {epoch}/{self.cfg.train.epochs}",
                   disable=not self.show_progress, file=sys.stderr, mininterval=1.0, dynamic_ncols=True)
        for rows, labels in bar:
            loss = self.loss_step(rows, labels)
            if self.engine is not None:
                self.engine.backward(loss)
                self.engine.step()
            else:
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip)
                self.optimizer.step()
                self.scheduler.step()
            losses.append(loss.item())
            seen += len(rows)
            bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.4f}")
        bar.close()
        elapsed = time.perf_counter() - start
        return {"train_loss": sum(losses) / max(1, len(losses)), "train_rows_per_s": seen * self.world_size / max(elapsed, 1e-9)}

    def validate(self) -> tuple[dict, tuple[float, float], list[float]]:
        """(metrics by row kind, (pair threshold, prompt-only threshold), p_refuse per row).
        Each kind's threshold is chosen on its own validation rows (0.5 when they are
        fewer than train.threshold_min_rows)."""
        probs = score(self.model, self.tokenizer, self.val_rows, self.cfg.train.eval_batch_size, self.device)
        labels = [e.label for e in self.val]
        pair = [e.is_pair for e in self.val]
        thresholds = tuple(
            choose_threshold([p for p, k in zip(probs, pair) if k == kind], [y for y, k in zip(labels, pair) if k == kind],
                             self.cfg.train.threshold_metric, self.cfg.train.threshold_smoothing,
                             self.cfg.train.threshold_min_rows)
            for kind in (True, False)
        )
        metrics = grouped_metrics(probs, labels, pair, *thresholds)
        eps = 1e-6
        metrics["all"]["loss"] = -sum(math.log(max(p if y else 1 - p, eps)) for p, y in zip(probs, labels)) / len(labels)
        return metrics, thresholds, probs

    def save(self, path: Path, meta: dict) -> None:
        """Model, tokenizer and meta.json; meta always says how inputs were encoded."""
        m = self.cfg.model
        inputs = {"max_length": m.max_length, "pair_input": m.pair_input, "prompt_truncation": m.prompt_truncation,
                  "prompt_scan": m.prompt_scan}
        save_classifier(self.model, self.tokenizer, {**meta, **inputs}, path)


def _better(metrics: dict, best: tuple | None, key: str) -> tuple[bool, tuple]:
    """Compare epochs by (select metric, -validation loss): AUROC often saturates at 1.0 on
    easy validation sets, and then the better-calibrated later epoch should win."""
    value = metrics["all"].get(key)
    score = (-1.0 if value is None else float(value), -metrics["all"]["loss"])
    return (best is None or score > best), score


def train_loop_per_worker(args: dict) -> dict | None:
    """Ray Train entry point: every rank trains; rank 0 validates, keeps the best epoch as
    the latest reported checkpoint. Every rank reports once per epoch."""
    import ray.train
    import ray.train.torch

    cfg = from_dict(ClassifierJobConfig, args["config"])
    data: ClassifierData = args["data"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = str(ray.train.torch.get_device()) if cfg.scale.use_gpu else "cpu"
    trainer = ClassifierTrainer(cfg, data.train, data.validation, rank, world, device=device)
    scratch = Path(args["scratch_dir"])
    best, best_dir, history = None, None, []
    for epoch in range(1, cfg.train.epochs + 1):
        stats = trainer.train_epoch(epoch)
        report = {"epoch": epoch, **stats}
        checkpoint = None
        if rank == 0:
            metrics, (threshold, prompt_threshold), _ = trainer.validate()
            improved, value = _better(metrics, best, cfg.train.select_metric)
            report.update({f"val_{k}": v for k, v in metrics["all"].items() if isinstance(v, (int, float))})
            report["val_pairs_accuracy"] = metrics["pairs"].get("accuracy")
            report["val_prompt_only_accuracy"] = metrics["prompt_only"].get("accuracy")
            history.append({"epoch": epoch, **stats, "validation": metrics})
            print(f"[classifier] epoch {epoch}: train_loss={stats['train_loss']:.4f} "
                  f"val_{cfg.train.select_metric}={value[0]:.4f} val_loss={-value[1]:.4f} val_accuracy={metrics['all']['accuracy']:.4f} "
                  f"thresholds pair={threshold:.3f} prompt={prompt_threshold:.3f}{' (best)' if improved else ''}", flush=True)
            if improved:
                best = value
                meta = {
                    "presafe": "classifier",
                    "world_size": world,
                    "backbone": cfg.model.backbone,
                    "label_map": {str(k): v for k, v in LABEL_NAMES.items()},
                    "threshold": threshold,
                    "prompt_threshold": prompt_threshold,
                    "epoch": epoch,
                    "select_metric": cfg.train.select_metric,
                    "metrics": {"validation": metrics},
                    "history": history,
                    "data": {"fingerprint": fingerprint(data.train), "train_rows": len(data.train),
                             "validation_rows": len(data.validation), "test_rows": len(data.test),
                             "hard_negative_rows": sum(bool(e.meta.get("hard_negative")) for e in data.train),
                             "mined_hard_negative_rows": sum(bool(e.meta.get("mined")) for e in data.train)},
                    "config": to_dict(cfg),
                }
                path = Path(tempfile.mkdtemp(prefix=f"epoch{epoch}.", dir=scratch))
                trainer.save(path, meta)
                best_dir = str(path)
                checkpoint = ray.train.Checkpoint.from_directory(best_dir)
        ray.train.report(report, checkpoint=checkpoint)
    # Local mode (num_workers=0) keeps only the last report's checkpoint, which may be
    # None; the driver then reads the best folder from this return value.
    return {"best_dir": best_dir}


def train_classifier(cfg: ClassifierJobConfig) -> Path:
    """Run the job and publish `<output_dir>` with the best epoch's model and meta.json
    (validation and test metrics). Returns the output folder."""
    from ray.train import CheckpointConfig, RunConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from jobs.scale import train_kwargs

    output = Path(cfg.output_dir).resolve()
    data = load_splits(cfg.data, cfg.model.pair_input)
    print(f"[classifier] rows: train={len(data.train)} validation={len(data.validation)} test={len(data.test)} "
          f"backbone={cfg.model.backbone} workers={cfg.scale.num_workers}", flush=True)
    output.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{output.name}.work.", dir=output.parent))
    try:
        ray_kwargs = train_kwargs(cfg.scale, "scale", str(output.parent / ".ray_results"))
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config={"config": to_dict(cfg), "data": data, "scratch_dir": str(scratch)},
            scaling_config=ray_kwargs["scaling_config"],
            torch_config=TorchConfig(backend=cfg.scale.resolved_backend),
            run_config=RunConfig(name=f"classifier-{output.name}-{int(time.time())}",
                                 storage_path=ray_kwargs["storage_path"],
                                 storage_filesystem=ray_kwargs["storage_filesystem"],
                                 checkpoint_config=CheckpointConfig(num_to_keep=1)),
        )
        result = trainer.fit()
        if cfg.scale.num_workers == 0 and (result.return_value or {}).get("best_dir"):
            from ray.train import Checkpoint

            result.checkpoint = Checkpoint.from_directory(result.return_value["best_dir"])
        if result.checkpoint is None:
            raise PresafeError("training finished without a checkpoint (no epoch produced a validation score)")
        staged = scratch / "final"
        with result.checkpoint.as_directory() as d:
            shutil.copytree(d, staged)
        meta = json.loads((staged / META).read_text())
        if cfg.train.calibrate:
            meta = calibrate_saved(staged, meta, data.validation, cfg.train.threshold_min_rows,
                                   cfg.train.eval_batch_size)
        if data.test:
            clf = DecisionClassifier.load(staged)
            probs = clf.predict_proba([e.prompt for e in data.test], [e.response for e in data.test])
            meta["metrics"]["test"] = grouped_metrics(probs, [e.label for e in data.test],
                                                      [e.is_pair for e in data.test], clf.threshold, clf.prompt_threshold)
        (staged / META).write_text(json.dumps(meta, indent=2, default=str))
        publish_dir(staged, output)
        return output
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def calibrate_saved(folder: Path, meta: dict, validation: list[Example], min_rows: int = 50,
                    batch_size: int = 64) -> dict:
    """Fit the temperatures of the classifier in `folder` on the validation rows, map its
    thresholds through them (the decisions stay the same), write reliability.png there
    and return meta with `calibration` (per kind: temperature, ECE before and after, n)
    and the thresholds it had before as `*_uncalibrated`."""
    from jobs.classifier.calibration import calibrate_kinds, map_threshold, reliability_plot, sigmoid

    clf = DecisionClassifier.load(folder, device="cpu")  # meta.json without calibration: T = 1
    encoded = encode(clf.tokenizer, [e.prompt for e in validation], [e.response for e in validation],
                     clf.max_length, clf.pair_input, clf.prompt_truncation)
    z = score_logits(clf.model, clf.tokenizer, encoded, batch_size, clf.device)
    labels, pair = [e.label for e in validation], [e.is_pair for e in validation]
    kinds = calibrate_kinds(z, labels, pair, min_rows)
    meta = {**meta, "calibration": {"method": "temperature", "fitted_on": "validation", "ece_bins": 15, **kinds},
            "threshold_uncalibrated": meta["threshold"], "prompt_threshold_uncalibrated": meta["prompt_threshold"],
            "threshold": map_threshold(meta["threshold"], kinds["pairs"]["temperature"]),
            "prompt_threshold": map_threshold(meta["prompt_threshold"], kinds["prompt_only"]["temperature"])}
    curves = {}
    for kind, is_kind in (("pairs", True), ("prompt_only", False)):
        zk = [v for v, k in zip(z, pair) if k == is_kind]
        yk = [y for y, k in zip(labels, pair) if k == is_kind]
        t = kinds[kind]["temperature"]
        curves[f"{kind}, T=1"] = (sigmoid(zk).tolist(), yk)
        curves[f"{kind}, T={t:.2f}"] = (sigmoid(zk, t).tolist(), yk)
    reliability_plot(curves, folder / "reliability.png", "validation: p_refuse before and after temperature scaling")
    (folder / META).write_text(json.dumps(meta, indent=2, default=str))
    for kind, c in kinds.items():
        logging.getLogger("presafe.classifier").info(
            "calibration %s: T=%.3f ECE %s -> %s (n=%d)", kind, c["temperature"], c["ece_before"], c["ece_after"], c["n"])
    return meta


def evaluate_classifier(model_dir: str | Path, examples: list[Example], batch_size: int = 64) -> dict:
    """Metrics of a saved classifier on labelled rows, at its saved threshold, for all rows,
    pairs and prompt-only rows (plus threshold-free AUROC in each)."""
    clf = DecisionClassifier.load(model_dir)
    probs = clf.predict_proba([e.prompt for e in examples], [e.response for e in examples], batch_size)
    return grouped_metrics(probs, [e.label for e in examples], [e.is_pair for e in examples], clf.threshold,
                           clf.prompt_threshold)

