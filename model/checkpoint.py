"""The one owner of the checkpoint format and its one loader: `load_chatbot(path)` reads, converts and
validates a checkpoint once, builds its tokenizer once, and rebuilds a ready Chatbot for a device and weight mode.

Two formats are read, both with torch.load(weights_only=True):
- the project's self-describing one (FORMAT, written by train.main): config, voc (the tutorial's
  word vocabulary, or {"kind": "bpe", "json": <the tokenizers JSON>}: model/tokenizer.py), encoder,
  decoder, plus training state;
- the PyTorch Chatbot Tutorial's {iteration}_checkpoint.tar ({'iteration', 'en', 'de', 'en_opt',
  'de_opt', 'loss', 'voc_dict', 'embedding'}), converted on reading: the sizes and the attention
  model are read off the tensors' shapes and names, the vocabulary keeps the tutorial's word order,
  and max_length (not recorded) is the tutorial's MAX_LENGTH unless given.
Everything downstream (chat CLI, make mar, the handler, training's --resume, the benchmarks) calls
load_chatbot and sees the project's format only (Chatbot.checkpoint). Reading the file through
torch.load is the one file access of the `model` package.
"""
from __future__ import annotations

import os
import pickle
import re
import warnings
from typing import IO, Union

import torch
from torch import nn

from .chatbot import Chatbot
from .config import CONFIG_KEYS, default_config, with_added_keys
from .greedy_loop import compile_greedy
from .int8 import Int8GRU, quantize_int8, tabulate_input_gates
from .seq2seq import Attn, EncoderRNN, LuongAttnDecoderRNN, trace_step
from .tokenizer import vocabulary_from_dict
from .voc import MAX_LENGTH, SPECIAL_WORDS, Voc

FORMAT = "seq2seq-chatbot/1"
TUTORIAL_FORMAT = "pytorch-chatbot-tutorial"  # `converted_from` of a converted tutorial checkpoint
REQUIRED_KEYS = ("config", "voc", "encoder", "decoder")
TUTORIAL_KEYS = ("en", "de", "voc_dict")
# What serving reads (make mar keeps only these: optimiser states are two thirds of a training checkpoint)
SERVING_KEYS = ("format", "config", "voc", "encoder", "decoder", "iteration", "loss", "heldout_loss", "converted_from")
QUANTIZE_MODES = ("int8", "fp16")  # the `quantize` option's names; True means "int8", False or "false" float32
Source = Union[str, "os.PathLike[str]", IO[bytes], dict]  # what load_chatbot reads


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not describe a working model."""


def build_model(config: dict, num_words: int) -> tuple[EncoderRNN, LuongAttnDecoderRNN]:
    """Fresh encoder and decoder sharing one embedding, sized by `config`."""
    hidden = config["hidden_size"]
    embedding = nn.Embedding(num_words, hidden)
    encoder = EncoderRNN(hidden, embedding, config["encoder_n_layers"], config["dropout"])
    decoder = LuongAttnDecoderRNN(config["attn_model"], embedding, hidden, num_words,
                                  config["decoder_n_layers"], config["dropout"])
    return encoder, decoder


def read_checkpoint(f: str | os.PathLike | IO[bytes], max_length: int | None = None) -> dict:
    """torch.load a checkpoint (a path or an open binary file; tensors and plain data only) in the project's format.

    A tutorial checkpoint is converted (max_length: its reply and input limit, default MAX_LENGTH);
    anything else, or a format this version does not know, raises CheckpointError naming what is wrong.
    The contents are checked by check_checkpoint.
    """
    try:
        ckpt = torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            "refused to load: the file holds Python objects, not just tensors and plain data "
            f"(weights_only=True). Only load checkpoints written by train/main.py. Detail: {one_line(e, 200)}"
        ) from e
    except Exception as e:  # garbage bytes raise anything from EOFError to KeyError
        raise CheckpointError(f"not a readable checkpoint (truncated or not a torch file): {one_line(e, 200)}") from e
    return to_project_format(ckpt, max_length)


def to_project_format(ckpt: object, max_length: int | None = None) -> dict:
    """`ckpt` if it is in the project's format, a converted copy if it is the tutorial's; else CheckpointError."""
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"a checkpoint must be a dict, got {type(ckpt).__name__}")
    if "format" in ckpt:
        if ckpt["format"] != FORMAT:
            raise CheckpointError(f"unknown checkpoint format {str(ckpt['format'])[:60]!r}: this version reads "
                                  f"{FORMAT!r} and the PyTorch Chatbot Tutorial's checkpoints")
        return with_config_defaults(ckpt)
    if all(k in ckpt for k in TUTORIAL_KEYS):
        return from_tutorial(ckpt, MAX_LENGTH if max_length is None else max_length)
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:  # no format field: an old project checkpoint, or neither format
        held = ", ".join(map(str, list(ckpt)[:8])) or "nothing"
        raise CheckpointError(f"neither a {FORMAT} checkpoint nor the PyTorch Chatbot Tutorial's: it has no "
                              f"'format' field, is missing keys: {', '.join(missing)} (a tutorial checkpoint has "
                              f"{', '.join(TUTORIAL_KEYS)}), and holds {held}")
    return with_config_defaults({**ckpt, "format": FORMAT})


def with_config_defaults(ckpt: dict) -> dict:
    """`ckpt`, or a copy whose config gains the keys added since it was written (model/config.py ADDED_KEYS)."""
    config = ckpt.get("config")
    if not isinstance(config, dict) or all(k in config for k in CONFIG_KEYS):
        return ckpt
    return {**ckpt, "config": with_added_keys(config)}


def tutorial_voc(voc_dict: dict) -> Voc:
    """The tutorial's Voc (its __dict__) as ours, in its own word order (index2word), counts kept."""
    index2word = {int(i): w for i, w in voc_dict["index2word"].items()}
    num_words = int(voc_dict.get("num_words", len(index2word)))
    missing = [i for i in range(num_words) if i not in index2word]
    if missing or [index2word[i] for i in range(len(SPECIAL_WORDS))] != list(SPECIAL_WORDS):
        raise CheckpointError(f"the tutorial vocabulary is inconsistent: num_words {num_words}, "
                              f"indices missing {missing[:5]}, first words {[index2word.get(i) for i in range(3)]}")
    words = [index2word[i] for i in range(len(SPECIAL_WORDS), num_words)]
    counts = voc_dict.get("word2count") or {}
    return Voc.from_dict({"name": str(voc_dict.get("name", "tutorial")), "trimmed": bool(voc_dict.get("trimmed")),
                          "words": words, "counts": [int(counts.get(w, 1)) for w in words]})


def gru_layers(state: dict) -> int:
    """Number of GRU layers in a state_dict (keys gru.weight_ih_l0, gru.weight_ih_l1, ...)."""
    return sum(1 for k in state if re.fullmatch(r"gru\.weight_ih_l\d+", k))


def tutorial_attention(decoder: dict, hidden: int) -> str:
    """The attention model of a tutorial decoder, from its parameter names and shapes."""
    if "attn.v" in decoder:
        return "concat"
    weight = decoder.get("attn.attn.weight")
    if weight is None:
        return "dot"
    if tuple(weight.shape) == (hidden, hidden):
        return "general"
    raise CheckpointError(f"decoder attn.attn.weight has shape {tuple(weight.shape)} without attn.v: neither "
                          f"'general' ({hidden}, {hidden}) nor 'concat' attention")


def from_tutorial(ckpt: dict, max_length: int = MAX_LENGTH) -> dict:
    """The project's format for a tutorial checkpoint; shapes that disagree raise CheckpointError naming them."""
    encoder, decoder = ckpt["en"], ckpt["de"]
    for part, state, key in (("encoder", encoder, "embedding.weight"), ("decoder", decoder, "out.weight")):
        if not isinstance(state, dict) or key not in state:
            raise CheckpointError(f"tutorial checkpoint: the {part} state ('{'en' if part == 'encoder' else 'de'}') "
                                  f"has no {key}")
    voc = tutorial_voc(ckpt["voc_dict"])
    hidden = int(encoder["embedding.weight"].shape[1])
    decoder_hidden = int(decoder["out.weight"].shape[1])
    if decoder_hidden != hidden:
        raise CheckpointError(f"tutorial checkpoint: the decoder's hidden size {decoder_hidden} (out.weight) is not "
                              f"the encoder's {hidden} (embedding.weight)")
    config = default_config(hidden_size=hidden, encoder_n_layers=gru_layers(encoder),
                            decoder_n_layers=gru_layers(decoder), attn_model=tutorial_attention(decoder, hidden),
                            max_length=max_length)
    converted = {"format": FORMAT, "converted_from": TUTORIAL_FORMAT, "config": config, "voc": voc.to_dict(),
                 "encoder": encoder, "decoder": decoder, "iteration": int(ckpt.get("iteration", 0)),
                 "loss": float(ckpt.get("loss", float("nan")))}
    for ours, theirs in (("encoder_optimizer", "en_opt"), ("decoder_optimizer", "de_opt")):
        if theirs in ckpt:
            converted[ours] = ckpt[theirs]
    return converted


def serving_subset(ckpt: dict) -> dict:
    """The keys serving reads: what make mar archives."""
    return {key: ckpt[key] for key in SERVING_KEYS if key in ckpt}


def one_line(error: Exception, limit: int) -> str:
    """An exception's message on one line, without terminal colour codes, cut to `limit` characters."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    return " ".join(text.split())[:limit]


def check_structure(ckpt: object) -> None:
    """CheckpointError unless `ckpt` has the keys, config and attention model of a project checkpoint."""
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


def checkpoint_vocabulary(ckpt: dict):
    """The checkpoint's vocabulary (Voc or BpeTokenizer), built once; CheckpointError when it cannot be read."""
    try:
        return vocabulary_from_dict(ckpt["voc"])
    except Exception as e:  # no tokenizers package, a BPE JSON it cannot read, an unknown kind
        raise CheckpointError(f"the checkpoint's vocabulary cannot be read: {one_line(e, 200)}") from e


def check_shapes(ckpt: dict, num_words: int) -> None:
    """CheckpointError unless the embedding and output layer fit a vocabulary of num_words tokens."""
    for part, key in (("encoder", "embedding.weight"), ("decoder", "out.weight")):
        weight = ckpt[part].get(key)
        if weight is None or weight.shape != (num_words, ckpt["config"]["hidden_size"]):
            shape = None if weight is None else tuple(weight.shape)
            raise CheckpointError(
                f"vocabulary/weights mismatch: the vocabulary has {num_words} words but "
                f"{part} {key} has shape {shape}"
            )


def rebuild(ckpt: dict, voc) -> tuple[EncoderRNN, LuongAttnDecoderRNN]:
    """Encoder and decoder with the checkpoint's weights, on the CPU."""
    encoder, decoder = build_model(ckpt["config"], voc.num_words)
    try:
        encoder.load_state_dict(ckpt["encoder"])
        decoder.load_state_dict(ckpt["decoder"])
    except RuntimeError as e:
        raise CheckpointError(f"weights do not fit the model config: {one_line(e, 300)}") from e
    return encoder, decoder


def load_chatbot(source: Source, device: torch.device | str = "cpu", quantize: bool | str | None = False,
                 max_length: int | None = None, compiled_decode: bool = True) -> Chatbot:
    """The one loader: a checkpoint (a path or open file, ours or the tutorial's, or a dict already in memory)
    as a ready Chatbot in eval mode on `device`, its dict in Chatbot.checkpoint.

    Reads, converts and validates once, builds the tokenizer once. quantize (CPU only) stores the GRU and
    Linear weights in fewer bytes: True or "int8" (int8 weights and per-row int8 inputs, model/int8.py),
    "fp16" (float16 weights, float32 maths); False or "false" keeps float32. int8 decodes a text bit for bit
    the same alone or in any batch (fp16 does on some CPUs only; float32's MKL kernels may round a row
    differently beside other rows). max_length: a tutorial checkpoint's length limit (default MAX_LENGTH).
    compiled_decode (CPU): greedy search's whole loop in one TorchScript call (model/greedy_loop.py) and an int8
    encoder's two directions in one compiled loop; False: the Python loop and a loop per direction, as before
    (the same replies, slower: only to compare them). Anything unusable raises CheckpointError naming the file
    and what is wrong.
    """
    name = source if isinstance(source, (str, os.PathLike)) else getattr(source, "name", None)
    where = f"{name}: " if isinstance(name, (str, os.PathLike)) else ""
    try:
        ckpt = to_project_format(source, max_length) if isinstance(source, dict) else \
            read_checkpoint(source, max_length)
        check_structure(ckpt)
        voc = checkpoint_vocabulary(ckpt)
        check_shapes(ckpt, voc.num_words)
        encoder, decoder = rebuild(ckpt, voc)
    except OSError as e:
        raise CheckpointError(f"cannot open checkpoint {name}: {e.strerror or e}") from e
    except CheckpointError as e:
        raise CheckpointError(f"{where}{e}") from e
    return ready_chatbot(ckpt, voc, encoder, decoder, torch.device(device), quantize_mode(quantize), compiled_decode)


def ready_chatbot(ckpt: dict, voc, encoder: nn.Module, decoder: nn.Module, device: torch.device,
                  mode: str | None, compiled_decode: bool = True) -> Chatbot:
    """The Chatbot of rebuilt modules: on `device`, in eval mode, with `mode` weights and a traced CPU step (with
    the compiled greedy loop unless compiled_decode is False)."""
    encoder.to(device).eval()
    decoder.to(device).eval()
    if mode is not None:
        if device.type != "cpu":
            raise CheckpointError("quantisation (int8 or fp16 weights) runs on the CPU only")
        encoder, decoder = quantize_model(encoder, mode), quantize_model(decoder, mode)
    step = trace_step(decoder) if device.type == "cpu" else None
    if step is not None and compiled_decode:
        step = compile_greedy(step)
    for gru in encoder.modules():
        if isinstance(gru, Int8GRU):
            gru.directions_together = compiled_decode
    return Chatbot(voc, encoder, decoder, ckpt["config"]["max_length"], device, step, ckpt,
                   context_turns=ckpt["config"]["context_turns"])


def quantize_mode(quantize: bool | str | None) -> str | None:
    """The weight mode a `quantize` option names: None (float32: None, False or "false"), "int8" or "fp16"."""
    if quantize is None or quantize is False or quantize == "false":
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
        # torch.ao.quantization: deprecated since torch 2.10, and what the serving image's torch 2.4 has
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated", category=DeprecationWarning)
        return torch.ao.quantization.quantize_dynamic(module, spec, dtype=torch.float16)
