"""Loading: a checkpoint and a model-config `handler:` section -> the serving pipeline (Core), set up.

    core = load_core(checkpoint_path, model_config["handler"], model_name, device, metrics)

The section's options (quantize, threads, threads_alone, compiled_decode, metrics_interval_s, max_chars, decoding
defaults and limits) are read and checked here; a wrong value raises an error naming it.

Shipped inside the .mar (the archive's `serving` package): Python 3.9, torch 2.4, no engine.
"""
from __future__ import annotations

import logging
import os
import sys

import torch

from model import CheckpointError, load_chatbot
from model.chatbot import Chatbot
from model.checkpoint import quantize_mode
from model.schema import options_from_config

from .metrics import Metrics
from .pipeline import Core, one_line

logger = logging.getLogger(__name__)


def required_option(section: dict, name: str) -> int:
    """An integer the model-config's handler section must set (its one definition); a clear error when it does
    not."""
    if name not in section:
        raise ValueError(f"the model-config's handler section has no {name}: rebuild the archive with "
                         "handler/model-config.yaml (make mar)")
    return int(section[name])


def switch(section: dict, name: str, default: bool) -> bool:
    """A true/false option of a `handler:` section; ValueError naming it when it is anything else."""
    value = section.get(name, default)
    if not isinstance(value, bool):
        raise ValueError(f"the model-config's handler option {name} must be true or false, not {value!r}")
    return value


def metrics_interval(section: dict) -> float:
    """A `handler:` section's metrics_interval_s (default 1; 0: every metric update at once, BufferedMetrics);
    ValueError naming it when it is not a number >= 0."""
    value = section.get("metrics_interval_s", 1)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"the model-config's handler option metrics_interval_s must be a number of seconds >= 0, "
                         f"not {value!r}")
    return float(value)


def cpu_setup(section: dict, device: torch.device) -> str | None:
    """The weight mode of a `handler:` section on `device` (None: float32; quantisation is CPU-only), with torch's
    thread count set from its `threads` on the CPU (the engines leave torch at one thread per core)."""
    quantize = quantize_mode(section.get("quantize"))  # None (float32), "int8" or "fp16"
    if quantize and device.type != "cpu":
        logger.warning("quantize: %s is ignored on the GPU (quantisation is CPU-only)", quantize)
        quantize = None
    threads = int(section.get("threads", 0))
    if threads > 0 and device.type == "cpu":
        torch.set_num_threads(threads)
    return quantize


def load_core(checkpoint: str, section: dict, model_name: str, device: torch.device | None = None,
              metrics: Metrics | None = None) -> Core:
    """The Core of a checkpoint, set up by a model-config `handler:` section (quantize, threads, compiled_decode,
    max_chars, decoding defaults and limits) on `device` (default: the CPU). Raises CheckpointError (logged in one
    line) or InvalidOption / ValueError naming a wrong model-config value."""
    device = device or torch.device("cpu")
    quantize = cpu_setup(section, device)
    try:
        chatbot = load_chatbot(checkpoint, device=device, quantize=quantize,
                               compiled_decode=switch(section, "compiled_decode", True))
    except CheckpointError as e:
        # One clear line per try: an engine retries a failed load, and its own log only says the worker died
        logger.error("cannot load the chatbot from %s: %s: %s (rebuild the archive with `make mar`, which validates "
                     "the checkpoint)", os.path.basename(str(checkpoint)), type(e).__name__, one_line(str(e)))
        raise
    defaults, limits = options_from_config(section, chatbot.max_length)
    threads_alone = int(section.get("threads_alone", 0)) or torch.get_num_threads()
    core = Core(chatbot, model_name, metrics, required_option(section, "max_chars"), defaults, limits, threads_alone)
    logger.info("seq2seq chatbot loaded from %s on %s (quantize=%s, %d %s tokens, max %d chars, model package %s)",
                os.path.basename(str(checkpoint)), device, quantize, chatbot.voc.num_words, chatbot.voc.kind,
                core.max_chars, os.path.dirname(sys.modules[Chatbot.__module__].__file__))
    return core
