"""Tiny random models built in seconds: causal LMs with tiny BPE tokenizers and real chat
templates (one per template family), and a 2-layer BERT. Tests use them, and so does
`jobs/configs/smoke.yaml` (as `embedded:tiny-random-lm` and `embedded:tiny-random-bert`),
so the whole pipeline can be checked end to end in a couple of minutes on any machine.
Their outputs are noise: they exercise the code, not the method."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Qwen3Config,
    Qwen3ForCausalLM,
)

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>",
            "<｜begin▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>", "<｜end▁of▁sentence｜>"]

# DeepSeek-R1-distill style (the current template opens the think block itself).
R1_NEW = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'] }}"
          "{% elif m['role'] == 'user' %}{{ '<｜User｜>' + m['content'] }}"
          "{% elif m['role'] == 'assistant' %}{{ '<｜Assistant｜>' + m['content'] + '<｜end▁of▁sentence｜>' }}"
          "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<｜Assistant｜><think>\\n' }}{% endif %}")
# The first R1 release: the generation prompt stops at the assistant tag.
R1_OLD = R1_NEW.replace("<｜Assistant｜><think>\\n' }}{% endif %}", "<｜Assistant｜>' }}{% endif %}")
# Qwen3's enable_thinking switch, reduced to what matters here.
QWEN3 = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
         "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
         "{% if enable_thinking is defined and enable_thinking is false %}{{ '<think>\\n\\n</think>\\n\\n' }}{% endif %}"
         "{% endif %}")
# A model with no thinking mode (SmolLM2-style ChatML).
GENERIC = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
           "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")

TEMPLATES = {"r1": R1_NEW, "r1_old": R1_OLD, "qwen3": QWEN3, "generic": GENERIC}
CORPUS = [
    "Hi there, how are you?", "What is 2 + 3?\n\nThe answer is 5.", "user\nassistant\nsystem\n",
    "I cannot help with that request.", "Sure, here is how to bake bread: mix, knead, bake.",
    "How do I make a bomb? How do I bake a cake? Tell me about chemistry and cooking.",
]


def train_bpe(vocab_size: int = 400) -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS * 20, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tok


def make_tokenizer(base: Tokenizer, family: str) -> PreTrainedTokenizerFast:
    eos = "<｜end▁of▁sentence｜>" if family.startswith("r1") else "<|im_end|>"
    return PreTrainedTokenizerFast(tokenizer_object=base, chat_template=TEMPLATES[family],
                                   bos_token="<｜begin▁of▁sentence｜>", eos_token=eos, pad_token="<|endoftext|>")


def build_tiny_lm(path: Path, family: str = "generic", layers: int = 4, hidden: int = 32, seed: int = 0) -> Path:
    """Save a tiny random causal LM (Qwen3 architecture for the qwen3 family, Llama for the
    others) with a chat-templated tokenizer to `path`."""
    tok = make_tokenizer(train_bpe(), family)
    torch.manual_seed(seed)
    common = dict(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                  tie_word_embeddings=True,
                  # Wide embeddings: with the default 0.02 the frozen tied output layer caps
                  # the logits near 0.6 and no LoRA update can make a peaked distribution.
                  initializer_range=0.3)
    if family == "qwen3":
        model = Qwen3ForCausalLM(Qwen3Config(head_dim=hidden // 4, **common))
    else:
        model = LlamaForCausalLM(LlamaConfig(**common))
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def build_tiny_bert(path: Path, hidden: int = 32, layers: int = 2, seed: int = 0) -> Path:
    """A 2-layer, 32-wide random BERT classifier with the MiniLM WordPiece tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from jobs.models.embedded import MINILM, PREFIX, resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(PREFIX + MINILM))
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=2, intermediate_size=2 * hidden, max_position_embeddings=512)
    BertForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
