"""Validate a chatbot checkpoint, then pack it with the handler into a TorchServe archive (.mar).

    python -m tools.build_mar                       # newest runs/**/best_checkpoint.tar (else newest periodic)
    python -m tools.build_mar --checkpoint runs/x/4000_checkpoint.tar --dry-run

Validation loads the checkpoint exactly as the handler will (model.load_chatbot, weights_only=True)
and decodes one test reply; any failure is one line on stderr and exit 1.
The archiver flattens directories given to --extra-files, so the `model` and `serving` packages are staged
inside a temporary folder and that folder is passed: the archive then holds model/*.py and serving/*.py.
Only what serving needs is archived: the optimiser states (about two thirds of a training
checkpoint) stay out of the .mar.
"""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import yaml

from model import CheckpointError, load_chatbot
from model.checkpoint import serving_subset
from model.schema import DecodeOptions, InvalidOption, parse_options, server_limits
from tools.server_config import ARCHIVE_NAME, MODEL_VERSION, REPO, read_properties
from train.runs import add_checkpoint_flags, chosen_checkpoint


class BuildError(Exception):
    """A problem the user can fix; reported as one line, without a traceback."""


def validate_checkpoint_file(path: Path) -> tuple[dict, str]:
    """Load `path` as the handler does and decode one reply; returns it and a one-line summary."""
    if not path.is_file():
        raise BuildError(f"checkpoint not found: {path}")
    try:
        chatbot = load_chatbot(path)
        reply = chatbot.reply(chatbot.voc.example_text())
    except CheckpointError as e:
        raise BuildError(str(e)) from e
    except Exception as e:  # a checkpoint that loads but cannot decode is just as unusable
        raise BuildError(f"{path}: the model fails on a test reply: {type(e).__name__}: {e}") from e
    if reply.error:
        raise BuildError(f"{path}: the model fails on a test reply: {reply.error}")
    ckpt = chatbot.checkpoint
    heldout = ckpt.get("heldout_loss")
    origin = ", converted from the PyTorch Chatbot Tutorial's format" if ckpt.get("converted_from") else ""
    return ckpt, (f"{path}: ok ({chatbot.voc.num_words} {chatbot.voc.kind} tokens, iteration "
                  f"{ckpt.get('iteration', '?')}, held-out loss "
                  f"{'unknown' if heldout is None else f'{heldout:.4f}'}, {ckpt['config']['attn_model']} attention"
                  f"{origin})" + (f"\nchosen as {ckpt['chosen_by']}" if ckpt.get("chosen_by") else ""))


def serving_checkpoint(ckpt: dict, name: str, staging: Path) -> Path:
    """staging/name: the checkpoint without optimiser states, which serving never reads."""
    staging.mkdir(parents=True, exist_ok=True)
    path = staging / name
    torch.save(serving_subset(ckpt), path)
    return path


PACKAGES = ("model", "serving")  # what the handler imports, unpacked beside it: the model and the serving core


def stage_model_package(staging: Path) -> Path:
    """Copy model/*.py and serving/*.py into staging/model and staging/serving (no caches); return staging."""
    for package in PACKAGES:
        target = staging / package
        target.mkdir(parents=True)
        for source in sorted((REPO / package).glob("*.py")):
            shutil.copy2(source, target / source.name)
    return staging


def decoding_defaults(config_file: Path, settings: list[str], staging: Path) -> Path:
    """config_file, or a copy in staging with the handler's decoding defaults set from KEY=VALUE items (checked as
    a request's options are: an unknown name or a bad value is a BuildError)."""
    if not settings:
        return config_file
    config = yaml.safe_load(config_file.read_text())
    values = {}
    for item in settings:
        name, _, value = item.partition("=")
        values[name] = yaml.safe_load(value)
    try:
        parse_options(values, DecodeOptions(), server_limits(config["handler"]))
    except (InvalidOption, ValueError) as e:
        raise BuildError(f"--default: {e}") from None
    config["handler"].update(values)
    staging.mkdir(parents=True, exist_ok=True)
    path = staging / config_file.name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    print(f"decoding defaults set in the archive's model-config: {values}")
    return path


def archiver_command(args: argparse.Namespace, extra_files: Path, serialized_file: Path | None = None) -> list:
    """The torch-model-archiver command line (serialized_file defaults to args.checkpoint)."""
    archiver = Path(sys.executable).with_name("torch-model-archiver")
    if not archiver.exists():
        archiver = shutil.which("torch-model-archiver")
        if archiver is None:
            raise BuildError("torch-model-archiver not found: pip install -r requirements.txt")
    return [str(archiver), "--model-name", args.model_name, "--version", args.version,
            "--serialized-file", str(serialized_file or args.checkpoint), "--handler", str(args.handler),
            "--extra-files", str(extra_files), "--config-file", str(args.config_file),
            "--export-path", str(args.export_path), "--force"]


def build(args: argparse.Namespace) -> Path:
    """Validate, stage and archive; returns the .mar path."""
    try:
        args.checkpoint = chosen_checkpoint(args)
    except FileNotFoundError as e:
        raise BuildError(str(e)) from None
    ckpt, summary = validate_checkpoint_file(args.checkpoint)
    print(summary)
    with tempfile.TemporaryDirectory(prefix="build_mar_") as tmp:
        slim = serving_checkpoint(ckpt, args.checkpoint.name, Path(tmp) / "checkpoint")
        args.config_file = decoding_defaults(args.config_file, args.default, Path(tmp) / "config")
        command = archiver_command(args, stage_model_package(Path(tmp) / "extra"), slim)
        print("$ " + shlex.join(command))
        if args.dry_run:
            return args.export_path / f"{args.model_name}.mar"
        args.export_path.mkdir(parents=True, exist_ok=True)
        # The archiver works in $TMPDIR/<model-name>; a private TMPDIR keeps builds apart.
        result = subprocess.run(command, env={**os.environ, "TMPDIR": tmp}, capture_output=True, text=True)
        if result.returncode != 0:
            raise BuildError(f"torch-model-archiver failed: {(result.stderr or result.stdout).strip()[-500:]}")
    mar = args.export_path / f"{args.model_name}.mar"
    print(f"wrote {mar} ({mar.stat().st_size / 1e6:.1f} MB)")
    return mar


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tools.build_mar", description=__doc__.split("\n")[0])
    add_checkpoint_flags(parser, "checkpoint .tar, the project's or the PyTorch Chatbot Tutorial's")
    parser.add_argument("--model-name", default=ARCHIVE_NAME,
                        help=f"archive name, model-store/<name>.mar (default: from config.properties' load_models, "
                             f"{ARCHIVE_NAME})")
    parser.add_argument("--version", default=MODEL_VERSION,
                        help="model version recorded in the archive (the OpenAI-compatible API's base URL holds it)")
    parser.add_argument("--handler", type=Path, default=REPO / "handler" / "seq2seq_handler.py",
                        help="TorchServe handler module")
    parser.add_argument("--default", action="append", default=[], metavar="OPTION=VALUE",
                        help="a decoding default of this archive, over the model-config's (repeatable; e.g. "
                             "no_repeat_ngram_size=2, which make demo sets)")
    parser.add_argument("--config-file", type=Path, default=REPO / "handler" / "model-config.yaml",
                        help="model-config YAML packed into the archive (batching, workers, handler options)")
    parser.add_argument("--export-path", type=Path, default=REPO / read_properties()["model_store"],
                        help="where the .mar goes (config.properties' model_store)")
    parser.add_argument("--dry-run", action="store_true",
                        help="validate the checkpoint and print the archiver command without running it")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    try:
        build(parse_args(argv))
    except BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
