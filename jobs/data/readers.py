"""Named readers for public safety / reasoning sets, and generic files with column mapping.

`DataSource` is the config block every job uses to point at data:

    - path: ../shared/data/prompts/harmful/harmbench_behaviors_text_all.csv
      format: harmbench
      categories: [standard, contextual]
    - path: my_rows.jsonl            # generic: map your columns
      columns: {prompt: question, response: answer, label: decision}
    - path: hf:walledai/AdvBench      # Hugging Face datasets (needs hub access)
      columns: {prompt: prompt}
      harmful: true
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from jobs.config import check
from jobs.data.benchmarks import BENCHMARK_FORMATS, check_benchmark_source, read_benchmark
from jobs.data.records import COMPLY, REFUSE, Example, PromptRecord, parse_label
from jobs.data.tables import Row, read_table, require_columns
from jobs.errors import DataError

NAMED_FORMATS = (
    "xstest", "advbench", "harmbench", "malicious_instruct", "donotanswer",
    "alpaca", "gsm8k", "math500", "builtin",
) + BENCHMARK_FORMATS  # strongreject, jbb_harmful|benign, wildjailbreak, ... (jobs/data/benchmarks.py)
GENERIC_FORMATS = ("auto", "csv", "json", "jsonl", "txt")
HARMBENCH_CATEGORIES = ("standard", "contextual", "copyright")


@dataclass
class DataSource:
    """Where rows come from and how to read them."""

    path: str
    """A file or folder; `hf:<dataset>` for Hugging Face datasets; `builtin:<name>` for the
    sets presafe generates itself: `decisions` (classifier rows) and the demo prompt sets
    (demo-harmful-train|heldout, demo-benign-train|heldout, arithmetic-train|heldout,
    borderline-train|heldout, content-harmful|benign-train|heldout)."""
    format: str = "auto"
    """A named format (xstest, advbench, harmbench, malicious_instruct, donotanswer, alpaca,
    gsm8k, math500; the benchmarks strongreject, jbb_harmful, jbb_benign, wildjailbreak,
    xstest_prompts, orbench_hard, orbench_toxic, aime, gpqa: see jobs/data/benchmarks.py) or
    a generic one (auto, csv, json, jsonl, txt)."""
    columns: dict[str, str] = field(default_factory=dict)
    """Generic formats: canonical name -> column in the file. Canonical names: prompt,
    response, label, group, reference."""
    harmful: bool | None = None
    """Prompt sets: are these prompts harmful? Named formats know; generic ones need it for
    prompt-only classifier rows (harmful -> refuse, benign -> comply)."""
    categories: list[str] = field(default_factory=list)
    """HarmBench FunctionalCategory filter (standard, contextual, copyright); empty = all but
    copyright. Do-Not-Answer: file stems to keep; empty = all but human_chatbox. XSTest
    prompts: the `type`s to keep (e.g. homonyms, definitions; contrast_* types are unsafe);
    empty = all. Benchmarks (jobs/data/benchmarks.py): the categories to keep (WildJailbreak:
    data_type values); empty = all."""
    limit: int | None = None
    """Keep only the first N rows (after filtering)."""
    hf_split: str = "train"

    def validate(self) -> None:
        check(self.format in NAMED_FORMATS + GENERIC_FORMATS, "format",
              f"unknown format {self.format!r}; expected one of {list(NAMED_FORMATS + GENERIC_FORMATS)}")
        check(self.limit is None or self.limit > 0, "limit", "must be > 0")
        if self.format in BENCHMARK_FORMATS:
            check_benchmark_source(self)
        if self.format == "harmbench":
            bad = [c for c in self.categories if c not in HARMBENCH_CATEGORIES]
            check(not bad, "categories", f"unknown HarmBench categories {bad}; expected {list(HARMBENCH_CATEGORIES)}")
        canon = {"prompt", "response", "label", "group", "reference"}
        bad = [k for k in self.columns if k not in canon]
        check(not bad, "columns", f"unknown canonical column(s) {bad}; expected some of {sorted(canon)}")


# --- prompts -----------------------------------------------------------------------


def read_prompts(src: DataSource) -> list[PromptRecord]:
    """Prompts (with harmful flag, category and reference answer where the set has them)."""
    fmt = src.format
    if fmt == "advbench":
        rows = _rows(src, "csv", ["goal"])
        out = [PromptRecord(r.get("goal"), True, "advbench", id=f"advbench-{i}") for i, r in enumerate(rows)]
    elif fmt == "harmbench":
        out = _harmbench(src)
    elif fmt == "malicious_instruct":
        rows = _rows(src, "txt", ["prompt"])
        out = [PromptRecord(r.get("prompt"), True, "malicious_instruct", id=f"mi-{i}") for i, r in enumerate(rows)]
    elif fmt == "donotanswer":
        out = _donotanswer(src)
    elif fmt == "alpaca":
        rows = _rows(src, "json", ["instruction"])
        out = [
            PromptRecord(r.get("instruction"), False, "alpaca", category=r.fields.get("category") or "", id=f"alpaca-{i}")
            for i, r in enumerate(rows)
        ]
    elif fmt == "gsm8k":
        rows = _rows(src, "jsonl", ["question", "answer"])
        out = [
            PromptRecord(r.get("question"), False, "gsm8k", reference=gsm8k_answer(r.get("answer"), r.where),
                         id=f"gsm8k-{i}", solution=r.get("answer").split("####")[0].strip())
            for i, r in enumerate(rows)
        ]
    elif fmt == "math500":
        rows = _rows(src, "jsonl", ["problem", "answer"])
        out = [
            PromptRecord(r.get("problem"), False, "math500", category=str(r.fields.get("subject", "")),
                         reference=str(r.get("answer")), id=str(r.fields.get("unique_id") or f"math500-{i}"),
                         solution=r.fields.get("solution"))
            for i, r in enumerate(rows)
        ]
    elif fmt == "builtin" and src.path.removeprefix("builtin:") != "decisions":
        from jobs.data.demo_corpus import builtin_prompts

        out = builtin_prompts(src.path.removeprefix("builtin:"))
    elif fmt == "xstest":
        out = _xstest_prompts(src)
    elif fmt in BENCHMARK_FORMATS:
        out = read_benchmark(src)
    elif fmt == "builtin":
        out = []
        seen = set()
        for ex in read_examples(src):
            if ex.prompt not in seen:
                seen.add(ex.prompt)
                out.append(PromptRecord(ex.prompt, ex.meta.get("harmful"), ex.source, id=ex.group))
    else:
        rows = _rows(src, src.format, [src.columns.get("prompt", "prompt")])
        pcol = src.columns.get("prompt", "prompt")
        rcol = src.columns.get("reference")
        out = [
            PromptRecord(r.get(pcol), src.harmful, Path(src.path).stem,
                         reference=(str(r.get(rcol)) if rcol else None), id=f"{Path(src.path).stem}-{i}")
            for i, r in enumerate(rows)
        ]
    return out[: src.limit] if src.limit else out


def gsm8k_answer(solution: str, where: str = "") -> str:
    """The number after `####` in a GSM8K solution, without thousands separators."""
    m = re.search(r"####\s*(.+?)\s*$", solution.strip())
    if not m:
        raise DataError(f"{where}: GSM8K answer has no '#### <number>' line")
    return m.group(1).replace(",", "").strip()


def _harmbench(src: DataSource) -> list[PromptRecord]:
    rows = _rows(src, "csv", ["Behavior", "FunctionalCategory"])
    keep = set(src.categories) if src.categories else {"standard", "contextual"}
    out = []
    for r in rows:
        cat = r.get("FunctionalCategory")
        if cat not in keep:
            continue
        prompt = r.get("Behavior")
        if cat == "contextual":
            # Contextual behaviours are meaningless without their context string.
            prompt = f"{r.get('ContextString')}\n\n---\n\n{prompt}"
        out.append(PromptRecord(prompt, True, "harmbench", category=r.fields.get("SemanticCategory") or cat,
                                id=r.fields.get("BehaviorID") or r.where))
    return out


def _donotanswer(src: DataSource) -> list[PromptRecord]:
    root = Path(src.path)
    files = sorted(root.glob("*.jsonl")) if root.is_dir() else [root]
    if not files:
        raise DataError(f"{root}: no *.jsonl files in this folder")
    # human_chatbox holds questions about the assistant itself (feelings, medical advice
    # for the user): not harmful requests, so it is left out unless asked for by name.
    keep = set(src.categories) if src.categories else {f.stem for f in files} - {"human_chatbox"}
    out = []
    for f in files:
        if f.stem not in keep:
            continue
        rows = read_table(f, "jsonl")
        require_columns(rows, ["prompt"])
        out += [PromptRecord(r.get("prompt"), True, "donotanswer", category=f.stem, id=f"dna-{f.stem}-{i}")
                for i, r in enumerate(rows)]
    return out


# --- classifier examples ----------------------------------------------------------


def read_examples(src: DataSource) -> list[Example]:
    """Labelled classifier rows: pairs labelled by decision, prompt-only rows by harmfulness."""
    if src.format == "builtin" and src.path.removeprefix("builtin:") != "decisions":
        out = [_prompt_only(p, p.harmful, p.source) for p in read_prompts(src)]
    elif src.format == "builtin":
        from jobs.data.builtin import builtin_examples

        out = builtin_examples(src.path.removeprefix("builtin:"))
    elif src.format == "xstest":
        out = _xstest(src)
    elif src.format in NAMED_FORMATS:
        out = [_prompt_only(p, p.harmful, p.source) for p in read_prompts(src)]
    else:
        out = _generic_examples(src)
    return out[: src.limit] if src.limit else out


def _prompt_only(p: PromptRecord, harmful: bool | None, where: str) -> Example:
    if harmful is None:
        raise DataError(f"{where}: prompt-only rows need `harmful: true|false` in the data source")
    return Example(p.prompt, None, REFUSE if harmful else COMPLY, p.source, group=p.prompt, meta={"harmful": harmful})


def _xstest_prompts(src: DataSource) -> list[PromptRecord]:
    """XSTest's prompts, once each, labelled by prompt_label; `categories` keeps only the
    named XSTest types (e.g. the safe ones for over-refusal training)."""
    out, seen = [], set()
    types = set()
    for ex in _xstest(src):
        types.add(ex.meta["type"])
        if ex.group in seen or (src.categories and ex.meta["type"] not in src.categories):
            continue
        seen.add(ex.group)
        out.append(PromptRecord(ex.prompt, ex.meta["harmful"], "xstest", category=ex.meta["type"], id=ex.group))
    unknown = sorted(set(src.categories) - types)
    if unknown:
        raise DataError(f"{src.path}: categories {unknown} are not XSTest types in this file; it has {sorted(types)}")
    return out


def _xstest(src: DataSource) -> list[Example]:
    """XSTest completions: a pair per (prompt, model answer), plus one prompt-only row per
    prompt labelled by prompt_label (unsafe -> refuse, safe -> comply)."""
    rows = _rows(src, "csv", ["id", "model", "prompt_label", "prompt", "completion", "decision"])
    out, seen = [], set()
    for r in rows:
        prompt_label = r.get("prompt_label").strip().lower()
        if prompt_label not in ("safe", "unsafe"):
            raise DataError(f"{r.where}: prompt_label must be 'safe' or 'unsafe', got {prompt_label!r}")
        harmful = prompt_label == "unsafe"
        meta = {"model": r.get("model"), "type": r.fields.get("type", ""), "harmful": harmful, "id": r.get("id")}
        out.append(Example(r.get("prompt"), r.get("completion"), parse_label(r.get("decision"), r.where),
                           "xstest", group=r.get("id"), meta=meta))
        if r.get("id") not in seen:
            seen.add(r.get("id"))
            out.append(Example(r.get("prompt"), None, REFUSE if harmful else COMPLY, "xstest",
                               group=r.get("id"), meta={**meta, "model": ""}))
    return out


def _generic_examples(src: DataSource) -> list[Example]:
    cols = {k: src.columns.get(k, k) for k in ("prompt", "response", "label", "group")}
    rows = _rows(src, src.format, [cols["prompt"]])
    has_response = cols["response"] in rows[0].fields
    has_label = cols["label"] in rows[0].fields
    if has_response and not has_label:
        raise DataError(f"{rows[0].file}: rows with responses need a label column ({cols['label']!r} not found)")
    if not has_label and src.harmful is None:
        raise DataError(
            f"{rows[0].file}: no label column {cols['label']!r}; add one (refuse/comply) or set "
            "`harmful: true|false` for a prompt-only set"
        )
    out = []
    for r in rows:
        prompt = r.get(cols["prompt"])
        response = r.fields.get(cols["response"]) if has_response else None
        response = response if (isinstance(response, str) and response.strip()) else None
        if has_label:
            label = parse_label(r.get(cols["label"]), r.where)
        else:
            label = REFUSE if src.harmful else COMPLY
        group = str(r.fields.get(cols["group"]) or prompt)
        out.append(Example(prompt, response, label, Path(src.path).stem, group=group, meta={"line": r.line}))
    return out


def _rows(src: DataSource, default_fmt: str, required: list[str]) -> list[Row]:
    if src.path.startswith("hf:"):
        rows = _hf_rows(src)
    else:
        fmt = default_fmt if src.format in NAMED_FORMATS else src.format
        rows = read_table(src.path, fmt)
    require_columns(rows, required)
    return rows


def _hf_rows(src: DataSource) -> list[Row]:
    name = src.path.removeprefix("hf:")
    try:
        import datasets
    except ImportError:
        raise DataError(f"{src.path}: Hugging Face datasets need `pip install presafe[hub]`") from None
    try:
        ds = datasets.load_dataset(name, split=src.hf_split)
    except Exception as e:  # hub errors come in many types; the user needs the cause
        raise DataError(f"{src.path}: could not load split {src.hf_split!r}: {e}") from None
    label = f"hf:{name}[{src.hf_split}]"
    return [Row(dict(rec), label, i + 1) for i, rec in enumerate(ds)]
