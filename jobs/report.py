"""A job's report: `report.json`, `report.md` and PNG plots in `<job_dir>/`.

Reads what the stages wrote (signals and targets summaries, adapter meta, evaluation.json,
events.jsonl) and writes:
- metrics.png: ASR / over-refusal / reasoning accuracy per model, one panel per run
  (CoT mode x decoding);
- probes.png: decision-probe AUROC by layer per model;
- report.md: the same numbers as tables, with the plots, and a banner when the model is
  the demo simulation.
"""

from __future__ import annotations

import json
from pathlib import Path

from jobs.artifacts import write_json, write_text
from jobs.events import read_events
from jobs.pipeline_config import PipelineConfig

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
METRICS_PNG = "metrics.png"
PROBES_PNG = "probes.png"
SIMULATION_BANNER = (
    "> **SIMULATION.** The model is presafe's demo reasoning model: SmolLM2-135M-Instruct fine-tuned on text "
    "presafe writes itself, so that it refuses harmful requests with CoT off and complies with CoT on (the paper's "
    "observation, reproduced on purpose). Its numbers show the pipeline working; they say nothing about real LRMs.")
MODEL_COLORS = {"base": "#9e9e9e", "aligned": "#1565c0", "lambda0": "#ef6c00"}
MODEL_LABELS = {"base": "base", "aligned": "aligned (λ = {w:g})", "lambda0": "λ = 0 ablation (plain SFT)"}


def _load(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def is_simulation(model: str) -> bool:
    from jobs.models.embedded import DEMO, PREFIX

    return model == PREFIX + DEMO or (Path(model) / "presafe_demo.json").is_file()


def collect(cfg: PipelineConfig) -> dict:
    job = Path(cfg.job_dir)
    stages = {}
    for ev in read_events(job / "events.jsonl"):
        if ev.get("event") == "stage_end":
            stages[ev["stage"]] = round(ev.get("seconds", 0.0), 1)
    adapters = {}
    for name, folder in (("aligned", cfg.align.output_name), ("lambda0", f"{cfg.align.output_name}_lambda0")):
        meta = _load(job / folder / "meta.json")
        if meta:
            adapters[name] = {"path": str(job / folder), "steps": meta.get("steps"),
                              "train_seconds": meta.get("train_seconds"), "aux_weight": meta.get("aux_weight"),
                              "aux_layers": meta.get("aux_layers"), "examples": meta.get("examples")}
    return {
        "job_id": cfg.job_id, "job_dir": str(job), "model": cfg.model, "simulation": is_simulation(cfg.model),
        "stage_seconds": stages, "signals": _load(job / "signals_summary.json"),
        "targets": _load(job / "targets_summary.json"), "adapters": adapters,
        "evaluation": _load(job / "evaluation.json"),
    }


def plot_metrics(evaluation: dict, path: Path, aux_weight: float) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = evaluation.get("variants", {})
    runs = list(next(iter(variants.values()), {}).get("runs", {}))
    if not runs:
        return None
    metrics = [("asr", "ASR (harmful)"), ("over_refusal", "over-refusal (benign)"), ("accuracy", "reasoning accuracy")]
    fig, axes = plt.subplots(1, len(runs), figsize=(4.6 * len(runs), 3.8), squeeze=False, sharey=True)
    width = 0.8 / max(1, len(variants))
    for ax, run in zip(axes[0], runs):
        for i, (name, entry) in enumerate(variants.items()):
            m = entry["runs"].get(run, {})
            vals = [m.get(k) for k, _ in metrics]
            xs = [j + (i - (len(variants) - 1) / 2) * width for j in range(len(metrics))]
            bars = ax.bar(xs, [0 if v is None else v for v in vals], width, color=MODEL_COLORS.get(name, None),
                          label=MODEL_LABELS.get(name, name).format(w=aux_weight))
            for b, v in zip(bars, vals):
                ax.annotate("n/a" if v is None else f"{v:.0%}", (b.get_x() + b.get_width() / 2, b.get_height()),
                            ha="center", va="bottom", fontsize=7, xytext=(0, 1), textcoords="offset points")
        ax.set_xticks(range(len(metrics)), [label for _, label in metrics], fontsize=8)
        ax.set_ylim(0, 1.12)
        ax.set_title(run.replace("cot_on", "CoT on").replace("cot_off", "CoT off").replace("/", " · "), fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("fraction of samples")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.suptitle("Before vs after alignment (lower ASR and over-refusal, higher accuracy are better)", fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return _save(fig, path)


def plot_probes(evaluation: dict, path: Path, aux_weight: float, aux_layers: list[int] | None) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {n: e["probe_auroc"] for n, e in evaluation.get("variants", {}).items() if e.get("probe_auroc")}
    if not curves or all(v is None for c in curves.values() for v in c):
        return None
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for name, aurocs in curves.items():
        xs = [i for i, v in enumerate(aurocs) if v is not None]
        ax.plot(xs, [aurocs[i] for i in xs], marker="o", ms=3, color=MODEL_COLORS.get(name),
                label=MODEL_LABELS.get(name, name).format(w=aux_weight))
    for layer in aux_layers or []:
        ax.axvline(layer, color="#1565c0", ls=":", alpha=0.6)
    ax.set_xlabel("layer (0 = embeddings; dotted = layer the auxiliary loss reads)")
    ax.set_ylabel("probe AUROC at t*")
    ax.set_ylim(0.4, 1.02)
    ax.axhline(0.5, color="k", lw=0.5, alpha=0.4)
    ax.set_title(f"Is the safe decision decodable before CoT? ({evaluation.get('probe_labels', '')})", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    """Save a figure atomically (a reader never sees half a PNG)."""
    import os

    import matplotlib.pyplot as plt

    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def _pct(v) -> str:
    return "–" if v is None else f"{v:.1%}"


def render_markdown(rep: dict) -> str:
    lines = [f"# presafe report: job `{rep['job_id']}`", ""]
    if rep["simulation"]:
        lines += [SIMULATION_BANNER, ""]
    lines += [f"Model: `{rep['model']}`  ", f"Job folder: `{rep['job_dir']}`", ""]
    sig, tgt = rep.get("signals"), rep.get("targets")
    if sig:
        lines += ["## Safe model (CoT off) and decision signals", "",
                  f"- prompts: {sig['prompts']} ({sig['harmful']} harmful, {sig['benign']} benign)",
                  (f"- refuses {_pct(sig['harmful_refusal_rate'])} of harmful and {_pct(sig['benign_refusal_rate'])} "
                   f"of benign prompts (classifier threshold {sig['threshold']:.3f})"), ""]
    if tgt:
        lines += ["## Alignment targets", "", "- " + ", ".join(f"{k}: {v}" for k, v in tgt.items()), ""]
    for name, a in rep.get("adapters", {}).items():
        lines.append(f"- `{name}`: λ = {a['aux_weight']}, {a['steps']} steps on {a['examples']} examples, "
                     f"aux layers {a['aux_layers']}, {a['train_seconds'] or 0:.0f} s → `{a['path']}`")
    if rep.get("adapters"):
        lines.append("")
    ev = rep.get("evaluation")
    if ev:
        lines += ["## Evaluation (held-out prompts)", "",
                  (f"Sets: {ev['sets']}. Judge: the job's classifier (threshold {ev['threshold']:.3f}) on the final "
                   "answer (after the think block; the whole output when it never closes)."), "",
                  "| model | run | ASR ↓ | over-refusal ↓ | accuracy ↑ | answer tokens | unclosed think |",
                  "|---|---|---|---|---|---|---|"]
        base = ev["variants"].get("base", {}).get("runs", {})
        for name, entry in ev["variants"].items():
            for run, m in entry["runs"].items():
                delta = ""
                if name != "base" and run in base and m["asr"] is not None and base[run]["asr"] is not None:
                    delta = f" ({(m['asr'] - base[run]['asr']) * 100:+.1f} pts)"
                lines.append(f"| {name} | {run} | {_pct(m['asr'])}{delta} | {_pct(m['over_refusal'])} | "
                             f"{_pct(m['accuracy'])} | {m['answer_tokens'] or 0:.0f} | {_pct(m['unclosed_thinking'])} |")
        lines += ["", f"![metrics]({METRICS_PNG})" if rep.get("plots", {}).get("metrics") else "", ""]
        probes = {n: e.get("probe_auroc") for n, e in ev["variants"].items() if e.get("probe_auroc")}
        if probes:
            lines += ["## Decision probes", "",
                      (f"A logistic probe per layer on the hidden state at t* (the last token before CoT), "
                       f"{ev['probe_prompts']} held-out prompts ({ev['probe_positives']} labelled refuse by "
                       f"{ev['probe_labels']}), cross-validated AUROC."), "",
                      "| model | best layer | best AUROC | mean AUROC |", "|---|---|---|---|"]
            for name, aurocs in probes.items():
                valid = [(i, v) for i, v in enumerate(aurocs) if v is not None]
                if valid:
                    best = max(valid, key=lambda t: t[1])
                    lines.append(f"| {name} | {best[0]} | {best[1]:.3f} | {sum(v for _, v in valid) / len(valid):.3f} |")
                else:
                    lines.append(f"| {name} | – | – | – |")
            lines += ["", f"![probes]({PROBES_PNG})" if rep.get("plots", {}).get("probes") else "", ""]
    if rep.get("stage_seconds"):
        lines += ["## Stage times", "", "| stage | seconds |", "|---|---|"]
        lines += [f"| {k} | {v:.1f} |" for k, v in rep["stage_seconds"].items()]
        lines.append("")
    return "\n".join(lines)


def write_report(cfg: PipelineConfig) -> Path:
    """Write report.json, report.md and the plots; returns report.json's path."""
    job = Path(cfg.job_dir)
    rep = collect(cfg)
    plots = {}
    ev = rep.get("evaluation")
    if ev:
        aligned = rep["adapters"].get("aligned", {})
        if plot_metrics(ev, job / METRICS_PNG, cfg.align.aux.weight):
            plots["metrics"] = str(job / METRICS_PNG)
        if plot_probes(ev, job / PROBES_PNG, cfg.align.aux.weight, aligned.get("aux_layers")):
            plots["probes"] = str(job / PROBES_PNG)
    rep["plots"] = plots
    write_text(job / REPORT_MD, render_markdown(rep))
    return write_json(job / REPORT_JSON, rep)
