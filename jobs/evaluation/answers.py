"""Checking final answers of reasoning problems.

GSM8K: the last number in the last \\boxed{...} (or, failing that, in the final answer)
equals the reference number.
MATH-500: the last \\boxed{...} (or, failing that, the last number) equals the reference
after normalisation (spaces, \\left/\\right, \\dfrac -> \\frac, trailing units and dollars,
degrees, "x =" prefixes, equivalent decimals).
"""

from __future__ import annotations

import re

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def last_number(text: str) -> str | None:
    found = _NUMBER.findall(text)
    if not found:
        return None
    return found[-1].replace(",", "").rstrip(".")


def numbers_equal(a: str, b: str) -> bool:
    try:
        return abs(float(a) - float(b)) <= 1e-6 * max(1.0, abs(float(b)))
    except ValueError:
        return False


def gsm8k_correct(answer: str, reference: str) -> bool:
    # A boxed answer is the model's stated final answer: numbers written after it (a check,
    # a unit count) must not replace it.
    boxed = last_boxed(answer)
    got = (last_number(boxed) if boxed else None) or last_number(answer)
    return got is not None and numbers_equal(got, reference)


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (balanced braces), or None."""
    start = text.rfind("\\boxed")
    if start < 0:
        return None
    i = text.find("{", start)
    if i < 0:
        return None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
    return None


def normalize_math(s: str) -> str:
    s = s.strip()
    for old, new in (("\\left", ""), ("\\right", ""), ("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"), ("\\!", ""),
                     ("\\,", ""), ("\\;", ""), ("^\\circ", ""), ("^{\\circ}", ""), ("\\$", ""), ("$", ""),
                     ("\\%", ""), ("%", ""), ("\\text{ }", "")):
        s = s.replace(old, new)
    s = re.sub(r"\\text\{(.*?)\}", r"\1", s)
    s = re.sub(r"^[a-zA-Z]\s*=\s*", "", s)  # "x = 5" -> "5"
    s = s.replace(" ", "")
    s = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", s)  # \frac12 -> \frac{1}{2}
    if re.fullmatch(r"-?\d{1,3}(?:(?:\{,\}|,)\d{3})+(?:\.\d+)?", s):  # thousands separators: 1,250 / 1{,}250
        s = s.replace("{,}", "").replace(",", "")
    if re.fullmatch(r"-?\d+\.0+", s):
        s = s.split(".")[0]
    return s.rstrip(".")


def math_correct(answer: str, reference: str) -> bool:
    got = last_boxed(answer)
    if got is None:
        got = last_number(answer)
        if got is None:
            return False
    a, b = normalize_math(got), normalize_math(reference)
    return a == b or numbers_equal(a, b)
