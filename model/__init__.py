"""Seq2seq chatbot model: vocabulary (words or byte-level BPE), encoder/decoder, decoding, checkpoint I/O.

Pure code: tensors and strings in and out. Shipped inside the .mar, so it must run on
Python 3.9 / torch 2.4 as well as Python 3.11 / torch 2.13.

    from model import load_chatbot
    bot = load_chatbot("runs/demo/best_checkpoint.tar")   # ours or the tutorial's; device=, quantize=
    print(bot.reply("hello there").text)

Names are imported on first use (PEP 562), so `import model.schema` (the request options and the Reply,
plain Python) does not import torch: the HTTP client and the chat page need none.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "chatbot": ("Chatbot",),
    "checkpoint": ("FORMAT", "CheckpointError", "build_model", "load_chatbot"),
    "config": ("ModelConfig", "default_config"),
    "schema": ("DecodeOptions", "InvalidOption", "OPTIONS", "Reply", "parse_options"),
    "seq2seq": ("Attn", "EncoderRNN", "LuongAttnDecoderRNN", "greedy_decode", "source_mask", "trace_step"),
    "tokenizer": ("BpeTokenizer", "vocabulary_from_dict"),
    "voc": ("MAX_LENGTH", "MIN_COUNT", "PAD_token", "SOS_token", "EOS_token", "Encoded", "NoKnownWordsError", "Voc",
            "decode", "encode", "normalize"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    """`from model import X`: X from the submodule that defines it, imported now."""
    if name not in _WHERE:
        raise AttributeError(f"module 'model' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
