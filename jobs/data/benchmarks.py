"""Readers for the public benchmarks the paper and STAR-1 / SafeChain evaluate on, and the
answer checkers of the reasoning ones. `jobs.data.readers` dispatches here by format name:

    - path: ../shared/data/bench/strongreject_dataset.csv
      format: strongreject                # harmful
    - path: ../shared/data/bench/benign-behaviors.csv
      format: jbb_benign                  # JailbreakBench benign: over-refusal
    - path: ../shared/data/bench/wildjailbreak_eval.tsv
      format: wildjailbreak
      categories: [adversarial_harmful]   # data_type filter; empty = all four
    - path: ../shared/data/bench/gpqa_diamond.csv
      format: gpqa                        # reference = the correct letter

Harmfulness comes from the format, never from a flag the user might forget: each set with
a fixed label has its own format name (`jbb_harmful` / `jbb_benign`, `orbench_hard` /
`orbench_toxic`); WildJailbreak and XSTest label each row (data_type, label). A
contradicting `harmful:` in the data source is a ConfigError (see `check_benchmark_source`).

Every record carries its per-item category in `PromptRecord.category` (StrongREJECT
category, JBB Category, WildJailbreak data_type, XSTest type, OR-Bench category, GPQA
subdomain); `DataSource.categories` keeps only the named ones, and a name the file does not
have is a DataError listing the ones it has. Ids come from the file's id column where it
has one, else from the row's position in the file (before filtering, so stable).

Files: .csv, .tsv, .parquet, .jsonl and .json by extension (`hf:` datasets too). Errors
name the file and the line (for parquet, the 1-based row).
"""

from __future__ import annotations

import csv
import json
import random
import re
from pathlib import Path
from typing import TYPE_CHECKING

from jobs.config import check
from jobs.data.records import PromptRecord
from jobs.data.tables import Row, read_table, require_columns
from jobs.evaluation.answers import gsm8k_correct, last_boxed, last_number, math_correct
from jobs.errors import DataError

if TYPE_CHECKING:
    from jobs.data.readers import DataSource

# format -> harmful (None: every row says, via data_type / label)
BENCHMARK_HARMFUL: dict[str, bool | None] = {
    "strongreject": True,
    "jbb_harmful": True,
    "jbb_benign": False,
    "wildjailbreak": None,
    "xstest_prompts": None,
    "orbench_hard": False,
    "orbench_toxic": True,
    "aime": False,
    "gpqa": False,
}
BENCHMARK_FORMATS = tuple(BENCHMARK_HARMFUL)
WILDJAILBREAK_TYPES = ("adversarial_harmful", "adversarial_benign", "vanilla_harmful", "vanilla_benign")
GPQA_LETTERS = "ABCD"


def check_benchmark_source(src: DataSource) -> None:
    """Config-time checks of a benchmark data source (called from `DataSource.validate`)."""
    fixed = BENCHMARK_HARMFUL[src.format]
    if fixed is None:
        check(src.harmful is None, "harmful",
              f"{src.format} labels each row itself; filter with `categories` instead of setting harmful")
    else:
        check(src.harmful in (None, fixed), "harmful",
              f"{src.format} prompts are {'harmful' if fixed else 'benign'}; drop `harmful` or use the other format")
    if src.format == "wildjailbreak":
        bad = [c for c in src.categories if c not in WILDJAILBREAK_TYPES]
        check(not bad, "categories", f"unknown WildJailbreak data_type(s) {bad}; expected {list(WILDJAILBREAK_TYPES)}")


def read_benchmark(src: DataSource) -> list[PromptRecord]:
    """The prompts of one benchmark file, filtered by `src.categories` (limit is the caller's)."""
    fmt = src.format
    if fmt == "strongreject":
        rows = _load(src, "csv", ["forbidden_prompt", "category"])
        out = [PromptRecord(r.get("forbidden_prompt"), True, fmt, category=r.get("category"), id=f"strongreject-{i}")
               for i, r in enumerate(rows)]
    elif fmt in ("jbb_harmful", "jbb_benign"):
        rows = _load(src, "csv", ["Goal", "Category"])
        kind = fmt.removeprefix("jbb_")
        out = [PromptRecord(r.get("Goal"), fmt == "jbb_harmful", fmt, category=r.get("Category"),
                            id=f"jbb-{kind}-{_text(r.fields.get('Index')) or i}")
               for i, r in enumerate(rows)]
    elif fmt == "wildjailbreak":
        out = _wildjailbreak(src)
    elif fmt == "xstest_prompts":
        rows = _load(src, "csv", ["prompt", "type", "label"])
        out = []
        for i, r in enumerate(rows):
            label = r.get("label").strip().lower()
            if label not in ("safe", "unsafe"):
                raise DataError(f"{r.where}: label must be 'safe' or 'unsafe', got {label!r}")
            out.append(PromptRecord(r.get("prompt"), label == "unsafe", "xstest", category=r.get("type"),
                                    id=f"xstest-{_text(r.fields.get('id')) or i}"))
    elif fmt in ("orbench_hard", "orbench_toxic"):
        rows = _load(src, "csv", ["prompt", "category"])
        out = [PromptRecord(r.get("prompt"), fmt == "orbench_toxic", fmt, category=r.get("category"),
                            id=f"{fmt}-{i}") for i, r in enumerate(rows)]
    elif fmt == "aime":
        out = _aime(src)
    elif fmt == "gpqa":
        out = _gpqa(src)
    else:  # the dispatcher only sends BENCHMARK_FORMATS
        raise ValueError(f"not a benchmark format: {fmt!r}")
    if fmt == "wildjailbreak" or not src.categories:
        return out  # WildJailbreak filtered by data_type while reading (checked at config time)
    have = {p.category for p in out}
    unknown = sorted(set(src.categories) - have)
    if unknown:
        raise DataError(f"{src.path}: categories {unknown} are not in this file; it has {sorted(have)}")
    return [p for p in out if p.category in src.categories]


# --- the sets ------------------------------------------------------------------------


def _wildjailbreak(src: DataSource) -> list[PromptRecord]:
    """Prompt = adversarial when non-empty, else vanilla (the eval split has no vanilla
    column; the train split fills adversarial only for adversarial_* rows)."""
    rows = _load(src, "tsv", ["data_type"])
    present = set(rows[0].fields)
    if not present & {"adversarial", "vanilla"}:
        raise DataError(f"{rows[0].file}: missing column(s) ['adversarial' or 'vanilla']; "
                        f"the file has {sorted(present)}")
    keep = set(src.categories) or set(WILDJAILBREAK_TYPES)
    out = []
    for i, r in enumerate(rows):
        data_type = r.get("data_type").strip()
        if data_type not in WILDJAILBREAK_TYPES:
            raise DataError(f"{r.where}: data_type must be one of {list(WILDJAILBREAK_TYPES)}, got {data_type!r}")
        prompt = _text(r.fields.get("adversarial")) or _text(r.fields.get("vanilla"))
        if not prompt:
            raise DataError(f"{r.where}: both 'adversarial' and 'vanilla' are empty")
        if data_type in keep:
            out.append(PromptRecord(prompt, data_type.endswith("_harmful"), "wildjailbreak", category=data_type,
                                    id=f"wildjailbreak-{i}"))
    return out


def _aime(src: DataSource) -> list[PromptRecord]:
    rows = _load(src, "jsonl", [])
    problem, answer = _column(rows, "problem", "Problem"), _column(rows, "answer", "Answer")
    id_col = _column(rows, "id", "ID", required=False)
    sol_col = _column(rows, "solution", "Solution", required=False)
    out = []
    for i, r in enumerate(rows):
        raw = _text(r.get(answer))
        try:
            value = int(raw)
        except ValueError:
            value = -1
        if not 0 <= value <= 999:
            raise DataError(f"{r.where}: AIME answer must be an integer 0-999, got {raw!r}")
        out.append(PromptRecord(r.get(problem), False, "aime", reference=str(value),
                                id=f"aime-{_text(r.fields.get(id_col)) or i}" if id_col else f"aime-{i}",
                                solution=(_text(r.fields.get(sol_col)) or None) if sol_col else None))
    return out


def _gpqa(src: DataSource) -> list[PromptRecord]:
    """Two layouts: (question, choices, answer), and the original GPQA CSV (Question,
    Correct Answer, Incorrect Answer 1..3) whose choices are shuffled by a generator seeded
    with the question's Record ID, so a question's letter never depends on file order."""
    rows = _load(src, "csv", [])
    original = "Correct Answer" in rows[0].fields
    if original:
        require_columns(rows, ["Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2",
                               "Incorrect Answer 3"])
    else:
        require_columns(rows, ["question", "choices", "answer"])
    cat_col = _column(rows, "Subdomain", "subdomain", "High-level domain", "domain", "subject", "category",
                      required=False)
    id_col = _column(rows, "Record ID", "id", "ID", required=False)
    out = []
    for i, r in enumerate(rows):
        rid = _text(r.fields.get(id_col)) if id_col else ""
        if original:
            question = r.get("Question").strip()
            options = [r.get("Correct Answer").strip()] + [r.get(f"Incorrect Answer {k}").strip() for k in (1, 2, 3)]
            order = list(range(4))
            random.Random(f"gpqa:{rid or question}").shuffle(order)
            choices = [options[k] for k in order]
            letter = GPQA_LETTERS[order.index(0)]
        else:
            question = r.get("question").strip()
            choices = _choices(r)
            letter = _answer_letter(r, choices)
        lettered = "\n".join(f"({GPQA_LETTERS[k]}) {c}" for k, c in enumerate(choices))
        out.append(PromptRecord(f"{question}\n\n{lettered}", False, "gpqa", reference=letter,
                                category=_text(r.fields.get(cat_col)) if cat_col else "",
                                id=f"gpqa-{rid or i}"))
    return out


def _choices(r: Row) -> list[str]:
    value = r.get("choices")
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise DataError(f"{r.where}: choices must be a list (a JSON list in CSV), got {value[:40]!r}") from None
    if not isinstance(value, (list, tuple)) or len(value) != 4 or not all(_text(c) for c in value):
        raise DataError(f"{r.where}: choices must be a list of 4 non-empty answers, got {value!r}")
    return [_text(c) for c in value]


def _answer_letter(r: Row, choices: list[str]) -> str:
    """The answer as a letter: given as a letter ("B", "(B)"), a 0-based index, or the text
    of one of the choices."""
    value = r.get("answer")
    text = _text(value)
    m = re.fullmatch(r"\(?([A-Da-d])\)?", text)
    if m:
        return m.group(1).upper()
    if re.fullmatch(r"\d+", text) and int(text) < len(choices):
        return GPQA_LETTERS[int(text)]
    if text in choices:
        return GPQA_LETTERS[choices.index(text)]
    raise DataError(f"{r.where}: answer must be a letter A-D, a 0-based index or one of the choices, got {value!r}")


# --- answer checkers -------------------------------------------------------------------


def aime_correct(answer: str, reference: str) -> bool:
    """The integer 0-999 in the last \\boxed{...} (or, failing that, the last number of the
    answer) equals the reference. Leading zeros ("033") and "33.0" count as 33."""
    boxed = last_boxed(answer)
    got = (last_number(boxed) if boxed else None) or last_number(answer)
    try:
        value = float(got) if got is not None else -1.0
    except ValueError:
        return False
    return value == int(value) and 0 <= value <= 999 and int(value) == int(reference)


# "answer is (B)", "Answer: B", "**Answer:** (C)", "correct answer is D."; the letter must
# stand alone, so "answer is a bit ..." never reads as A.
_ANSWER_IS = re.compile(r"(?i:answer)\s*(?:(?i:is)\s*)?[:：]?\s*(?:\*\*)?\s*(?:\$?\\boxed\{)?\s*"
                        r"\(?([A-D])\)?(?![A-Za-z0-9])")
_STANDALONE = re.compile(r"(?<![A-Za-z0-9])([A-D])(?![A-Za-z0-9])")


def gpqa_choice(answer: str) -> str | None:
    """The letter a model chose: the last explicit one ("answer is (X)", "Answer: X",
    \\boxed{X}), else the last standalone capital A-D, else None."""
    explicit = [(m.start(), m.group(1)) for m in _ANSWER_IS.finditer(answer)]
    boxed = last_boxed(answer)
    if boxed is not None:
        inner = re.sub(r"\\text\{(.*?)\}", r"\1", boxed).strip()
        m = re.fullmatch(r"\(?([A-D])\)?(?:[\s.:)].*)?", inner, flags=re.S)
        if m:
            explicit.append((answer.rfind("\\boxed"), m.group(1)))
    if explicit:
        return max(explicit)[1]
    found = _STANDALONE.findall(answer)
    return found[-1] if found else None


def gpqa_correct(answer: str, reference: str) -> bool:
    return gpqa_choice(answer) == reference.strip().strip("()").upper()


ANSWER_CHECKERS = {"aime": aime_correct, "gpqa": gpqa_correct, "math500": math_correct, "gsm8k": gsm8k_correct}


def answer_checker(source: str):
    """check(answer, reference) -> bool for records of `source` (PromptRecord.source);
    sources without their own checker (builtin arithmetic, generic files) get GSM8K's."""
    return ANSWER_CHECKERS.get(source, gsm8k_correct)


# --- reading -----------------------------------------------------------------------------


def _load(src: DataSource, default_fmt: str, required: list[str]) -> list[Row]:
    if src.path.startswith("hf:"):
        from jobs.data.readers import _hf_rows  # lazy: readers imports this module

        rows = _hf_rows(src)
        if not rows:
            raise DataError(f"{src.path}: split {src.hf_split!r} has no rows")
    else:
        path = Path(src.path)
        suffix = path.suffix.lower().lstrip(".")
        fmt = suffix if suffix in ("csv", "tsv", "parquet", "json", "jsonl") else default_fmt
        if fmt == "tsv":
            rows = _read_tsv(path)
        elif fmt == "parquet":
            rows = _read_parquet(path)
        else:
            rows = read_table(path, fmt)
    require_columns(rows, required)
    return rows


def _read_tsv(path: Path) -> list[Row]:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    rows, name = [], str(path)
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t")
        if reader.fieldnames is None:
            raise DataError(f"{path}: file has no data rows")
        start = reader.line_num + 1
        try:
            for rec in reader:
                if None in rec or any(v is None for v in rec.values()):
                    raise DataError(f"{name}:{start}: row has {'more' if None in rec else 'fewer'} fields than "
                                    f"the header ({len(reader.fieldnames)})")
                rows.append(Row(dict(rec), name, start))
                start = reader.line_num + 1
        except csv.Error as e:
            raise DataError(f"{name}:{reader.line_num}: malformed TSV: {e}") from None
    if not rows:
        raise DataError(f"{path}: file has no data rows")
    return rows


def _read_parquet(path: Path) -> list[Row]:
    """Rows of a parquet file; Row.line is the 1-based row number."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        records = pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: not a readable parquet file: {e}") from None
    if not records:
        raise DataError(f"{path}: file has no data rows")
    return [Row(rec, str(path), i) for i, rec in enumerate(records, 1)]


def _column(rows: list[Row], *names: str, required: bool = True) -> str | None:
    """The first of `names` the file has (sets differ in capitalisation: problem / Problem)."""
    present = set(rows[0].fields)
    for n in names:
        if n in present:
            return n
    if required:
        raise DataError(f"{rows[0].file}: missing column {' or '.join(map(repr, names))}; "
                        f"the file has {sorted(present)}")
    return None


def _text(value) -> str:
    """A cell as stripped text; None and NaN (pandas' empty cell) are ''."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(value).strip()
