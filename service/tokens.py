"""The tokens file: what `presafe tokens add | list | revoke` edit and the service re-reads
when it changes (service.auth), so adding or revoking a token needs no redeploy.

    token = add_token(path, "alice", ["jobs:read", "jobs:write", "classify"])   # shown once
    revoke_token(path, "alice")

The file holds only SHA-256 hashes (a YAML list of `TokenSpec`), is written atomically
(a reader never sees half a file) and readable by its owner alone. Tokens are made here,
never taken from a command line: process arguments are visible to every user of a machine.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from jobs.errors import PresafeError
from service.settings import ALL_SCOPES, TokenSpec, hash_token, new_token


def read_tokens(path: str | Path) -> list[TokenSpec]:
    p = Path(path)
    if not p.is_file():
        return []
    return [TokenSpec.model_validate(t) for t in yaml.safe_load(p.read_text()) or []]


def write_tokens(path: str | Path, tokens: list[TokenSpec]) -> None:
    rows = []
    for t in tokens:
        row = {"name": t.name, "sha256": t.sha256, "scopes": list(t.scopes)}
        if t.max_running_jobs is not None:
            row["max_running_jobs"] = t.max_running_jobs
        if t.max_priority:
            row["max_priority"] = t.max_priority
        rows.append(row)
    write_private(Path(path), yaml.safe_dump(rows, sort_keys=False))


def add_token(path: str | Path, name: str, scopes: list[str] | None = None, max_running_jobs: int | None = None,
              max_priority: int = 0, replace: bool = False) -> str:
    """A new token for `name` (returned, never stored); its hash goes into the file. A name
    that has a token already is an error unless `replace` (then the old one is revoked)."""
    tokens = read_tokens(path)
    if any(t.name == name for t in tokens) and not replace:
        raise PresafeError(f"{path}: {name!r} has a token already (revoke it first, or replace it)")
    token = new_token()
    spec = TokenSpec(name=name, sha256=hash_token(token), scopes=list(scopes or ALL_SCOPES),
                     max_running_jobs=max_running_jobs, max_priority=max_priority)
    write_tokens(path, [t for t in tokens if t.name != name] + [spec])
    return token


def revoke_token(path: str | Path, name: str) -> int:
    """Remove every token of `name`; returns how many there were (0: none, an error to the CLI)."""
    tokens = read_tokens(path)
    kept = [t for t in tokens if t.name != name]
    if len(kept) != len(tokens):
        write_tokens(path, kept)
    return len(tokens) - len(kept)


def write_private(path: Path, text: str) -> None:
    """Write a file only the user can read (it holds a token or token hashes), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
