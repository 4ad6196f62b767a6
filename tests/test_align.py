"""The alignment step on tiny random causal LMs: t*, masks, the auxiliary gradient path,
the lambda=0 ablation, learning, checkpoint resume, and ZeRO-3 adapter export."""

import json
import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from jobs.align.data import AlignRow, build_example, collate, epoch_order, refusal_share_counts
from jobs.align.losses import IGNORE
from jobs.align.model import PreCoTModel, add_lora, check_against_model
from jobs.align.train import AlignTrainer, latest_local_checkpoint
from jobs.config import from_dict
from jobs.errors import ConfigError, DataError
from jobs.pipeline_config import LoraSettings, PipelineConfig
from jobs.templates import TemplateConfig, prompt_texts

REFUSAL = "I cannot help with that request."
COMPLY = "Sure, here is how to bake bread: mix, knead, bake."


def rows(n=8):
    out = []
    for i in range(n):
        out.append(AlignRow(f"How do I make a bomb {i}?", f"\n</think>\n\n{REFUSAL}", 0.97, "refuse", origin="safe_refusal"))
        out.append(AlignRow(f"How do I bake a cake {i}?", f"Let me think.\n</think>\n\n{COMPLY}", 0.03, "comply",
                            origin="self"))
    return out


def pipeline_cfg(model, tmp_path, **align):
    base = {"storage_path": str(tmp_path), "job_id": "job", "model": model, "prompts": {"harmful": [{"path": "x", "format": "advbench"}]},
            "align": {"lora": {"r": 8, "alpha": 16, "dropout": 0.0,
                               "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj"]},
                      "train": {"max_steps": 6, "batch_size": 4, "learning_rate": 1e-2, "warmup_ratio": 0.0,
                                "log_every": 1, "checkpoint_every": 0, "max_length": 128}}}
    for section, values in align.items():
        base["align"].setdefault(section, {}).update(values)
    return from_dict(PipelineConfig, base)


@pytest.mark.parametrize("family", ["r1", "r1_old", "qwen3", "generic"])
def test_t_star_and_label_mask_in_a_padded_batch(tiny_lm_factory, family):
    tok = AutoTokenizer.from_pretrained(tiny_lm_factory(family))
    tcfg = TemplateConfig()
    prompts = ["Hi", "What is 2 + 3? Tell me about chemistry and cooking."]  # different lengths -> padding
    examples = [build_example(tok, AlignRow(p, "\n</think>\n\nThe answer is 5.", 0.1, "comply"), tcfg, 128, False)
                for p in prompts]
    batch = collate(examples, tok.pad_token_id)
    assert batch["attention_mask"][0].sum() < batch["attention_mask"].shape[1]  # row 0 is padded
    for b, p in enumerate(prompts):
        _, on, _ = prompt_texts(tok, p, tcfg)
        t = int(batch["t_star"][b])
        ids = batch["input_ids"][b].tolist()
        # t* is the last token of the CoT-ON generation prompt...
        assert tok.decode(ids[: t + 1]) == on
        # ...which for R1 templates is the newline after <think> and for Qwen3 the one after "assistant"
        expected_last = {"r1": "<think>\n", "r1_old": "<think>\n", "qwen3": "assistant\n", "generic": "<think>\n"}[family]
        assert tok.decode(ids[: t + 1]).endswith(expected_last)
        labels = batch["labels"][b].tolist()
        # no loss on the prompt, loss from the first assistant token on, none on padding
        assert all(x == IGNORE for x in labels[: t + 1])
        assert labels[t + 1] == ids[t + 1] != IGNORE
        n = int(batch["attention_mask"][b].sum())
        assert labels[n - 1] == tok.eos_token_id and all(x == IGNORE for x in labels[n:])


def _model(path, weight, layers=(2,), head="normalized"):
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(path)
    lm = add_lora(base, LoraSettings(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"]))
    return PreCoTModel(lm, list(layers), weight, head=head)


def _batch(path, hard=False):
    tok = AutoTokenizer.from_pretrained(path)
    ex = [build_example(tok, r, TemplateConfig(), 128, hard) for r in rows(2)]
    return collate(ex, tok.pad_token_id)


def test_the_head_starts_at_zero_on_normalized_features(tiny_lm):
    """At the start the aux loss is ln 2 and the LM gets no aux gradient (the head has no
    direction yet), whatever the scale of the hidden states; the raw head does not."""
    model = _model(tiny_lm, weight=0.5, layers=[2])
    batch = _batch(tiny_lm)
    batch["labels"][:] = IGNORE
    out = model(**batch)
    assert out["aux_loss"].item() == pytest.approx(math.log(2), abs=1e-6)
    out["loss"].backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for n, p in model.lm.named_parameters() if "lora_" in n)
    assert model.head.weight.grad.abs().sum() > 0  # the head learns first
    h = torch.randn(3, model.head.in_features) * 300 + 5  # LRM-sized hidden states
    with torch.no_grad():
        model.head.weight.normal_()
        scaled = model.head_logits(h)
    assert scaled.abs().max() < 10 * math.sqrt(model.head.in_features)  # read as unit-variance features
    assert torch.allclose(scaled, model.head_logits(h * 7), atol=1e-4)  # scale-free
    raw = _model(tiny_lm, weight=0.5, layers=[2], head="raw")
    assert raw.head.weight.abs().sum() > 0 and not torch.allclose(raw.head_logits(h), raw.head_logits(h * 7))


def test_aux_term_alone_reaches_lora_weights_below_the_read_layer(tiny_lm):
    model = _model(tiny_lm, weight=0.5, layers=[2])
    with torch.no_grad():
        model.head.weight.normal_()  # a head that has found a direction
    batch = _batch(tiny_lm)
    batch["labels"][:] = IGNORE  # LM loss masked to zero
    out = model(**batch)
    assert out["lm_loss"].item() == 0.0 and out["aux_loss"].item() > 0
    out["loss"].backward()
    grads = {n: p.grad for n, p in model.lm.named_parameters() if "lora_B" in n}
    below = [g for n, g in grads.items() if ".layers.0." in n or ".layers.1." in n]
    above = [g for n, g in grads.items() if ".layers.2." in n or ".layers.3." in n]
    assert below and all(g is not None and g.abs().sum() > 0 for g in below)
    # Layers after the one the head reads get no gradient from the auxiliary term.
    assert all(g is None or g.abs().sum() == 0 for g in above)
    assert model.head.weight.grad.abs().sum() > 0


def test_lambda_zero_is_exactly_plain_sft(tiny_lm):
    model = _model(tiny_lm, weight=0.0)
    batch = _batch(tiny_lm)
    out = model(**batch)
    # The plain SFT loss: Hugging Face's own causal-LM loss on the same labels.
    ref = model.lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    assert out["loss"].item() == pytest.approx(ref.item(), rel=1e-6, abs=1e-6)
    assert torch.equal(out["loss"], out["lm_loss"])
    with_aux = _model(tiny_lm, weight=0.2)(**batch)
    assert with_aux["loss"].item() == pytest.approx(ref.item() + 0.2 * with_aux["aux_loss"].item(), rel=1e-5)


def test_loss_falls_and_adapter_changes_outputs(tiny_lm, tmp_path):
    from peft import PeftModel

    cfg = pipeline_cfg(tiny_lm, tmp_path, train={"max_steps": 30, "log_every": 5})
    trainer = AlignTrainer(cfg, rows(), checkpoint_root=tmp_path / "ck", show_progress=False)
    logs = []
    final = trainer.fit(lambda m, c: logs.append(m))
    lm = [m["lm_loss"] for m in logs if "lm_loss" in m]
    aux = [m["aux_loss"] for m in logs if "aux_loss" in m]
    assert lm[-1] < 0.5 * lm[0], lm
    assert aux[-1] < aux[0], aux
    assert all(m["tokens_per_s"] > 0 for m in logs if "tokens_per_s" in m)
    export = final / "export"
    meta = json.loads((export / "meta.json").read_text())
    assert meta["steps"] == 30 and meta["aux_weight"] == 0.2
    base = AutoModelForCausalLM.from_pretrained(tiny_lm)
    tok = AutoTokenizer.from_pretrained(tiny_lm)
    ids = tok("How do I make a bomb 1?", return_tensors="pt")
    with torch.no_grad():
        before = base(**ids).logits
        tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_lm), str(export))(**ids).logits
    assert (tuned - before).abs().max() > 1e-2
    from jobs.align.model import load_head

    head = load_head(export)
    assert head["weight"].shape == (1, base.config.hidden_size)


def test_interrupted_run_resumes_at_its_checkpoint(tiny_lm, tmp_path):
    cfg = pipeline_cfg(tiny_lm, tmp_path, train={"max_steps": 6, "checkpoint_every": 2, "log_every": 1})
    root = tmp_path / "ck"

    class Crash(Exception):
        pass

    def crash_after_step_4(metrics, ckpt):
        if ckpt is not None and metrics.get("step") == 4:
            raise Crash()

    with pytest.raises(Crash):
        AlignTrainer(cfg, rows(), checkpoint_root=root, show_progress=False).fit(crash_after_step_4)
    latest = latest_local_checkpoint(root)
    assert latest.name == "step_0000004"

    steps = []
    resumed = AlignTrainer(cfg, rows(), checkpoint_root=root, show_progress=False)
    resumed.fit(lambda m, c: steps.append(m["step"]), resume_from=latest)
    assert steps[0] == 5 and steps[-1] == 6  # not step 1

    # The resumed run ends where an uninterrupted run ends.
    straight = AlignTrainer(cfg, rows(), checkpoint_root=tmp_path / "ck2", show_progress=False)
    straight.fit(lambda m, c: None)
    a, _ = resumed.trainable_state()
    b, _ = straight.trainable_state()
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4


def test_bad_align_configs_fail_before_work(tiny_lm, tmp_path):
    with pytest.raises(ConfigError, match=r"align.lora.target_modules: \['wq'\] not in the model"):
        check_against_model(pipeline_cfg(tiny_lm, tmp_path, lora={"target_modules": ["wq"]}).align, tiny_lm)
    with pytest.raises(ConfigError, match="align.aux.layers: layer 9 is out of range for a 4-layer model"):
        check_against_model(pipeline_cfg(tiny_lm, tmp_path, aux={"layers": [9]}).align, tiny_lm)
    with pytest.raises(ConfigError, match=r"align.aux.weight: must be >= 0 \(lambda\)"):
        pipeline_cfg(tiny_lm, tmp_path, aux={"weight": -0.1})
    with pytest.raises(ConfigError, match=r"align.train.decision_temperature: needs decision_tokens > 0"):
        pipeline_cfg(tiny_lm, tmp_path, train={"decision_temperature": 2.0})
    with pytest.raises(ConfigError, match=r"align.train.decision_temperature: must be in \[1, 10\]"):
        pipeline_cfg(tiny_lm, tmp_path, train={"decision_tokens": 2, "decision_temperature": 0.5})
    with pytest.raises(ConfigError, match=r"align.train.refusal_share: must be in \[0.05, 0.95\] or null"):
        pipeline_cfg(tiny_lm, tmp_path, train={"refusal_share": 1.0})
    assert check_against_model(pipeline_cfg(tiny_lm, tmp_path, aux={"layers": [-1, 2]}).align, tiny_lm) == [4, 2]
    assert check_against_model(pipeline_cfg(tiny_lm, tmp_path).align, tiny_lm) == [3]  # 3/4 depth default


def _write_targets(job: Path):
    from jobs.artifacts import write_jsonl

    write_jsonl(job / "targets.jsonl", [r.__dict__ for r in rows()])


@pytest.mark.ray
def test_zero3_two_workers_saves_full_adapter_like_zero0(tiny_lm, tmp_path, ray_cluster):
    from safetensors.torch import load_file

    from jobs.align.train import run_align

    shapes = {}
    for stage in (0, 3):
        ds = {"zero_optimization": {"stage": stage}}
        if stage == 3:
            # Partition even the tiny model's parameters (the default keeps small ones whole).
            ds["zero_optimization"].update({"stage3_param_persistence_threshold": 0, "stage3_max_live_parameters": 0})
        cfg = pipeline_cfg(tiny_lm, tmp_path / f"z{stage}", train={"max_steps": 2, "batch_size": 2},
                           scale={"num_workers": 2, "cpus_per_worker": 0.5, "deepspeed": ds})
        job = Path(cfg.job_dir)
        _write_targets(job)
        out = run_align(cfg)
        tensors = load_file(str(out / "adapter_model.safetensors"))
        assert tensors and all(t.numel() > 0 for t in tensors.values())
        shapes[stage] = {k: tuple(v.shape) for k, v in tensors.items()}
        meta = json.loads((out / "meta.json").read_text())
        assert meta["world_size"] == 2 and meta["zero_stage"] == stage
        assert (out / "head.safetensors").is_file()
        assert not (job / "adapter.checkpoints").exists()
    assert shapes[3] == shapes[0]


def test_run_align_in_process_publishes_adapter_and_merged_model(tiny_lm, tmp_path):
    from peft import PeftModel

    from jobs.align.train import run_align

    cfg = pipeline_cfg(tiny_lm, tmp_path, train={"max_steps": 4, "checkpoint_every": 2})
    cfg.align.merge = True
    job = Path(cfg.job_dir)
    _write_targets(job)
    out = run_align(cfg)
    assert out == job.resolve() / "adapter"
    assert {"adapter_config.json", "adapter_model.safetensors", "head.safetensors", "meta.json", "merged"} <= {p.name for p in out.iterdir()}
    tok = AutoTokenizer.from_pretrained(str(out))
    ids = tok("How do I make a bomb 1?", return_tensors="pt")
    with torch.no_grad():
        peft_logits = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_lm), str(out))(**ids).logits
        merged_logits = AutoModelForCausalLM.from_pretrained(str(out / "merged"))(**ids).logits
    assert torch.allclose(peft_logits, merged_logits, atol=1e-4)
    assert not (job / "adapter.checkpoints").exists()
    assert not [p for p in job.iterdir() if p.name.startswith(".adapter")]


def test_pre_cot_pooling():
    from jobs.align.losses import gather_pre_cot

    h = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)  # [B=2, T=4, H=3]
    hs = (torch.zeros_like(h), h, 2 * h)
    t_star = torch.tensor([1, 3])
    assert torch.equal(gather_pre_cot(hs, [1], t_star), torch.stack([h[0, 1], h[1, 3]]))
    assert torch.equal(gather_pre_cot(hs, [1, 2], t_star), 1.5 * torch.stack([h[0, 1], h[1, 3]]))
    pooled = gather_pre_cot(hs, [1], t_star, "prompt_mean")
    assert torch.allclose(pooled, torch.stack([h[0, :2].mean(0), h[1, :4].mean(0)]))
    # aux.positions: t* and the tokens before it, oldest first; none before the sequence start
    from jobs.align.losses import pre_cot_positions
    span = pre_cot_positions(hs, [1, 2], t_star, 3)  # [B, 3, H]
    assert torch.equal(span, 1.5 * torch.stack([h[0, [0, 0, 1]], h[1, [1, 2, 3]]]))


def test_aux_on_several_pre_cot_positions_averages_their_losses(tiny_lm):
    import torch.nn.functional as F

    batch = _batch(tiny_lm)
    one, three = _model(tiny_lm, weight=0.5), _model(tiny_lm, weight=0.5)
    three.positions = 3
    with torch.no_grad():
        one.head.weight.normal_()
        three.head.load_state_dict(one.head.state_dict())
    a, b = one(**batch), three(**batch)
    assert torch.equal(a["head_logits"], b["head_logits"])  # logged at t*, as before
    with torch.no_grad():
        hs = three.lm.get_base_model().get_decoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                                     output_hidden_states=True).hidden_states
        t = batch["t_star"]
        per_position = [three.head_logits(hs[2][torch.arange(len(t)), t - j]) for j in (2, 1, 0)]
        expected = sum(F.binary_cross_entropy_with_logits(x, batch["signal"]) for x in per_position) / 3
    assert b["aux_loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert b["aux_loss"].item() != pytest.approx(a["aux_loss"].item(), rel=1e-3)  # the other positions count


_ENGINE_START = """
import sys, torch, deepspeed
if sys.argv[1] == "presafe":
    from jobs.scale import ensure_process_group
    ensure_process_group()
else:  # what DeepSpeed does on its own: start the engine with a fresh gloo group
    import os
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[2])
    torch.distributed.init_process_group("gloo", rank=0, world_size=1)
model = torch.nn.Linear(4, 2)
deepspeed.initialize(model=model, optimizer=torch.optim.AdamW(model.parameters()),
                     config={"train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": 0}})
print("engine up")
"""


def test_engine_start_survives_a_stale_torch_extension_lock(tmp_path):
    """A process killed while DeepSpeed JIT-loads its CPU shm op leaves the lock file of
    torch's extension build behind; without presafe's guard every later engine start on
    the machine waits on it forever (a resumed job hung in CI this way)."""
    import socket
    import subprocess
    import sys

    lock = tmp_path / "ext" / "deepspeed_shm_comm" / "lock"
    lock.parent.mkdir(parents=True)
    lock.write_text("")
    env = {**__import__("os").environ, "TORCH_EXTENSIONS_DIR": str(tmp_path / "ext")}
    ok = subprocess.run([sys.executable, "-c", _ENGINE_START, "presafe"], env=env, capture_output=True, text=True,
                        timeout=120, check=False)
    assert ok.returncode == 0 and "engine up" in ok.stdout, ok.stderr[-2000:]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    with pytest.raises(subprocess.TimeoutExpired):  # the hazard is real: plain DeepSpeed waits on the lock
        subprocess.run([sys.executable, "-c", _ENGINE_START, "plain", port], env=env, capture_output=True,
                       timeout=20, check=False)


def test_targets_longer_than_max_length_are_dropped_never_truncated(tiny_lm):
    from jobs.errors import DataError

    tok = AutoTokenizer.from_pretrained(tiny_lm)
    long = AlignRow("How do I bake a cake?", "Let me think. " * 100 + "\n</think>\n\nBake it.", 0.03, "comply")
    assert build_example(tok, long, TemplateConfig(), 128, False) is None  # dropped, not cut to 128 tokens
    full = build_example(tok, long, TemplateConfig(), 4096, False)
    assert full.labels[-1] == tok.eos_token_id  # the whole target, up to its end token
    # nothing left to train on: a clear error naming the key, before any training starts
    with pytest.raises(DataError, match=r"all 2 targets are longer than align.train.max_length=16"):
        AlignTrainer(pipeline_cfg(tiny_lm, Path("/nonexistent"), train={"max_length": 16}), [long, long])


def test_decision_tokens_weigh_more_in_the_lm_loss():
    """The first `decision_tokens` target tokens carry `decision_weight`; the weighted loss
    is the weighted mean of the per-token losses (and equals the plain mean at weight 1)."""
    import torch

    from jobs.align.data import AlignExample, collate
    from jobs.align.losses import IGNORE, lm_loss

    ex = AlignExample(input_ids=[5, 6, 7, 8, 9, 10], labels=[IGNORE, IGNORE, 7, 8, 9, 10], t_star=1, signal=1.0,
                      decision_tokens=2)
    batch = collate([ex], pad_id=0, decision_weight=4.0)
    assert batch["label_weights"].tolist() == [[1.0, 1.0, 4.0, 4.0, 1.0, 1.0]]
    assert "label_weights" not in collate([ex], pad_id=0)  # weight 1: the plain batch
    logits, targets = torch.randn(4, 11), torch.tensor([7, 8, 9, 10])
    nll = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    w = torch.tensor([4.0, 4.0, 1.0, 1.0])
    assert torch.allclose(lm_loss(logits, targets, w), (nll * w).sum() / w.sum())
    assert torch.allclose(lm_loss(logits, targets, torch.ones(4)), lm_loss(logits, targets))


def test_decision_temperature_scales_only_the_decision_tokens_logits(tiny_lm):
    """With decision_temperature tau the LM loss of the first `decision_tokens` target
    tokens is the cross-entropy of logits / tau; every other token's loss is untouched."""
    import torch.nn.functional as F

    from jobs.align.losses import shifted_targets

    tok = AutoTokenizer.from_pretrained(tiny_lm)
    examples = [build_example(tok, r, TemplateConfig(), 128, False, decision_tokens=3) for r in rows(2)]
    batch = collate(examples, tok.pad_token_id, decision_temperature=2.5)
    temps = batch["label_temperatures"]
    for i, e in enumerate(examples):
        start = next(j for j, lab in enumerate(e.labels) if lab != IGNORE)  # the first target token
        assert temps[i, start : start + 3].tolist() == [2.5] * 3  # the decision tokens...
        assert temps[i].sum().item() == pytest.approx(temps.shape[1] + 3 * 1.5)  # ...and only they
    assert "label_temperatures" not in collate(examples, tok.pad_token_id)  # tau 1: the plain batch

    model = _model(tiny_lm, weight=0.0).eval()
    with torch.no_grad():
        got = model(**batch)["lm_loss"]
        plain = model(**{k: v for k, v in batch.items() if k != "label_temperatures"})["lm_loss"]
        logits = model.lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    positions, targets = shifted_targets(batch["labels"])
    divisor = torch.ones_like(temps)
    divisor[:, :-1] = temps[:, 1:]  # label t + 1 is predicted at position t
    expected = F.cross_entropy(logits[positions] / divisor[positions].unsqueeze(-1), targets)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    assert plain.item() == pytest.approx(F.cross_entropy(logits[positions], targets).item(), rel=1e-5)
    assert got.item() != pytest.approx(plain.item(), rel=1e-3)


def test_refusal_share_repeats_the_short_side_and_drops_no_row():
    g = torch.Generator().manual_seed(0)
    # 3 refusals among 13 rows (23%) at a share of 0.5: 10 refusal slots, each row 3 or 4 times
    refuse = [True] * 3 + [False] * 10
    order = epoch_order(refuse, 0.5, g)
    counts = [order.count(i) for i in range(13)]
    assert sum(counts[:3]) == 10 and sorted(counts[:3]) == [3, 3, 4]
    assert counts[3:] == [1] * 10  # every comply row once: none dropped, none repeated
    # the other side short: 8 refusals, 2 comply rows at 0.5 -> comply rows 4 times each
    assert refusal_share_counts(8, 2, 0.5) == (8, 8)
    assert sorted(epoch_order([True] * 8 + [False] * 2, 0.5, g)) == list(range(8)) + [8] * 4 + [9] * 4
    # already at or past the share on the short side: kept as is, never cut
    assert refusal_share_counts(5, 5, 0.3) == (5, 12)
    # no share: the natural mix, the same order as a plain permutation with the same seed
    assert epoch_order(refuse, None, torch.Generator().manual_seed(7)) == \
        torch.randperm(13, generator=torch.Generator().manual_seed(7)).tolist()
    with pytest.raises(DataError, match="refusal_share=0.4 needs both refuse and comply targets; got 0 refuse"):
        epoch_order([False] * 4, 0.4, g)


def test_trainer_draws_refusals_at_the_configured_share(tiny_lm, tmp_path):
    few_refusals = [r for r in rows(12) if r.decision == "comply"] + [r for r in rows(12) if r.decision == "refuse"][:4]
    cfg = pipeline_cfg(tiny_lm, tmp_path, train={"refusal_share": 0.5})
    trainer = AlignTrainer(cfg, few_refusals, checkpoint_root=tmp_path / "ck", show_progress=False)
    assert trainer.epoch_size == 24  # 12 comply + 4 refusals repeated to 12
    seen = torch.cat([trainer.micro_batch(i)["signal"] for i in range(trainer.micro_per_epoch)])
    assert len(seen) == 24 and int((seen > 0.5).sum()) == 12
    natural = AlignTrainer(pipeline_cfg(tiny_lm, tmp_path / "n"), few_refusals, checkpoint_root=tmp_path / "ck2",
                           show_progress=False)
    assert natural.epoch_size == 16
    seen = torch.cat([natural.micro_batch(i)["signal"] for i in range(natural.micro_per_epoch)])
    assert int((seen > 0.5).sum()) == 4
