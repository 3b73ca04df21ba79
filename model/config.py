"""The model's sizes: the one definition of a checkpoint's `config`, whose defaults are the tutorial's.

Training's command-line flags are made from these fields (train/config.py: `--hidden-size` sets
`hidden_size`), so a default or a name is changed here alone.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from .seq2seq import Attn
from .voc import MAX_LENGTH


@dataclass(frozen=True)
class ModelConfig:
    """Encoder/decoder sizes and the length limit, as a checkpoint's `config` dict stores them."""

    hidden_size: int = field(default=500, metadata={"help": "hidden and embedding size"})
    encoder_n_layers: int = field(default=2, metadata={"help": "encoder GRU layers"})
    decoder_n_layers: int = field(default=2, metadata={"help": "decoder GRU layers"})
    dropout: float = field(default=0.1, metadata={"help": "dropout probability"})
    attn_model: str = field(default="dot", metadata={"help": "Luong attention score", "choices": Attn.METHODS})
    max_length: int = field(default=MAX_LENGTH, metadata={
        "help": "keep pairs whose sides have fewer tokens than this (words, or BPE tokens: 10 keeps about the same "
                "share of Cornell's pairs for both); also the longest reply and input"})
    context_turns: int = field(default=0, metadata={
        "help": "earlier turns of the conversation the encoder reads before the user's, each ended by a separator "
                "(model/context.py; needs a corpus of conversations: --corpus chitchat); 0 reads the user's turn "
                "only, as the tutorial"})


# Keys added to `config` after checkpoints were first written: a checkpoint without one has its default
ADDED_KEYS = ("context_turns",)


CONFIG_KEYS = tuple(f.name for f in fields(ModelConfig))


def with_added_keys(config: dict) -> dict:
    """A checkpoint's config with the defaults of ADDED_KEYS it lacks (an older checkpoint reads as it always did)."""
    defaults = asdict(ModelConfig())
    return {**{key: defaults[key] for key in ADDED_KEYS}, **config}


def default_config(**overrides) -> dict:
    """The tutorial's model sizes as a checkpoint's config dict, with any field overridden."""
    return asdict(ModelConfig(**overrides))
