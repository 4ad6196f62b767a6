"""Job artifacts written atomically: a reader never sees a half-written file."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from jobs.data.tables import read_table
from jobs.errors import DataError


def _atomic_write(path: str | Path, write: Callable[[TextIO], None]) -> Path:
    """Write to a temporary file beside `path`, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_jsonl(path: str | Path, rows: list[dict]) -> Path:
    return _atomic_write(path, lambda f: f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def write_text(path: str | Path, text: str) -> Path:
    return _atomic_write(path, lambda f: f.write(text))


def write_json(path: str | Path, data) -> Path:
    return _atomic_write(path, lambda f: json.dump(data, f, indent=2, default=str))


def read_jsonl(path: str | Path, stage_hint: str = "") -> list[dict]:
    """Rows of a stage artifact; a missing file names the stage that writes it."""
    path = Path(path)
    if not path.is_file():
        hint = f" (run the {stage_hint} stage first)" if stage_hint else ""
        raise DataError(f"{path}: not found{hint}")
    return [row.fields for row in read_table(path, "jsonl")]


def publish_dir(src: Path, dst: Path) -> None:
    """Move a finished folder into place in one rename, so `dst` is never half-written."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if dst.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.old.", dir=dst.parent))
        os.replace(dst, old / "x")
    os.replace(src, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
