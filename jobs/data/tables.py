"""Read CSV / JSON / JSONL / TXT files into rows that remember their line numbers.

Every error names the file and the line, so a user can open the file and fix it.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from jobs.errors import DataError

FORMATS = ("csv", "json", "jsonl", "txt")


@dataclass
class Row:
    """One record of a table: its fields and where it came from (`file:line`)."""

    fields: dict
    file: str
    line: int

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    def get(self, column: str, required: bool = True, default=None):
        """The value of `column`; a missing or empty required value is a DataError naming the line."""
        value = self.fields.get(column, default)
        if required and (value is None or (isinstance(value, str) and not value.strip())):
            raise DataError(f"{self.where}: column {column!r} is empty or missing")
        return value


def detect_format(path: str | Path) -> str:
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix in FORMATS:
        return suffix
    raise DataError(f"{path}: cannot tell the format from the extension {suffix!r}; set format to one of {FORMATS}")


def read_table(path: str | Path, fmt: str = "auto") -> list[Row]:
    """All rows of a data file. Raises DataError for a missing, empty or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    fmt = detect_format(path) if fmt == "auto" else fmt
    name = str(path)
    if fmt == "csv":
        rows = _read_csv(path, name)
    elif fmt == "jsonl":
        rows = _read_jsonl(path, name)
    elif fmt == "json":
        rows = _read_json(path, name)
    elif fmt == "txt":
        rows = [
            Row({"prompt": line.strip()}, name, i)
            for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
            if line.strip()
        ]
    else:
        raise DataError(f"{path}: unknown format {fmt!r}; expected one of {FORMATS}")
    if not rows:
        raise DataError(f"{path}: file has no data rows")
    return rows


def require_columns(rows: list[Row], columns: list[str]) -> None:
    """Fail once, clearly, when the file lacks a column (instead of on every row)."""
    if not rows:
        return
    present = set(rows[0].fields)
    missing = [c for c in columns if c not in present]
    if missing:
        raise DataError(
            f"{rows[0].file}: missing column(s) {missing}; the file has {sorted(present)}"
            " (map columns with `columns: {{canonical: column_in_file}}`)"
        )


def _read_csv(path: Path, name: str) -> list[Row]:
    rows: list[Row] = []
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None:
            return []
        start = reader.line_num + 1
        try:
            for rec in reader:
                if None in rec:
                    raise DataError(f"{name}:{start}: row has more fields than the header ({len(reader.fieldnames)})")
                if any(v is None for v in rec.values()):
                    raise DataError(f"{name}:{start}: row has fewer fields than the header ({len(reader.fieldnames)})")
                rows.append(Row(dict(rec), name, start))
                start = reader.line_num + 1
        except csv.Error as e:
            raise DataError(f"{name}:{reader.line_num}: malformed CSV: {e}") from None
    return rows


def _read_jsonl(path: Path, name: str) -> list[Row]:
    rows = []
    with path.open(encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{name}:{i}: malformed JSON: {e.msg} (column {e.colno})") from None
            if not isinstance(rec, dict):
                raise DataError(f"{name}:{i}: expected a JSON object per line, got {type(rec).__name__}")
            rows.append(Row(rec, name, i))
    return rows


def _read_json(path: Path, name: str) -> list[Row]:
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        return []
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{name}:{e.lineno}: malformed JSON: {e.msg} (column {e.colno})") from None
    if isinstance(data, dict):
        # {"data": [...]} or {"rows": [...]} wrappers are common.
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise DataError(f"{name}: expected a JSON list of objects")
        data = lists[0]
    if not isinstance(data, list):
        raise DataError(f"{name}: expected a JSON list of objects, got {type(data).__name__}")
    # Line numbers of list items are not kept by json; find each object's opening line.
    starts = _object_start_lines(text)
    rows = []
    for i, rec in enumerate(data):
        line = starts[i] if i < len(starts) else 0
        if not isinstance(rec, dict):
            raise DataError(f"{name}:{line}: item {i} is {type(rec).__name__}, expected an object")
        rows.append(Row(rec, name, line))
    return rows


def _object_start_lines(text: str) -> list[int]:
    """Line of each top-level list item's `{` (depth-2 braces), ignoring braces in strings."""
    lines, depth, line, in_str, esc = [], 0, 1, False, False
    for ch in text:
        if ch == "\n":
            line += 1
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
            continue
        if ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            if ch == "{" and depth == 2:
                lines.append(line)
        elif ch in "]}":
            depth -= 1
    return lines
