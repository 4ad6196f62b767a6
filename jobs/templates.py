"""Generation prompts with chain-of-thought ON or OFF, the pre-CoT position t*, and
splitting a generated text into (thinking, final answer).

Families (auto-detected from the tokenizer's chat template, or set explicitly):
- ``r1``: DeepSeek-R1-distill style. CoT ON = the generation prompt ending in
  ``<think>\\n`` exactly once; CoT OFF = that plus ``\\n</think>\\n\\n`` (the empty think
  block ``<think>\\n\\n</think>\\n\\n``).
- ``qwen3``: ``apply_chat_template(..., enable_thinking=True|False)``.
- ``generic``: any other model: the generation prompt plus configurable prefixes.

t* is the index of the last token before the first CoT token: the token that holds the
last character of the CoT-ON generation prompt. In a CoT-OFF prompt it is the same
character position (every family's OFF prompt extends its ON prompt), so the auxiliary
loss reads the same place whether or not the model will think.
"""

from __future__ import annotations

from dataclasses import dataclass

from jobs.config import check
from jobs.errors import ConfigError

FAMILIES = ("auto", "r1", "qwen3", "generic")


@dataclass
class TemplateConfig:
    """How to render prompts with CoT on and off."""

    family: str = "auto"
    """auto | r1 | qwen3 | generic. auto reads the tokenizer's chat template."""
    system_prompt: str | None = None
    """Optional system message placed before the user prompt."""
    cot_on_prefix: str = "<think>\n"
    """generic: text appended to the generation prompt when CoT is ON."""
    cot_off_prefix: str = "<think>\n\n</think>\n\n"
    """generic: text appended to the generation prompt when CoT is OFF."""
    think_open: str = "<think>"
    think_close: str = "</think>"
    plain_format: str = "{prompt}\n"
    """generic, tokenizer without a chat template: how a bare prompt is written."""

    def validate(self) -> None:
        check(self.family in FAMILIES, "family", f"must be one of {list(FAMILIES)}, got {self.family!r}")
        check("{prompt}" in self.plain_format, "plain_format", "must contain '{prompt}'")
        check(bool(self.think_close), "think_close", "must not be empty")


@dataclass
class RenderedPrompt:
    """A rendered generation prompt. input_ids are the tokens of `text` with no extra
    special tokens (the template already wrote them); t_star indexes input_ids."""

    text: str
    input_ids: list[int]
    t_star: int
    cot: bool
    family: str


@dataclass
class ThinkingSplit:
    thinking: str
    answer: str
    closed: bool
    """False when no think block closed: then `answer` is the whole output."""


def detect_family(tokenizer) -> str:
    template = tokenizer.chat_template or ""
    if isinstance(template, dict):
        template = " ".join(template.values())
    if "enable_thinking" in template:
        return "qwen3"
    if "<think>" in template or "｜Assistant｜" in template:
        return "r1"
    return "generic"


def prompt_texts(tokenizer, prompt: str, cfg: TemplateConfig) -> tuple[str, str, str]:
    """(family, CoT-ON text, CoT-OFF text) for one user prompt."""
    return chat_texts(tokenizer, [{"role": "user", "content": prompt}], cfg)


def chat_texts(tokenizer, messages: list[dict], cfg: TemplateConfig) -> tuple[str, str, str]:
    """(family, CoT-ON text, CoT-OFF text) for a conversation (role/content dicts ending in
    the user turn to answer); cfg.system_prompt goes first unless the messages bring one."""
    family = detect_family(tokenizer) if cfg.family == "auto" else cfg.family
    if cfg.system_prompt and not any(m["role"] == "system" for m in messages):
        messages = [{"role": "system", "content": cfg.system_prompt}, *messages]
    prompt = "\n".join(m["content"] for m in messages if m["role"] != "system")
    if family == "qwen3":
        on = _apply(tokenizer, messages, enable_thinking=True)
        off = _apply(tokenizer, messages, enable_thinking=False)
        return family, on, off
    if family == "r1":
        base = _apply(tokenizer, messages)
        open_nl = cfg.think_open + "\n"
        if base.endswith(open_nl):
            on = base
        elif base.endswith(cfg.think_open):
            on = base + "\n"
        else:
            on = base + open_nl
        return family, on, on + "\n" + cfg.think_close + "\n\n"
    if tokenizer.chat_template:
        base = _apply(tokenizer, messages)
    else:
        system = "".join(f"{m['content']}\n" for m in messages if m["role"] == "system")
        base = system + cfg.plain_format.format(prompt=prompt)
    return family, base + cfg.cot_on_prefix, base + cfg.cot_off_prefix


def render_prompt(tokenizer, prompt: str, cot: bool, cfg: TemplateConfig | None = None) -> RenderedPrompt:
    """The generation prompt for `prompt` with CoT on or off, its tokens and t*."""
    cfg = cfg or TemplateConfig()
    family, on, off = prompt_texts(tokenizer, prompt, cfg)
    text = on if cot else off
    # Every family's OFF text extends its ON text; if a custom template breaks that,
    # fall back to the end of the shared part, which is still before any CoT token.
    anchor = len(on) - 1 if off.startswith(on) else len(_common_prefix(on, off)) - 1
    ids, t_star = tokens_and_position(tokenizer, text, anchor)
    return RenderedPrompt(text=text, input_ids=ids, t_star=t_star, cot=cot, family=family)


def tokens_and_position(tokenizer, text: str, char_index: int) -> tuple[list[int], int]:
    """Token ids of `text` (no added special tokens) and the index of the token that
    holds character `char_index`."""
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        for i, (start, end) in enumerate(enc["offset_mapping"]):
            if start <= char_index < end:
                return list(enc["input_ids"]), i
    # Slow tokenizers have no offsets: count the tokens of the prefix instead.
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    prefix = tokenizer(text[: char_index + 1], add_special_tokens=False)["input_ids"]
    return list(ids), len(prefix) - 1


def split_thinking(text: str, cfg: TemplateConfig | None = None) -> ThinkingSplit:
    """Split generated text into (thinking, final answer). Works for outputs that start
    inside the think block (the prompt opened it) and for outputs that open it themselves."""
    cfg = cfg or TemplateConfig()
    if cfg.think_close not in text:
        return ThinkingSplit(thinking="", answer=text.strip(), closed=False)
    before, after = text.split(cfg.think_close, 1)
    before = before.strip()
    if before.startswith(cfg.think_open):
        before = before[len(cfg.think_open):].strip()
    return ThinkingSplit(thinking=before, answer=after.strip(), closed=True)


def _apply(tokenizer, messages, **kwargs) -> str:
    if not tokenizer.chat_template:
        raise ConfigError(
            "template.family needs a chat template, but the tokenizer has none; "
            "use template.family=generic with template.plain_format"
        )
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **kwargs)


def _common_prefix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


def cot_completion(on_text: str, thinking: str, answer: str, cfg: TemplateConfig | None = None) -> str:
    """The assistant text that follows a CoT-ON prompt `on_text`: a think block holding
    `thinking`, then the final `answer`. Empty thinking gives the empty think block
    (``<think>\\n\\n</think>\\n\\n``): the decision made before any CoT."""
    cfg = cfg or TemplateConfig()
    opened = on_text.endswith(cfg.think_open + "\n")
    head = "" if opened else cfg.think_open + "\n"
    if thinking.strip():
        return f"{head}{thinking.strip()}\n{cfg.think_close}\n\n{answer.strip()}"
    return f"{head}\n{cfg.think_close}\n\n{answer.strip()}"
