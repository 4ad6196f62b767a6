"""Which files a submitted job config may read: only those under the service's data roots.

A config reaches the service from the network, so every `DataSource.path` in it is
checked before the job is recorded: `builtin:` sets (presafe writes them) pass, `hf:`
datasets when their name matches one of the operator's patterns (`paths.hub_datasets`;
the job downloads them with the cluster's network and credentials); a file path must resolve, symlinks followed, to a place inside one
of `ServiceSettings.data_roots`. Relative paths are looked up under each root in turn
and rewritten to the absolute path that was checked, so the job reads exactly that file.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
from pathlib import Path

from jobs.data.readers import DataSource
from jobs.errors import ConfigError


def data_sources(obj, key: str = "") -> list[tuple[str, DataSource]]:
    """Every DataSource in a config tree, with its dotted key path (lists as `a.b[0]`)."""
    if isinstance(obj, DataSource):
        return [(key, obj)]
    out = []
    if dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            out += data_sources(getattr(obj, f.name), f"{key}.{f.name}" if key else f.name)
    elif isinstance(obj, list):
        for i, item in enumerate(obj):
            out += data_sources(item, f"{key}[{i}]")
    return out


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def real_path(value: str | Path) -> Path | None:
    """`value` with symlinks followed, or None for a string no file system could hold (a
    NUL byte, a name too long, a symlink loop). A request's `~` is not expanded: the
    service's home is not the caller's."""
    try:
        return Path(os.path.realpath(value, strict=False))
    except (ValueError, OSError, RuntimeError):
        return None


def exists(path: Path | None) -> bool:
    """Path.exists that answers False, not OSError, for a name the file system refuses."""
    try:
        return path is not None and path.exists()
    except (ValueError, OSError):
        return False


def confine_data_paths(cfg, roots: list[str], hub_datasets: list[str] | None = None) -> None:
    """Check (and make absolute) every data path of `cfg` in place; ConfigError names the
    key path of the first one outside the roots. `hub_datasets`: fnmatch patterns of the
    `hf:` names allowed (None: any)."""
    real_roots = [Path(os.path.realpath(r)) for r in roots]
    for key, src in data_sources(cfg):
        if src.path.startswith("builtin:"):
            continue
        if src.path.startswith("hf:"):
            name = src.path.removeprefix("hf:")
            if hub_datasets is None or any(fnmatch.fnmatchcase(name, p) for p in hub_datasets):
                continue
            raise ConfigError(f"{key}.path: {src.path!r}: this hub dataset is not allowed (paths.hub_datasets: "
                              f"{hub_datasets or 'none'})", key=f"{key}.path")
        raw = Path(src.path)
        candidates = [raw] if raw.is_absolute() else [Path(r) / raw for r in roots]
        resolved = None
        for c in candidates:
            real = real_path(c)
            if real is not None and any(_inside(real, r) for r in real_roots):
                resolved = real
                if exists(real):
                    break
        where = f"{key}.path"
        if not real_roots:
            raise ConfigError(f"{where}: {src.path!r}: this service reads no files (no data_roots configured); "
                              "use builtin: sets or ask the operator to add a data root", key=where)
        if resolved is None:
            raise ConfigError(f"{where}: {src.path!r} is outside the service's data roots "
                              f"({', '.join(map(str, real_roots))})", key=where)
        if not exists(resolved):
            raise ConfigError(f"{where}: {src.path!r} not found under the data roots ({', '.join(roots)})", key=where)
        src.path = str(resolved)
