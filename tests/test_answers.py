import pytest

from jobs.evaluation.answers import gsm8k_correct, last_boxed, math_correct, normalize_math


@pytest.mark.parametrize("answer,ref,ok", [
    ("She makes 9 * 2 = $18 every day.\nThe answer is 18.", "18", True),
    ("The total is 1,250 dollars.", "1250", True),
    ("So 3.50 per cup.", "3.5", True),
    ("That gives 17, not 18... wait, 19.", "18", False),
    ("I cannot answer that.", "18", False),
])
def test_gsm8k(answer, ref, ok):
    assert gsm8k_correct(answer, ref) is ok


@pytest.mark.parametrize("answer,ref,ok", [
    (r"The final answer is \boxed{72}.", "72", True),
    (r"The final answer is \boxed{1,250}. That is 2 more boxes than last week.", "1250", True),
    (r"\boxed{\$18}", "18", True),
    (r"The final answer is \boxed{24}.", "72", False),
])
def test_boxed_answers_score_for_gsm8k_and_math(answer, ref, ok):
    # the form presafe's reference targets take; numbers after the box do not replace it
    assert gsm8k_correct(answer, ref) is ok
    assert math_correct(answer, ref) is ok


def test_boxed_with_nested_braces():
    assert last_boxed(r"first \boxed{1} then \boxed{\frac{1}{2}}") == r"\frac{1}{2}"
    assert last_boxed("no box") is None


@pytest.mark.parametrize("answer,ref,ok", [
    (r"So $\boxed{\left( 3, \frac{\pi}{2} \right)}$.", r"\left( 3, \frac{\pi}{2} \right)", True),
    (r"\boxed{\dfrac{14}{3}}", r"\frac{14}{3}", True),
    (r"\boxed{x = 5}", "5", True),
    (r"\boxed{90^\circ}", "90", True),
    (r"\boxed{5.0}", "5", True),
    (r"The answer is 12", "12", True),
    (r"\boxed{\frac{1}{3}}", r"\frac{1}{2}", False),
    (r"\boxed{\text{(C)}}", r"\text{(C)}", True),
])
def test_math500(answer, ref, ok):
    assert math_correct(answer, ref) is ok


def test_normalize_frac_shorthand():
    assert normalize_math(r"\frac12") == normalize_math(r"\frac{1}{2}")
