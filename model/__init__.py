"""Seq2seq chatbot model: vocabulary, encoder/decoder, greedy search, checkpoint I/O.

Pure code: tensors and strings in and out. Shipped inside the .mar, so it must run on
Python 3.9 / torch 2.4 as well as Python 3.11 / torch 2.13.
"""
from .chatbot import Chatbot, Reply
from .checkpoint import (
    FORMAT,
    CheckpointError,
    build_model,
    default_config,
    from_checkpoint,
    read_checkpoint,
    validate_checkpoint,
)
from .seq2seq import Attn, EncoderRNN, LuongAttnDecoderRNN, greedy_decode, source_mask, trace_step
from .voc import (
    MAX_LENGTH,
    MIN_COUNT,
    EOS_token,
    NoKnownWordsError,
    PAD_token,
    SOS_token,
    Voc,
    decode,
    encode,
    normalize,
)

__all__ = [
    "FORMAT", "MAX_LENGTH", "MIN_COUNT", "PAD_token", "SOS_token", "EOS_token",
    "Attn", "Chatbot", "CheckpointError", "EncoderRNN", "LuongAttnDecoderRNN", "NoKnownWordsError",
    "Reply", "Voc", "build_model", "decode", "default_config", "encode", "from_checkpoint",
    "greedy_decode", "normalize", "read_checkpoint", "source_mask", "trace_step", "validate_checkpoint",
]
