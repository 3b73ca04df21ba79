"""Seq2seq chatbot model: vocabulary (words or byte-level BPE), encoder/decoder, decoding, checkpoint I/O.

Pure code: tensors and strings in and out. Shipped inside the .mar, so it must run on
Python 3.9 / torch 2.4 as well as Python 3.11 / torch 2.13.
"""
from .chatbot import Chatbot, Reply
from .checkpoint import (
    FORMAT,
    CheckpointError,
    build_model,
    from_checkpoint,
    read_checkpoint,
    validate_checkpoint,
)
from .config import ModelConfig, default_config
from .seq2seq import Attn, EncoderRNN, LuongAttnDecoderRNN, greedy_decode, source_mask, trace_step
from .tokenizer import BpeTokenizer, vocabulary_from_dict
from .voc import (
    MAX_LENGTH,
    MIN_COUNT,
    Encoded,
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
    "Attn", "BpeTokenizer", "ModelConfig", "Chatbot", "Encoded", "vocabulary_from_dict",
    "CheckpointError", "EncoderRNN", "LuongAttnDecoderRNN", "NoKnownWordsError",
    "Reply", "Voc", "build_model", "decode", "default_config", "encode", "from_checkpoint",
    "greedy_decode", "normalize", "read_checkpoint", "source_mask", "trace_step", "validate_checkpoint",
]
