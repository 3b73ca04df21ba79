"""The self-describing checkpoint: build, validate and rebuild a chatbot from plain dicts."""
from __future__ import annotations

import pickle
import re
import warnings
from typing import IO

import torch
from torch import nn

from .chatbot import Chatbot
from .int8 import quantize_int8, tabulate_input_gates
from .seq2seq import Attn, EncoderRNN, LuongAttnDecoderRNN, trace_step
from .voc import SPECIAL_WORDS, Voc

FORMAT = "seq2seq-chatbot/1"
CONFIG_KEYS = ("hidden_size", "encoder_n_layers", "decoder_n_layers", "dropout", "attn_model", "max_length")
REQUIRED_KEYS = ("config", "voc", "encoder", "decoder")
QUANTIZE_MODES = ("int8", "fp16")  # the `quantize` option's names; True means "int8"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not describe a working model."""


def default_config(**overrides) -> dict:
    """The tutorial's model sizes, with any field overridden."""
    config = {"hidden_size": 500, "encoder_n_layers": 2, "decoder_n_layers": 2,
              "dropout": 0.1, "attn_model": "dot", "max_length": 10}
    config.update(overrides)
    return config


def build_model(config: dict, num_words: int) -> tuple[EncoderRNN, LuongAttnDecoderRNN]:
    """Fresh encoder and decoder sharing one embedding, sized by `config`."""
    hidden = config["hidden_size"]
    embedding = nn.Embedding(num_words, hidden)
    encoder = EncoderRNN(hidden, embedding, config["encoder_n_layers"], config["dropout"])
    decoder = LuongAttnDecoderRNN(config["attn_model"], embedding, hidden, num_words,
                                  config["decoder_n_layers"], config["dropout"])
    return encoder, decoder


def read_checkpoint(f: IO[bytes]) -> dict:
    """torch.load a checkpoint from an open binary file, refusing anything but tensors and plain data."""
    try:
        ckpt = torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            "refused to load: the file holds Python objects, not just tensors and plain data "
            f"(weights_only=True). Only load checkpoints written by train/main.py. Detail: {one_line(e, 200)}"
        ) from e
    except Exception as e:  # garbage bytes raise anything from EOFError to KeyError
        raise CheckpointError(f"not a readable checkpoint (truncated or not a torch file): {one_line(e, 200)}") from e
    validate_checkpoint(ckpt)
    return ckpt


def one_line(error: Exception, limit: int) -> str:
    """An exception's message on one line, without terminal colour codes, cut to `limit` characters."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    return " ".join(text.split())[:limit]


def validate_checkpoint(ckpt: object) -> None:
    """Raise CheckpointError with a clear message unless `ckpt` can rebuild a chatbot."""
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"a checkpoint must be a dict, got {type(ckpt).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint is missing keys: {', '.join(missing)}")
    missing = [k for k in CONFIG_KEYS if k not in ckpt["config"]]
    if missing:
        raise CheckpointError(f"checkpoint config is missing: {', '.join(missing)}")
    if ckpt["config"]["attn_model"] not in Attn.METHODS:
        raise CheckpointError(f"unknown attention model {ckpt['config']['attn_model']!r}")
    num_words = len(SPECIAL_WORDS) + len(ckpt["voc"].get("words", []))
    for part, key in (("encoder", "embedding.weight"), ("decoder", "out.weight")):
        weight = ckpt[part].get(key)
        if weight is None or weight.shape != (num_words, ckpt["config"]["hidden_size"]):
            shape = None if weight is None else tuple(weight.shape)
            raise CheckpointError(
                f"vocabulary/weights mismatch: the vocabulary has {num_words} words but "
                f"{part} {key} has shape {shape}"
            )


def from_checkpoint(ckpt: dict, device: torch.device | str = "cpu", quantize: bool | str = False) -> Chatbot:
    """Rebuild vocabulary, encoder, decoder and greedy searcher from a checkpoint dict alone.

    quantize (CPU only) stores the GRU and Linear weights in fewer bytes: True or "int8" (int8
    weights and per-row int8 inputs, model/int8.py), "fp16" (float16 weights, float32 maths);
    False keeps float32. int8 and fp16 decode a text bit for bit the same alone or in any batch
    (float32's MKL kernels may round a row differently beside other rows).
    """
    validate_checkpoint(ckpt)
    mode = quantize_mode(quantize)
    voc = Voc.from_dict(ckpt["voc"])
    encoder, decoder = build_model(ckpt["config"], voc.num_words)
    try:
        encoder.load_state_dict(ckpt["encoder"])
        decoder.load_state_dict(ckpt["decoder"])
    except RuntimeError as e:
        raise CheckpointError(f"weights do not fit the model config: {one_line(e, 300)}") from e
    device = torch.device(device)
    encoder.to(device).eval()
    decoder.to(device).eval()
    if mode is not None:
        if device.type != "cpu":
            raise CheckpointError("quantisation (int8 or fp16 weights) runs on the CPU only")
        encoder, decoder = quantize_model(encoder, mode), quantize_model(decoder, mode)
    step = trace_step(decoder) if device.type == "cpu" else None
    return Chatbot(voc, encoder, decoder, ckpt["config"]["max_length"], device, step)


def quantize_mode(quantize: bool | str | None) -> str | None:
    """The weight mode a `quantize` option names: None (float32), "int8" or "fp16"."""
    if quantize is None or quantize is False:
        return None
    name = "int8" if quantize is True else quantize
    if name not in QUANTIZE_MODES:
        raise CheckpointError(f"quantize must be false, true, {' or '.join(map(repr, QUANTIZE_MODES))}, "
                              f"not {quantize!r}")
    return name


def quantize_model(module: nn.Module, mode: str) -> nn.Module:
    """GRU and Linear layers with int8 (~4x fewer bytes read per greedy step) or float16 (2x) weights.

    int8 is model/int8.py's (each input row quantised on its own). fp16 is torch's dynamic
    quantisation with float16 weights and float32 activations. Attention layers stay float:
    'concat' attention reads its Linear's weight directly.
    """
    if mode == "int8":  # the decoder's out reads tanh(concat(...)); first-layer gates become a table lookup
        return tabulate_input_gates(quantize_int8(module, bounded_inputs=("out",)))
    spec = {name for name, m in module.named_modules()
            if isinstance(m, (nn.GRU, nn.Linear)) and ".attn" not in f".{name}"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.ao.quantization: deprecated since torch 2.10
        return torch.ao.quantization.quantize_dynamic(module, spec, dtype=torch.float16)
