"""Tiny randomly initialised causal LMs of several families, built from configs (no downloads)."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    GemmaConfig,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    PretrainedConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

VOCAB = 512
SPECIAL = ["<bos>", "<eos>", "<pad>"]


def tiny_config(family: str, layers: int = 3) -> PretrainedConfig:
    """A few-layer, 32-wide config of one model family; ids 0..2 are BOS/EOS/PAD."""
    common = {"vocab_size": VOCAB, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 2}
    if family == "llama":
        return LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                           num_attention_heads=4, num_key_value_heads=2, **common)
    if family == "qwen2":
        return Qwen2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                           num_attention_heads=4, num_key_value_heads=2, **common)
    if family == "gemma":
        return GemmaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=8, **common)
    if family == "gpt2":
        return GPT2Config(n_embd=32, n_layer=layers, n_head=4, n_positions=256, **common)
    if family == "neox":
        return GPTNeoXConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                             num_attention_heads=4, max_position_embeddings=256, **common)
    raise ValueError(family)


FAMILIES = ("llama", "gpt2", "neox", "qwen2", "gemma")


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE-free tokenizer: one token per byte plus the three specials, no training."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL)}
    byte_tokens = pre_tokenizers.ByteLevel.alphabet()
    for tok in sorted(byte_tokens):
        vocab[tok] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
         pre_tokenizers.Split("", behavior="isolated")]
    )
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>")


def tiny_model(family: str = "llama", layers: int = 3, seed: int = 0):
    """A tiny model in eval mode with gradients off."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(family, layers))
    return model.eval().requires_grad_(False)


CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}assistant:{% endif %}")
"""A plain chat template, for a tiny model that stands in for a chat model (an explainer)."""


def save_tiny_model(directory: Path, family: str = "llama", layers: int = 3, chat: bool = False) -> Path:
    """Write a tiny model and tokenizer as a Hugging Face directory, the layout a hub download has; with `chat`,
    the tokenizer carries CHAT_TEMPLATE."""
    tiny_model(family, layers).save_pretrained(directory)
    tokenizer = tiny_tokenizer()
    if chat:
        tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(directory)
    return directory
