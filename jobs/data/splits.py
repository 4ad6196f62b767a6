"""Deterministic splits: by seed (grouped, so one prompt never straddles two splits),
and by a column value (hold out one `model` to test generalisation)."""

from __future__ import annotations

import hashlib
from typing import Callable, Sequence, TypeVar

from jobs.errors import DataError

T = TypeVar("T")


def _rank(key: str, seed: int) -> str:
    # A hash of (seed, group) orders groups: stable across runs, machines and Python
    # versions (unlike hash()), and adding rows does not reshuffle existing groups.
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


def split_by_seed(
    items: Sequence[T],
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    group: Callable[[T], str] | None = None,
) -> tuple[list[T], list[T], list[T]]:
    """(train, validation, test) by fractions of groups. `group(item)` keeps related rows
    together (default: each item is its own group, keyed by its position)."""
    if abs(sum(fractions) - 1.0) > 1e-6 or any(f < 0 for f in fractions):
        raise ValueError(f"split fractions must be >= 0 and sum to 1, got {fractions}")
    keys = [group(x) if group else str(i) for i, x in enumerate(items)]
    groups = sorted(set(keys), key=lambda k: _rank(k, seed))
    n = len(groups)
    n_train = round(fractions[0] * n)
    n_val = round(fractions[1] * n)
    where = {}
    for i, k in enumerate(groups):
        where[k] = 0 if i < n_train else (1 if i < n_train + n_val else 2)
    out: tuple[list[T], list[T], list[T]] = ([], [], [])
    for k, x in zip(keys, items):
        out[where[k]].append(x)
    return out


def split_by_value(items: Sequence[T], value_of: Callable[[T], str], holdout: str) -> tuple[list[T], list[T]]:
    """(rest, held_out): rows whose value equals `holdout` are held out."""
    rest = [x for x in items if value_of(x) != holdout]
    held = [x for x in items if value_of(x) == holdout]
    if not held:
        values = sorted({str(value_of(x)) for x in items})
        raise DataError(f"holdout value {holdout!r} matches no rows; values present: {values}")
    return rest, held
