"""Export a job's trained model as a standalone folder others can load and publish.

    presafe export runs/jobs/quickstart --to out/quickstart-aligned [--variant aligned|lambda0|aligned@s1]
                   [--merged] [--dtype bf16|fp16|fp32] [--force] [--push-to-hub org/name]

The source is a job folder (the variant picks the adapter: `aligned`, `lambda0`, any
variant name of jobs.variants or its folder name) or an adapter folder itself. The
target is written beside itself in a temporary folder and renamed into place, so it is
never half-written; a non-empty target is refused unless `force`.

- adapter export (default): the peft LoRA files, `PeftModel.from_pretrained(base, DIR)`;
- `merged`: base + LoRA merged (in float32, then cast to `dtype`) into a plain Hugging
  Face model, `AutoModelForCausalLM.from_pretrained(DIR)`;

both with the tokenizer, the pre-CoT decision head as `head.safetensors` (an adapter's old
`head.pt` is read and converted), the adapter's `meta.json`, and a model card (README.md:
YAML front matter, the method, λ, aux layers, data counts, the evaluation with intervals
and judges from the job's evaluation.json, and the SIMULATION banner for the demo model).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from jobs.errors import ConfigError, DataError, PresafeError

DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")
EMBEDDED_HUB_IDS = {"embedded:smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct"}
"""Embedded models that are a hub model's weights (the demo model is not: it is fine-tuned)."""


class HubError(PresafeError):
    """The Hugging Face Hub cannot be reached or refused the upload (CLI exit 2)."""


@dataclass
class Source:
    adapter: Path
    """The adapter folder (peft files, head, meta.json)."""
    meta: dict
    job: Path | None
    """The job folder it belongs to, when it is in one (for the evaluation and summaries)."""
    variant: str
    """Its name in evaluation.json (aligned, lambda0, aligned@s1, sweep_...)."""
    group: str


def find_source(job_or_adapter: str | Path, variant: str | None = None) -> Source:
    """The adapter to export: `job_or_adapter` is an adapter folder, or a job folder where
    `variant` (default aligned) names one of its adapters."""
    from jobs.variants import align_variants

    path = Path(job_or_adapter)
    if not path.is_dir():
        raise DataError(f"{path}: no such folder (give a job folder or an adapter folder)")
    is_adapter = (path / "adapter_config.json").is_file()
    job = path.parent if is_adapter else path
    if not (job / "config.json").is_file():
        job = None
    if not is_adapter and job is None:
        raise DataError(f"{path}: neither a presafe job folder (config.json) nor an adapter folder (adapter_config.json)")
    variants = align_variants(_job_config(job)) if job is not None else []
    if is_adapter:
        if variant is not None:
            raise ConfigError(f"--variant {variant}: {path} is an adapter folder already; give the job folder to choose")
        match = [v for v in variants if v.folder == path.name]
    else:
        wanted = variant or "aligned"
        match = [v for v in variants if wanted in (v.name, v.folder)] or [v for v in variants if v.group == wanted]
        if len(match) != 1:
            names = ", ".join(v.name for v in variants)
            why = "names several (one per seed)" if match else "is not one of its variants"
            raise ConfigError(f"--variant {wanted}: {why} in job {job.name}: {names}")
        path = job / match[0].folder
    if not (path / "meta.json").is_file() or not (path / "adapter_config.json").is_file():
        raise DataError(f"{path}: not a finished adapter (no meta.json / adapter_config.json): has its align stage run?")
    meta = json.loads((path / "meta.json").read_text())
    v = match[0] if match else None
    return Source(path, meta, job, v.name if v else path.name, v.group if v else path.name)


def _job_config(job: Path):
    from jobs.config import from_dict
    from jobs.pipeline_config import PipelineConfig

    data = json.loads((job / "config.json").read_text())
    data.update(storage_path=str(job.resolve().parent.parent), job_id=job.resolve().name)
    return from_dict(PipelineConfig, data, source=str(job / "config.json"))


def check_target(to: Path, source: Source, force: bool) -> None:
    """Refuse a target that would overwrite its source or work, or nest inside an artifact."""
    to, src = to.resolve(), source.adapter.resolve()
    if to == src or src in to.parents or to in src.parents:
        raise ConfigError(f"--to {to}: overlaps the adapter it exports ({src}); export somewhere of its own")
    if source.job is not None and source.job.resolve() in (to, *to.parents):
        raise ConfigError(f"--to {to}: inside the job folder {source.job}; export somewhere of its own")
    for parent in to.parents:
        if any((parent / f).is_file() for f in ("adapter_config.json", "meta.json", "config.json")):
            raise ConfigError(f"--to {to}: inside the model folder {parent}; an export is a folder of its own")
    if to.exists() and (not to.is_dir() or any(to.iterdir())) and not force:
        raise ConfigError(f"--to {to}: exists and is not empty (--force replaces it)")


def export(job_or_adapter: str | Path, to: str | Path, variant: str | None = None, merged: bool = False,
           dtype: str | None = None, force: bool = False) -> Path:
    """Write the export folder (see the module doc); returns its path."""
    from jobs.align.model import HEAD, load_head, save_head

    if dtype is not None and dtype not in DTYPES:
        raise ConfigError(f"--dtype {dtype}: use one of {', '.join(DTYPES)}")
    source = find_source(job_or_adapter, variant)
    to = Path(to)
    check_target(to, source, force)
    config = source.meta.get("config") or {}
    torch_dtype = DTYPES.get(dtype) or (config.get("dtype") if config.get("dtype") in DTYPES.values() else "float32")
    to.resolve().parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{to.name}.", dir=to.resolve().parent))
    try:
        if merged:
            _merge(source, staged, torch_dtype)
        else:
            _copy_adapter(source.adapter, staged, torch_dtype if dtype else None)
        head = load_head(source.adapter)
        layers = source.meta.get("aux_layers") or []
        aux = (config.get("align") or {}).get("aux", {})
        save_head(head, staged, layers, aux.get("pooling", "t_star"), aux.get("head", "raw"))  # raw: older configs
        meta = {**source.meta, "export": {"source": str(source.adapter), "variant": source.variant,
                                          "merged": merged, "dtype": torch_dtype, "head": HEAD}}
        (staged / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
        (staged / "README.md").write_text(model_card(source, merged, torch_dtype))
        if to.exists() and to.is_dir() and not any(to.iterdir()):
            to.rmdir()
        from jobs.artifacts import publish_dir

        publish_dir(staged, to.resolve())
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return to


def _copy_adapter(adapter: Path, out: Path, torch_dtype: str | None) -> None:
    """The peft files and the tokenizer; LoRA tensors cast to `torch_dtype` when given."""
    for f in adapter.iterdir():
        if f.is_file() and f.name not in ("meta.json", "head.pt", "head.safetensors", "README.md"):
            shutil.copy2(f, out / f.name)
    weights = out / "adapter_model.safetensors"
    if torch_dtype and weights.is_file():
        import torch
        from safetensors.torch import load_file, save_file

        tensors = {k: v.to(getattr(torch, torch_dtype)) for k, v in load_file(str(weights)).items()}
        save_file(tensors, str(weights), metadata={"format": "pt"})


def _merge(source: Source, out: Path, torch_dtype: str) -> None:
    """Base + LoRA merged in float32 (a merge in bf16 rounds twice), then cast and saved."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from jobs.models.embedded import resolve_model

    base = AutoModelForCausalLM.from_pretrained(resolve_model(source.meta["base_model"]), dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(source.adapter)).merge_and_unload()
    model.to(getattr(torch, torch_dtype)).save_pretrained(out)
    AutoTokenizer.from_pretrained(str(source.adapter)).save_pretrained(out)


# -- the model card ---------------------------------------------------------------------------

def _load(path: Path | None):
    return json.loads(path.read_text()) if path is not None and path.is_file() else None


def _ci(r) -> str:
    """A rate as `7.8% [3.4, 17.0] (5/64)` (rate, 95% Wilson interval in points, k/n)."""
    if not isinstance(r, dict) or r.get("rate") is None:
        return "–"
    return f"{r['rate']:.1%} [{100 * r['lo']:.1f}, {100 * r['hi']:.1f}] ({r['k']}/{r['n']})"


def _hub_id(model: str) -> str | None:
    """The hub id a base model name stands for, if any (not a local folder)."""
    if model in EMBEDDED_HUB_IDS:
        return EMBEDDED_HUB_IDS[model]
    if model.startswith("embedded:") or Path(model).exists() or model.count("/") != 1:
        return None
    return model


def _runs(ev: dict, name: str, group: str) -> dict:
    """Per run of one model: this exact variant's metrics, else its group's (pooled over seeds)."""
    v = (ev.get("variants") or {}).get(name)
    if v and v.get("runs"):
        return v["runs"]
    return ((ev.get("groups") or {}).get(group) or {}).get("runs", {})


def evaluation_table(ev: dict, source: Source) -> list[str]:
    """The base model and the exported one, per run and judge (headline first): ASR,
    CoT-ASR, over-refusal, reasoning accuracy, each with its interval and k/n."""
    head = ev.get("headline")
    judges = sorted((j["name"] for j in ev.get("judges", [])), key=lambda n: n != head)
    lines = ["| model | run | judge | ASR ↓ | CoT-ASR ↓ | over-refusal ↓ | accuracy ↑ |",
             "|---|---|---|---|---|---|---|"]
    for label, name, group in (("base", "base", "base"), (source.variant, source.variant, source.group)):
        for run, r in _runs(ev, name, group).items():
            acc = r.get("accuracy_rate") or r.get("accuracy")
            for judge in judges:
                m = (r.get("judges") or {}).get(judge)
                if m is None:
                    continue
                lines.append(f"| {label} | {run} | {judge}{' (headline)' if judge == head else ''} | "
                             f"{_ci(m.get('asr'))} | {_ci(m.get('cot_asr'))} | {_ci(m.get('over_refusal'))} | "
                             f"{_ci(acc)} |")
    return lines


def model_card(source: Source, merged: bool, torch_dtype: str) -> str:
    from jobs.report import SIMULATION_BANNER, is_simulation

    meta, config = source.meta, source.meta.get("config") or {}
    align = config.get("align") or {}
    aux, train = align.get("aux") or {}, align.get("train") or {}
    peft = _load(source.adapter / "adapter_config.json") or {}  # what was saved, whatever the config said
    model = meta.get("base_model") or config.get("model", "")
    hub = _hub_id(model)
    simulation = is_simulation(model)
    library = "transformers" if merged else "peft"
    tags = ["presafe", "safety", "reasoning", "chain-of-thought", "lora", "pre-cot-safety-decision"]
    tags += ["simulation"] if simulation else []
    front = ["---"] + ([f"base_model: {hub}"] if hub else []) + [f"library_name: {library}",
                                                                 "pipeline_tag: text-generation", "tags:"]
    front += [f"- {t}" for t in tags] + ["---", ""]
    weight = meta.get("aux_weight", aux.get("weight"))
    title = hub or (Path(model).name if Path(model).exists() else model)
    lines = front + [f"# {title} aligned by presafe ({source.variant})", ""]
    if simulation:
        lines += [SIMULATION_BANNER, ""]
    lines += [
        f"{model} made to decide on safety before its chain of thought ([presafe](https://arxiv.org/abs/2603.17368)): "
        "LoRA adapters trained on CoT-on targets built from the model's own CoT-off decisions, with an auxiliary "
        "loss that makes the hidden state at t* (the last prompt token before the chain of thought) predict the "
        "safety decision: `L = L_LM(target tokens) + λ · BCE(head(mean_l h_l[t*]), s)`."
        + ("" if hub else f" The base model `{model}` is not a Hugging Face Hub id."), "",
        "## Training", "", "| | |", "|---|---|",
        f"| method | presafe: LoRA + pre-CoT auxiliary decision loss{' (λ = 0: plain SFT ablation)' if not weight else ''} |",
        f"| λ (align.aux.weight) | {weight} |",
        f"| aux layers | {meta.get('aux_layers')} (pooling {aux.get('pooling', 't_star')}, "
        f"{aux.get('target', 'soft')} signals) |",
        f"| LoRA | r = {peft.get('r')}, alpha = {peft.get('lora_alpha')}, dropout = {peft.get('lora_dropout')}, "
        f"modules {sorted(peft.get('target_modules') or [])} |",
        f"| steps | {meta.get('steps')} (learning rate {train.get('learning_rate')}, seed {train.get('seed')}) |",
        f"| training examples | {meta.get('examples')} ({meta.get('skipped_too_long', 0)} dropped as too long) |",
    ]
    targets = _load(source.job / "targets_summary.json") if source.job else None
    signals = _load(source.job / "signals_summary.json") if source.job else None
    if signals:
        lines.append(f"| decision prompts | {signals.get('prompts')} ({signals.get('harmful')} harmful, "
                     f"{signals.get('benign')} benign) |")
    if targets:
        lines.append("| targets | " + ", ".join(f"{k}: {v}" for k, v in targets.items()
                                                  if isinstance(v, (int, float, str))) + " |")
    lines += [f"| job | `{config.get('job_id', '')}`, variant `{source.variant}` |", f"| dtype | {torch_dtype} |", ""]
    ev = _load(source.job / "evaluation.json") if source.job else None
    if ev:
        judges = ", ".join(f"`{j['name']}` ({j['kind']}{', ' + j['path'] if j.get('path') else ''})"
                           for j in ev.get("judges", []))
        lines += ["## Evaluation (held-out prompts)", "",
                  f"Sets: {ev.get('sets')}. Judges: {judges}; headline `{ev.get('headline')}`. Rates with their 95% "
                  "Wilson interval and k/n; ASR = harmful prompts whose final answer complies, CoT-ASR = whose "
                  "thinking complies, over-refusal = benign prompts refused.", ""]
        lines += [f"> {w}" for w in ev.get("warnings", [])] + ([""] if ev.get("warnings") else [])
        lines += evaluation_table(ev, source) + [""]
    else:
        lines += ["## Evaluation", "", "This job has no evaluation.json: the model was not evaluated.", ""]
    load = (["from transformers import AutoModelForCausalLM, AutoTokenizer",
             'model = AutoModelForCausalLM.from_pretrained("DIR")', 'tokenizer = AutoTokenizer.from_pretrained("DIR")']
            if merged else
            ["from peft import PeftModel", "from transformers import AutoModelForCausalLM, AutoTokenizer",
             f'base = AutoModelForCausalLM.from_pretrained("{hub or model}")',
             'model = PeftModel.from_pretrained(base, "DIR")', 'tokenizer = AutoTokenizer.from_pretrained("DIR")'])
    lines += ["## Use", "", "```python", *load, "```", "",
              "## The decision head", "",
              f"`head.safetensors`: a linear layer (`weight` [1, hidden], `bias` [1]) on the mean of the hidden "
              f"states of layers {meta.get('aux_layers')} (1 = first decoder layer) at t*; sigmoid of its output is "
              "the predicted probability that the model should refuse. Load it with "
              "`safetensors.torch.load_file`.", ""]
    return "\n".join(lines)


# -- the hub ----------------------------------------------------------------------------------

def check_hub_access() -> None:
    """Fail before any work when an upload cannot happen: offline mode, or no token."""
    import huggingface_hub
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise HubError("--push-to-hub: the Hugging Face Hub is off (offline mode: HF_HUB_OFFLINE is set); "
                       "unset it on a machine with hub access, or export without --push-to-hub")
    if not huggingface_hub.get_token():
        raise HubError("--push-to-hub: no Hugging Face token (set HF_TOKEN or run `hf auth login`)")


def push_to_hub(folder: Path, repo: str, private: bool = False) -> str:
    """Upload the export folder to `repo` (created if missing); returns the repo's URL."""
    from huggingface_hub import HfApi

    check_hub_access()
    api = HfApi()
    try:
        url = api.create_repo(repo, private=private, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo, commit_message="presafe export")
    except Exception as e:  # noqa: BLE001 - network, auth, permissions: one line naming the cause
        raise HubError(f"--push-to-hub {repo}: the upload failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                       f"the export is complete at {folder}") from e
    return str(url)
