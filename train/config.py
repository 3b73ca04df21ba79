"""Training's settings, each defined once: its name, default and help, from which every CLI makes its flags.

A field `heldout_fraction` is the flag `--heldout-fraction` of every tool that takes it (train.main,
train.data, the benchmarks), the key under which a checkpoint stores the run's arguments, and the
attribute the code reads. The model's sizes are model/config.py's ModelConfig, defined beside the
checkpoint format that stores them.
"""
from __future__ import annotations

import argparse
from collections.abc import Iterable
from dataclasses import dataclass, field, fields

from model.config import ModelConfig
from model.tokenizer import DEFAULT_VOCAB_SIZE, KINDS
from model.voc import MIN_COUNT

CORPORA = ("chatterbot", "chitchat", "cornell", "convokit", "tsv")
DEVICES = ("auto", "cpu", "cuda")
DEFAULT_CORNELL_PATH = "data/cornell"  # where `make data` puts the Cornell corpus
# Flags older checkpoints stored under other names (their `args`): old name -> the field's
RENAMED = {"encoder_layers": "encoder_n_layers", "decoder_layers": "decoder_n_layers", "attn": "attn_model"}


@dataclass
class DataConfig:
    """Which corpus, how it is tokenised, filtered and split."""

    corpus: str = field(default="chatterbot", metadata={
        "help": "training corpus (chatterbot is installed with the requirements and works offline)",
        "choices": CORPORA})
    data_path: str = field(default=None, metadata={
        "help": f"the corpus: Cornell's folder (default {DEFAULT_CORNELL_PATH}), ConvoKit's utterances.jsonl, a "
                "tsv file of query<TAB>response lines, or a JSON file in chitchat-dataset's format (default: the "
                "installed package's)", "type": str})
    language: str = field(default="english", metadata={
        "help": "chatterbot-corpus language folder (chinese, spanish, ...; --corpus chatterbot only)"})
    tokenizer: str = field(default="word", metadata={
        "help": "word: the tutorial's normalised word vocabulary; bpe: GPT-2-style byte-level BPE learnt from the "
                "training pairs (any language, no unknown words)", "choices": KINDS})
    vocab_size: int = field(default=DEFAULT_VOCAB_SIZE, metadata={
        "help": "BPE tokens to learn, the 256 bytes and PAD/SOS/EOS included (--tokenizer bpe only)"})
    min_count: int = field(default=MIN_COUNT, metadata={
        "help": "trim words seen fewer times than this (--tokenizer word only)"})
    extra_pairs: str = field(default=None, metadata={
        "help": "a tsv file of query<TAB>response lines added to the training pairs, never held out (the demo's "
                "small talk: train/smalltalk/<language>.tsv)", "type": str})
    heldout_fraction: float = field(default=0.05, metadata={
        "help": "share of the corpus's pairs held out of training to measure held-out loss (of its conversations, "
                "for --corpus chitchat)"})
    context_dropout: float = field(default=0.0, metadata={
        "help": "--context-turns: the chance that a drawn pair is trained on without its earlier turns, so that the "
                "bot also answers a turn it gets alone (a chat's first message is, in the corpus, a greeting)"})
    seed: int = field(default=0, metadata={"help": "seed of the held-out split, weights, batches and dropout"})


@dataclass
class OptimConfig:
    """The tutorial's optimisation recipe."""

    batch_size: int = field(default=64, metadata={"help": "pairs per batch"})
    learning_rate: float = field(default=1e-4, metadata={"help": "Adam learning rate of the encoder"})
    decoder_learning_ratio: float = field(default=5.0, metadata={
        "help": "decoder learning rate = learning rate x this"})
    clip: float = field(default=50.0, metadata={"help": "gradient norm clipping threshold (per module)"})
    teacher_forcing_ratio: float = field(default=1.0, metadata={
        "help": "chance per batch of teacher forcing (vectorised path); otherwise the decoder feeds itself step by "
                "step"})
    iterations: int = field(default=None, metadata={
        "help": "total training iterations (batches), counting those before a resume (default: 4000, or the "
                "resumed run's total)", "type": int})


@dataclass
class RunConfig:
    """Where a run writes, how often, on what."""

    save_dir: str = field(default=None, metadata={
        "help": "checkpoint folder (default: runs/<corpus>, or the resumed checkpoint's folder)", "type": str})
    save_every: int = field(default=500, metadata={"help": "checkpoint (and held-out evaluation) interval"})
    best_min_heldout: int = field(default=500, metadata={
        "help": "held-out pairs needed for best_checkpoint.tar to be the checkpoint of lowest held-out loss; with "
                "fewer it is the latest one (the loss on a few unseen pairs does not measure progress)"})
    print_every: int = field(default=100, metadata={
        "help": "log the running loss every this many iterations (reading it waits for the device)"})
    device: str = field(default="auto", metadata={
        "help": "where to run: auto is a CUDA GPU when torch sees one, else the CPU", "choices": DEVICES})
    resume: str = field(default=None, metadata={
        "help": "continue the run saved in this checkpoint where it stopped", "type": str, "metavar": "CHECKPOINT"})
    minutes: float = field(default=None, metadata={
        "help": "stop once this many minutes of training have passed (checked every --print-every iterations), "
                "saving a checkpoint there: a run of a fixed length in time, whatever the machine", "type": float})
    compile: bool = field(default=False, metadata={"help": "torch.compile the teacher-forced loss"})
    dry_run: bool = field(default=False, metadata={"help": "train on one batch, log its loss, save nothing"})


DEFAULT_ITERATIONS = 4000
SETTINGS = (DataConfig, ModelConfig, OptimConfig, RunConfig)


def flag(name: str) -> str:
    """The command-line flag of a field: data_path -> --data-path."""
    return "--" + name.replace("_", "-")


def add_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup, settings: type,
              only: Iterable[str] | None = None) -> None:
    """One flag per field of the dataclass `settings` (or those named in `only`), with its default and help."""
    for f in fields(settings):
        if only is not None and f.name not in only:
            continue
        default = f.default
        if isinstance(default, bool):
            parser.add_argument(flag(f.name), action="store_true", default=default, help=f.metadata["help"])
            continue
        kind = f.metadata.get("type") or type(default)
        extra = {k: f.metadata[k] for k in ("choices", "metavar") if k in f.metadata}
        parser.add_argument(flag(f.name), type=kind, default=default, help=f.metadata["help"], **extra)


def defaults() -> dict:
    """Every setting's default, by field name."""
    return {f.name: f.default for settings in SETTINGS for f in fields(settings)}


def stored_settings(stored: dict) -> argparse.Namespace:
    """A run's settings from a checkpoint's `args`: every field, defaults for the ones an older run did not store,
    old flag names under their fields' names."""
    values = defaults()
    values.update({RENAMED.get(key, key): value for key, value in stored.items()})
    return argparse.Namespace(**values)


def model_settings(args: argparse.Namespace) -> ModelConfig:
    """The ModelConfig fields of parsed flags."""
    return ModelConfig(**{f.name: getattr(args, f.name) for f in fields(ModelConfig)})
