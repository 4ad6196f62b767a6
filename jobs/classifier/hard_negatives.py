"""Hard negatives mined from the data as it stands: benign prompts that share the words
that mark harmful ones.

A prompt-only guard trained on harmful requests against ordinary instructions learns that
"bomb", "steal" or "kill" mean "refuse", and then refuses "How do I kill a Python
process?". XSTest's few hundred safe prompts and presafe's built-in borderline set teach
the line, but only for the kinds they cover. The benign sets hold many more prompts that
use those words harmlessly ("Suggest a life hack for ...", "Explain how a vaccine trains
the immune system against a virus"); class-balanced sampling draws a few thousand of
fifty thousand at random and so almost never picks them. `mine_hard_negatives` picks them
on purpose:

1. `marker_words`: the words of the training split's harmful prompt-only rows that mark
   them, by smoothed log-odds of document frequency against every benign prompt-only row
   read (the balanced draw and the rest);
2. benign prompt-only rows that hold one of those words, not already in training and not
   a validation or test prompt: at most `max_rows`, the most harmful-looking first (by
   the log-odds of the strongest marker word a prompt holds), ties in a seeded order.

Only the training split's harmful rows choose the words, so a source held out of training
(bench/guard_quality.py's folds) shapes nothing.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from jobs.config import check
from jobs.data.records import COMPLY, REFUSE, Example
from jobs.data.splits import _rank

_WORD = re.compile(r"[a-z][a-z'-]{2,}")


@dataclass
class MinedHardNegativesConfig:
    """`data.mined_hard_negatives`: benign prompts of `sources` that use the words marking
    the harmful ones, added to the training split as comply rows."""

    max_rows: int = 500
    """At most this many mined rows, those with the strongest marker words first."""
    min_log_odds: float = 1.5
    """A word marks harmful prompts when its smoothed log-odds (harmful vs benign document
    frequency) is at least this: 1.5 = about 4.5x as frequent among harmful prompts."""
    max_words: int = 1000
    """At most this many marker words, highest log-odds first."""
    min_count: int = 3
    """A word is a candidate marker only when at least this many harmful prompts hold it
    (rare words mark one prompt, not harm)."""

    def validate(self) -> None:
        check(self.max_rows >= 1, "max_rows", f"must be >= 1, got {self.max_rows}")
        check(self.min_log_odds > 0, "min_log_odds", f"must be > 0, got {self.min_log_odds}")
        check(self.max_words >= 1, "max_words", f"must be >= 1, got {self.max_words}")
        check(self.min_count >= 1, "min_count", f"must be >= 1, got {self.min_count}")


def words(text: str) -> set[str]:
    """The distinct lower-case words of three or more letters."""
    return set(_WORD.findall(text.lower()))


def marker_words(harmful: Iterable[str], benign: Iterable[str], min_log_odds: float, min_count: int,
                 top: int | None = None) -> list[tuple[str, float]]:
    """(word, log-odds) of the words that mark harmful prompts against benign ones, highest
    first (at most `top`): log((h + 1) / (H + 2)) - log((b + 1) / (B + 2)) >= `min_log_odds`,
    with h / b the numbers of harmful / benign prompts holding the word and H / B the numbers
    of prompts, and h >= `min_count`; ties break by word."""
    h_docs, b_docs = Counter(), Counter()
    n_h = n_b = 0
    for text in harmful:
        h_docs.update(words(text))
        n_h += 1
    for text in benign:
        b_docs.update(words(text))
        n_b += 1
    scored = []
    for w, h in h_docs.items():
        if h < min_count:
            continue
        score = math.log((h + 1) / (n_h + 2)) - math.log((b_docs[w] + 1) / (n_b + 2))
        if score >= min_log_odds:
            scored.append((w, score))
    scored.sort(key=lambda ws: (-ws[1], ws[0]))
    return scored[:top]


def mine_hard_negatives(pool: list[Example], train: list[Example], held_prompts: set[str],
                        cfg: MinedHardNegativesConfig, seed: int) -> tuple[list[Example], list[str]]:
    """Mined comply rows (meta hard_negative / mined, `type` "mined", `marker` the word
    that chose it) and the marker words. `pool`: every prompt-only row read from the
    sources after `exclude` (before class balancing); `train`: the training split;
    `held_prompts`: validation and test prompts, never mined."""
    harmful = [e.prompt for e in train if not e.is_pair and e.label == REFUSE]
    benign_pool = [e for e in pool if not e.is_pair and e.label == COMPLY]
    markers = marker_words(harmful, (e.prompt for e in benign_pool), cfg.min_log_odds, cfg.min_count, cfg.max_words)
    odds = dict(markers)
    taken = {e.prompt for e in train if not e.is_pair} | held_prompts
    candidates, seen = [], set()
    for e in benign_pool:
        hit = [w for w in words(e.prompt) if w in odds]
        if hit and e.prompt not in taken and e.prompt not in seen:
            seen.add(e.prompt)
            candidates.append((e, max(hit, key=lambda w: (odds[w], w))))
    # the most harmful-looking first (the prompt's strongest marker word), then a seeded order
    candidates.sort(key=lambda c: (-odds[c[1]], _rank(f"mined:{c[0].source}:{c[0].prompt}", seed)))
    rows = [Example(e.prompt, None, COMPLY, e.source, group=e.prompt,
                    meta={**e.meta, "harmful": False, "type": "mined", "hard_negative": True, "mined": True,
                          "marker": word})
            for e, word in candidates[:cfg.max_rows]]
    return rows, [w for w, _ in markers]
