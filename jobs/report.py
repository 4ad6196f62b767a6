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
SWEEP_PNG = "sweep.png"
TEMPERATURE_PNG = "temperature.png"
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
    from jobs.variants import align_variants

    adapters = {}
    for v in align_variants(cfg):
        meta = _load(job / v.folder / "meta.json")
        if meta:
            adapters[v.name] = {"path": str(job / v.folder), "steps": meta.get("steps"), "group": v.group,
                                "seed": v.seed,
                                "aux": meta.get("config", {}).get("align", {}).get("aux"),
                              "train_seconds": meta.get("train_seconds"), "aux_weight": meta.get("aux_weight"),
                              "aux_layers": meta.get("aux_layers"), "examples": meta.get("examples")}
    return {
        "job_id": cfg.job_id, "job_dir": str(job), "model": cfg.model, "simulation": is_simulation(cfg.model),
        "stage_seconds": stages, "signals": _load(job / "signals_summary.json"),
        "targets": _load(job / "targets_summary.json"), "adapters": adapters,
        "evaluation": _load(job / "evaluation.json"),
    }


def _group_label(group: str, aux_weight: float) -> str:
    return MODEL_LABELS.get(group, group).format(w=aux_weight)


def plot_metrics(evaluation: dict, path: Path, aux_weight: float) -> Path | None:
    """One panel per run: each group's headline rates (pooled over seeds) with 95% Wilson
    intervals as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = {g: e for g, e in evaluation.get("groups", {}).items() if not g.startswith("sweep_")}
    runs = [r for r in next(iter(groups.values()), {}).get("runs", {}) if not r.startswith("attack/")]
    if not runs:
        return None
    head = evaluation["headline"]
    metrics = [("asr", "ASR"), ("cot_asr", "CoT-ASR"), ("over_refusal", "over-refusal"), ("accuracy", "accuracy")]
    fig, axes = plt.subplots(1, len(runs), figsize=(5.2 * len(runs), 4.0), squeeze=False, sharey=True)
    width = 0.8 / max(1, len(groups))
    for ax, run in zip(axes[0], runs):
        for i, (name, entry) in enumerate(groups.items()):
            r = entry["runs"].get(run, {})
            cells = [r.get("accuracy") if k == "accuracy" else r.get("judges", {}).get(head, {}).get(k)
                     for k, _ in metrics]
            vals = [c["rate"] if c and c.get("rate") is not None else None for c in cells]
            xs = [j + (i - (len(groups) - 1) / 2) * width for j in range(len(metrics))]
            # max(0, ...): at k = 0 or k = n the interval's edge equals the rate up to rounding
            lo = [max(0.0, v - c["lo"]) if v is not None else 0 for v, c in zip(vals, cells)]
            hi = [max(0.0, c["hi"] - v) if v is not None else 0 for v, c in zip(vals, cells)]
            bars = ax.bar(xs, [0 if v is None else v for v in vals], width, color=MODEL_COLORS.get(name),
                          yerr=[lo, hi], capsize=2, error_kw={"lw": 0.8}, label=_group_label(name, aux_weight))
            for bar, v, c in zip(bars, vals, cells):
                top = c["hi"] if v is not None else 0
                ax.annotate("n/a" if v is None else f"{v:.0%}", (bar.get_x() + bar.get_width() / 2, top),
                            ha="center", va="bottom", fontsize=6, xytext=(0, 1), textcoords="offset points")
        ax.set_xticks(range(len(metrics)), [label for _, label in metrics], fontsize=8)
        ax.set_ylim(0, 1.15)
        ax.set_title(run.replace("cot_on", "CoT on").replace("cot_off", "CoT off").replace("/", " · "), fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel(f"fraction of samples (judge: {head}; 95% Wilson)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    seeds = evaluation.get("seeds") or []
    fig.suptitle("Before vs after alignment (lower ASR, CoT-ASR and over-refusal, higher accuracy are better)"
                 + (f"; pooled over seeds {seeds}" if seeds else ""), fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return _save(fig, path)


def plot_temperature(evaluation: dict, path: Path, aux_weight: float) -> Path | None:
    """Headline ASR (CoT on) against sampling temperature, one line per model and
    (top_p, top_k), with 95% intervals: the decoding sweep plus any other CoT-on decoding."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    decodings = evaluation.get("decodings", [])
    if len({d["temperature"] for d in decodings}) < 2:
        return None
    head = evaluation["headline"]
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for g, entry in evaluation.get("groups", {}).items():
        if g.startswith("sweep_"):
            continue
        for (p, k) in sorted({(d["top_p"], d["top_k"]) for d in decodings}):
            pts = sorted((d["temperature"], entry["runs"].get(f"cot_on/{d['name']}", {}).get("judges", {})
                          .get(head, {}).get("asr")) for d in decodings if (d["top_p"], d["top_k"]) == (p, k))
            pts = [(t, r) for t, r in pts if r and r.get("rate") is not None]
            if len(pts) < 2:
                continue
            ts, rs = [t for t, _ in pts], [r["rate"] for _, r in pts]
            err = [[max(0.0, r["rate"] - r["lo"]) for _, r in pts], [max(0.0, r["hi"] - r["rate"]) for _, r in pts]]
            ax.errorbar(ts, rs, yerr=err, marker="o", ms=3, capsize=2, color=MODEL_COLORS.get(g),
                        label=f"{_group_label(g, aux_weight)}, top-p {p:g}, top-k {k}")
    ax.set_xlabel("temperature (0 = greedy)")
    ax.set_ylabel(f"CoT-on ASR ({head}; 95% Wilson)")
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("Attack success against sampling temperature", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def plot_sweep(evaluation: dict, path: Path) -> Path | None:
    """The sweep: each point's headline ASR and over-refusal (first CoT-on run) with
    intervals, beside the λ = 0 ablation and the aligned model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = evaluation.get("groups", {})
    points = [g for g in groups if g.startswith("sweep_")]
    if not points:
        return None
    names = [g for g in ("aligned", "lambda0") if g in groups] + points
    run = next((r for r in groups[points[0]]["runs"] if r.startswith("cot_on")), None)
    if run is None:
        return None
    head = evaluation["headline"]
    fig, ax = plt.subplots(figsize=(max(6.4, 0.9 * len(names)), 3.8))
    for k, (metric, color) in enumerate((("asr", "#c62828"), ("over_refusal", "#2e7d32"))):
        cells = [groups[g]["runs"].get(run, {}).get("judges", {}).get(head, {}).get(metric) for g in names]
        xs = [i + (k - 0.5) * 0.35 for i in range(len(names))]
        vals = [c["rate"] if c and c.get("rate") is not None else 0 for c in cells]
        err = [[max(0.0, v - (c["lo"] if c and c.get("lo") is not None else v)) for v, c in zip(vals, cells)],
               [max(0.0, (c["hi"] if c and c.get("hi") is not None else v) - v) for v, c in zip(vals, cells)]]
        ax.bar(xs, vals, 0.35, yerr=err, capsize=2, color=color, label=metric.replace("_", "-"))
    ax.set_xticks(range(len(names)), [n.replace("sweep_", "") for n in names], rotation=30, ha="right", fontsize=7)
    ax.set_ylim(0, 1.1)
    ax.set_title(f"Ablation sweep, {run} (judge: {head}; 95% Wilson)", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def plot_probes(evaluation: dict, path: Path, aux_weight: float, aux_layers: list[int] | None) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first_seed = (evaluation.get("seeds") or [None])[0]
    curves = {e.get("group", n): e["probe_auroc"] for n, e in evaluation.get("variants", {}).items()
              if e.get("probe_auroc") and e.get("seed") in (None, first_seed) and not n.startswith("sweep_")}
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


def _ci(r: dict | None) -> str:
    """A rate as `7.8% [3.4, 17.0] (5/64)`."""
    if not r or r.get("rate") is None:
        return "–"
    return f"{r['rate']:.1%} [{100 * r['lo']:.1f}, {100 * r['hi']:.1f}] ({r['k']}/{r['n']})"


def _p(v: float) -> str:
    return f"{v:.3g}" if v >= 0.001 else "<0.001"


def _evaluation_markdown(ev: dict, aux_weight: float, plots: dict) -> list[str]:
    head = ev["headline"]
    judges = ", ".join(f"`{j['name']}` ({j['kind']}{', ' + j['path'] if j.get('path') else ''})" for j in ev["judges"])
    seeds = ev.get("seeds") or []
    lines = ["## Evaluation (held-out prompts)", "",
             f"Sets: {ev['sets']}. Judges: {judges}; headline: `{head}`. Each judge reads the final answer (after "
             "the think block; the whole output when it never closes) and, separately, the thinking. Rates carry "
             "their 95% Wilson interval and k/n" + (f"; trained variants pooled over seeds {seeds} (samples counted "
                                                    "as independent)." if seeds else "."), ""]
    groups = ev.get("groups", {})
    main = {g: e for g, e in groups.items() if not g.startswith("sweep_")}
    lines += [f"| model | run | ASR ↓ | CoT-ASR ↓ | over-refusal ↓ | accuracy ↑ |", "|---|---|---|---|---|---|"]
    for g, entry in main.items():
        for run, r in entry["runs"].items():
            if run.startswith("attack/"):
                continue
            h = r["judges"].get(head, {})
            lines.append(f"| {_group_label(g, aux_weight)} | {run} | {_ci(h.get('asr'))} | {_ci(h.get('cot_asr'))} | "
                         f"{_ci(h.get('over_refusal'))} | {_ci(r['accuracy'])} |")
    lines += ["", f"![metrics]({METRICS_PNG})" if plots.get("metrics") else "", ""]
    paths = [(g, run, r["judges"].get(head, {})) for g, entry in main.items() for run, r in entry["runs"].items()
             if run.startswith("cot_on/") and "asr_via_thinking" in r["judges"].get(head, {})]
    if paths:
        lines += [f"### Where the decisions went (judge `{head}`)", "",
                  "Attack successes split by whether the model thought first (it took the comply path at t*) or "
                  "answered after an empty think block (the refusal's start, broken later); benign refusals made "
                  "at once, with no thinking.", "",
                  "| model | run | ASR, thought first | ASR, after an empty think block | over-refusal, at once |",
                  "|---|---|---|---|---|"]
        lines += [f"| {_group_label(g, aux_weight)} | {run} | {_ci(h.get('asr_via_thinking'))} | "
                  f"{_ci(h.get('asr_without_thinking'))} | {_ci(h.get('over_refusal_without_thinking'))} |"
                  for g, run, h in paths]
        lines.append("")
    attacks = [(g, run, r) for g, entry in main.items() for run, r in entry["runs"].items() if run.startswith("attack/")]
    if attacks:
        lines += [f"### Attacks on the harmful set (judge `{head}`)", "",
                  "Each harmful prompt once per attack variant, CoT on; the attacker's prefill counts as the "
                  "model's own text (jobs/evaluation/attacks.py).", "",
                  "| model | attack | decoding | ASR ↓ | CoT-ASR ↓ | ASR (answer or CoT) ↓ |", "|---|---|---|---|---|---|"]
        for g, run, r in attacks:
            h = r["judges"].get(head, {})
            _, name, dec = run.split("/", 2)
            lines.append(f"| {_group_label(g, aux_weight)} | {name} | {dec} | {_ci(h.get('asr'))} | "
                         f"{_ci(h.get('cot_asr'))} | {_ci(h.get('asr_any'))} |")
        lines.append("")
    if len(ev["judges"]) > 1:
        lines += ["### Every judge", "", "| model | run | judge | ASR | CoT-ASR | ASR (answer or CoT) | over-refusal |",
                  "|---|---|---|---|---|---|---|"]
        for g, entry in main.items():
            for run, r in entry["runs"].items():
                for judge, m in r["judges"].items():
                    lines.append(f"| {g} | {run} | {judge} | {_ci(m.get('asr'))} | {_ci(m.get('cot_asr'))} | "
                                 f"{_ci(m.get('asr_any'))} | {_ci(m.get('over_refusal'))} |")
        lines += ["", "Agreement between judges (Cohen's kappa, every sample both judged):", "",
                  "| judges | text | n | agreement | kappa |", "|---|---|---|---|---|"]
        for a in ev.get("agreement", []):
            kappa = "–" if a["kappa"] is None else f"{a['kappa']:.3f}"
            lines.append(f"| {a['judges'][0]} vs {a['judges'][1]} | {a['part']} | {a['n']} | {a['agreement']:.1%} | "
                         f"{kappa} |")
        lines.append("")
    if ev.get("comparisons"):
        lines += [f"### Paired tests against the λ = 0 ablation (judge `{head}`)", "",
                  "Exact McNemar on the same prompts" + (", samples and seeds (pairs pooled over seeds)" if seeds
                                                         else " and samples") + ": b = only the first model had the "
                  "event (attack success, CoT attack success, refusal of a benign prompt, a right answer), c = only "
                  "the ablation.", "", "| model | run | metric | rate | λ = 0 rate | pairs | b | c | p |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for c in ev["comparisons"]:
            lines.append(f"| {c['model']} | {c['run']} | {c['metric']} | {_pct(c['a_rate'])} | {_pct(c['b_rate'])} | "
                         f"{c['pairs']} | {c['b']} | {c['c']} | {_p(c['p_value'])} |")
        lines.append("")
    if seeds:
        lines += [f"### Per seed (judge `{head}`)", "", "| model | run | ASR per seed | over-refusal per seed | "
                  "accuracy per seed |", "|---|---|---|---|---|"]
        for g, entry in groups.items():
            for run, r in entry["runs"].items():
                h = r["judges"].get(head, {})
                per = lambda c: " / ".join(_pct(x) for x in (c or {}).get("per_seed", [])) or "–"  # noqa: E731
                lines.append(f"| {g} | {run} | {per(h.get('asr'))} | {per(h.get('over_refusal'))} | "
                             f"{per(r['accuracy'])} |")
        lines.append("")
    sweep = {g: e for g, e in groups.items() if g.startswith("sweep_")}
    if sweep:
        lines += [f"### Ablation sweep (judge `{head}`)", "", "Every point trained on the same decisions, signals and "
                  "targets as the models above (w = λ, L = layers, P = pooling, T = signal).", "",
                  "| point | run | ASR | CoT-ASR | over-refusal | accuracy |", "|---|---|---|---|---|---|"]
        for g, entry in {**{k: v for k, v in groups.items() if k in ("aligned", "lambda0")}, **sweep}.items():
            for run, r in entry["runs"].items():
                if run.startswith("cot_on"):
                    h = r["judges"].get(head, {})
                    lines.append(f"| {g.replace('sweep_', '')} | {run} | {_ci(h.get('asr'))} | {_ci(h.get('cot_asr'))} | "
                                 f"{_ci(h.get('over_refusal'))} | {_ci(r['accuracy'])} |")
        lines += ["", f"![sweep]({SWEEP_PNG})" if plots.get("sweep") else "", ""]
    if plots.get("temperature"):
        lines += [f"![ASR against temperature]({TEMPERATURE_PNG})", ""]
    first = {n: e for n, e in ev["variants"].items()
             if e.get("seed") in (None, (seeds or [None])[0]) and not n.startswith("sweep_")}
    cats = [(n, run, c, m) for n, e in first.items() for run, r in e["runs"].items() if run.startswith("cot_on")
            for c, m in r.get("by_category", {}).items()]
    if cats:
        lines += [f"### By category (judge `{head}`" + (f", seed {seeds[0]}" if seeds else "") + ")", "",
                  "| model | run | category | ASR | CoT-ASR | over-refusal | accuracy |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {n} | {run} | {c} | {_ci(m.get('asr'))} | {_ci(m.get('cot_asr'))} | {_ci(m.get('over_refusal'))} | "
                  f"{_ci(m.get('accuracy'))} |" for n, run, c, m in cats]
        lines.append("")
    probes = {g: e.get("probe_auroc") for g, e in first.items() if e.get("probe_auroc")}
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
        lines += ["", f"![probes]({PROBES_PNG})" if plots.get("probes") else "", ""]
    return lines


def render_markdown(rep: dict) -> str:
    lines = [f"# presafe report: job `{rep['job_id']}`", ""]
    ev = rep.get("evaluation")
    for w in (ev or {}).get("warnings", []):
        lines += [f"> **{w.split(':', 1)[0]}:**{w.split(':', 1)[1]}" if w.startswith("WARNING:") else f"> {w}", ""]
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
    if ev:
        lines += _evaluation_markdown(ev, rep.get("aux_weight", 0.2), rep.get("plots", {}))
    if rep.get("stage_seconds"):
        lines += ["## Stage times", "", "| stage | seconds |", "|---|---|"]
        lines += [f"| {k} | {v:.1f} |" for k, v in rep["stage_seconds"].items()]
        lines.append("")
    return "\n".join(lines)


def write_report(cfg: PipelineConfig) -> Path:
    """Write report.json, report.md and the plots; returns report.json's path."""
    job = Path(cfg.job_dir)
    rep = collect(cfg)
    rep["aux_weight"] = cfg.align.aux.weight
    plots = {}
    ev = rep.get("evaluation")
    if ev:
        aligned = rep["adapters"].get("aligned", {})
        if plot_metrics(ev, job / METRICS_PNG, cfg.align.aux.weight):
            plots["metrics"] = str(job / METRICS_PNG)
        if plot_probes(ev, job / PROBES_PNG, cfg.align.aux.weight, aligned.get("aux_layers")):
            plots["probes"] = str(job / PROBES_PNG)
        if plot_sweep(ev, job / SWEEP_PNG):
            plots["sweep"] = str(job / SWEEP_PNG)
        if plot_temperature(ev, job / TEMPERATURE_PNG, cfg.align.aux.weight):
            plots["temperature"] = str(job / TEMPERATURE_PNG)
    rep["plots"] = plots
    write_text(job / REPORT_MD, render_markdown(rep))
    return write_json(job / REPORT_JSON, rep)
