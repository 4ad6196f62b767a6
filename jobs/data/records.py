"""The two record types every stage speaks: prompts, and labelled classifier examples."""

from __future__ import annotations

from dataclasses import dataclass, field

from jobs.errors import DataError

# Label ids of the decision classifier. p_refuse is the probability of REFUSE.
COMPLY, REFUSE = 0, 1
LABEL_NAMES = {COMPLY: "comply", REFUSE: "refuse"}
_LABEL_VALUES = {"refuse": REFUSE, "comply": COMPLY, "1": REFUSE, "0": COMPLY}


def parse_label(value, where: str) -> int:
    """'refuse'/'comply' (or 1/0) -> label id; anything else is a DataError naming `where`."""
    key = str(value).strip().lower()
    if isinstance(value, bool) or key not in _LABEL_VALUES:
        raise DataError(f"{where}: unknown label {value!r}; expected 'refuse' or 'comply' (or 1 / 0)")
    return _LABEL_VALUES[key]


@dataclass
class PromptRecord:
    """A prompt from a dataset. `harmful` is None when the set does not say."""

    prompt: str
    harmful: bool | None
    source: str
    category: str = ""
    reference: str | None = None  # checkable answer (GSM8K number, MATH-500 answer)
    id: str = ""
    solution: str | None = None  # worked solution where the set has one (GSM8K, MATH-500)


@dataclass
class Example:
    """One classifier row: (prompt, response) labelled by the response's decision, or
    prompt-only (response None) labelled by what a safe model should decide."""

    prompt: str
    response: str | None
    label: int
    source: str
    group: str = ""  # rows sharing a group (same prompt) stay in the same split
    meta: dict = field(default_factory=dict)

    @property
    def is_pair(self) -> bool:
        return self.response is not None
