"""Exact CoT-ON / CoT-OFF prompt strings and t* for each template family, on a tiny BPE
tokenizer carrying each family's chat template (written here, in the fixture)."""

import pytest
from transformers import PreTrainedTokenizerFast

from jobs.errors import ConfigError
from jobs.models.tiny import GENERIC, QWEN3, R1_NEW, R1_OLD, train_bpe
from jobs.templates import TemplateConfig, detect_family, render_prompt, split_thinking


@pytest.fixture(scope="module")
def base_tokenizer():
    return train_bpe(300)


def make(base, template):
    return PreTrainedTokenizerFast(tokenizer_object=base, chat_template=template, bos_token="<｜begin▁of▁sentence｜>",
                                   eos_token="<|endoftext|>", pad_token="<|endoftext|>")


def assert_t_star(r, on_text):
    """t* holds the last character of the CoT-ON prompt: tokens up to t* cover it,
    tokens before t* do not."""
    tok_text = r.tokenizer.decode(r.input_ids[: r.t_star + 1])
    assert tok_text.startswith(on_text)
    assert len(r.tokenizer.decode(r.input_ids[: r.t_star])) < len(on_text)


def render(tok, prompt, cot, cfg=None):
    r = render_prompt(tok, prompt, cot, cfg)
    r.tokenizer = tok
    return r


BOS = "<｜begin▁of▁sentence｜>"


@pytest.mark.parametrize("template", [R1_NEW, R1_OLD], ids=["r1-new", "r1-old"])
def test_r1_on_and_off(base_tokenizer, template):
    tok = make(base_tokenizer, template)
    assert detect_family(tok) == "r1"
    on = render(tok, "What is 2 + 3?", cot=True)
    off = render(tok, "What is 2 + 3?", cot=False)
    assert on.text == f"{BOS}<｜User｜>What is 2 + 3?<｜Assistant｜><think>\n"
    assert off.text == f"{BOS}<｜User｜>What is 2 + 3?<｜Assistant｜><think>\n\n</think>\n\n"
    assert on.text.count("<think>\n") == 1 and off.text.count("<think>") == 1
    assert on.t_star == len(on.input_ids) - 1
    assert_t_star(on, on.text)
    assert_t_star(off, on.text)
    assert tok.convert_ids_to_tokens(off.input_ids[off.t_star - 1]) == "<think>"


def test_qwen3_enable_thinking(base_tokenizer):
    tok = make(base_tokenizer, QWEN3)
    assert detect_family(tok) == "qwen3"
    cfg = TemplateConfig(system_prompt="Be brief.")
    on = render(tok, "Hi", True, cfg)
    off = render(tok, "Hi", False, cfg)
    head = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert on.text == head
    assert off.text == head + "<think>\n\n</think>\n\n"
    assert on.t_star == len(on.input_ids) - 1
    assert_t_star(off, on.text)
    assert tok.convert_ids_to_tokens(off.input_ids[off.t_star + 1]) == "<think>"


def test_generic_prefixes(base_tokenizer):
    tok = make(base_tokenizer, GENERIC)
    assert detect_family(tok) == "generic"
    on = render(tok, "Hi", True)
    off = render(tok, "Hi", False)
    head = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert on.text == head + "<think>\n"
    assert off.text == head + "<think>\n\n</think>\n\n"
    assert_t_star(off, on.text)
    custom = TemplateConfig(family="generic", cot_on_prefix="Let me think step by step.\n", cot_off_prefix="Answer: ")
    c_on, c_off = render(tok, "Hi", True, custom), render(tok, "Hi", False, custom)
    assert c_on.text == head + "Let me think step by step.\n" and c_off.text == head + "Answer: "
    # The OFF prompt does not extend the ON one: t* falls back to the end of the shared head.
    assert_t_star(c_off, head)


def test_no_chat_template_uses_plain_format(base_tokenizer):
    tok = make(base_tokenizer, None)
    r = render(tok, "Hi", True, TemplateConfig(plain_format="Q: {prompt}\nA: "))
    assert r.text == "Q: Hi\nA: <think>\n"
    with pytest.raises(ConfigError, match="needs a chat template"):
        render(tok, "Hi", True, TemplateConfig(family="r1"))


def test_split_thinking():
    s = split_thinking("Let me see. 2+3=5.\n</think>\n\nThe answer is 5.")
    assert (s.thinking, s.answer, s.closed) == ("Let me see. 2+3=5.", "The answer is 5.", True)
    s = split_thinking("<think>\nhmm\n</think>\n\nNo.")
    assert (s.thinking, s.answer, s.closed) == ("hmm", "No.", True)
    s = split_thinking("<think>\nthinking forever")
    assert (s.thinking, s.answer, s.closed) == ("", "<think>\nthinking forever", False)
