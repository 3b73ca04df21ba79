"""Training-speed benchmark: the tutorial's step loop against our fast path, same batches, same start.

Reference: the tutorial's train() (one decoder call per step, default Adam, default
clip_grad_norm_). Ours: train.engine.train_step (vectorised teacher forcing, loss on real
tokens only, fused Adam, foreach clipping). Both at the tutorial's sizes on the Cornell
pairs. The last line printed is `train_speedup: X` (reference median ms per iteration / ours).

    python -m train.bench_train [--cornell-dir DIR] [--iterations 40] [--device auto]
"""
from __future__ import annotations

import argparse
import copy
import logging
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from model.checkpoint import build_model, default_config
from train.data import CORNELL_FILES, default_cornell_dir, load_chatterbot, load_cornell, prepare, random_batches
from train.engine import (
    Batch,
    make_batch,
    make_optimizers,
    pick_device,
    step_loop_loss,
    teacher_forced_loss,
    train_step,
)

CLIP = 50.0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m train.bench_train", description=__doc__.splitlines()[0])
    p.add_argument("--cornell-dir", type=Path, default=None,
                   help="Cornell corpus folder (default: $CORNELL_DIR, else data/cornell); the chatterbot corpus "
                        "is used if none exists")
    p.add_argument("--iterations", type=int, default=40,
                   help="timed iterations per path, the two paths taking turns batch by batch (default: 40)")
    p.add_argument("--warmup", type=int, default=3, help="untimed iterations per path first (default: 3)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where to run (default: auto)")
    p.add_argument("--hidden-size", type=int, default=500, help="hidden size (default: 500, the tutorial's)")
    p.add_argument("--batch-size", type=int, default=64, help="batch size (default: 64)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and batches (default: 0)")
    return p.parse_args(argv)


def find_cornell(explicit: Path | None) -> Path | None:
    """The folder holding the Cornell files: --cornell-dir, else $CORNELL_DIR or data/cornell (no machine paths)."""
    candidates = [explicit] if explicit else [default_cornell_dir()]
    for folder in candidates:
        if all((folder / name).is_file() for name in CORNELL_FILES):
            return folder
    return None


def load_pairs(cornell_dir: Path | None):
    """(voc, pairs) of the Cornell corpus, or of the chatterbot corpus (with a note) when it is absent."""
    folder = find_cornell(cornell_dir)
    if folder is None:
        print("note: no Cornell corpus found; benchmarking on the (much smaller) chatterbot corpus")
        return prepare(load_chatterbot(), min_count=1)
    print(f"corpus: Cornell Movie-Dialogs from {folder}")
    return prepare(load_cornell(folder))


def reference_step(encoder: nn.Module, decoder: nn.Module, optimizers, batch: Batch) -> torch.Tensor:
    """The tutorial's train(): step loop with teacher forcing, per-module default clipping."""
    for optimizer in optimizers:
        optimizer.zero_grad()
    objective, nll_sum, _ = step_loop_loss(encoder, decoder, batch, teacher_forcing=True)
    objective.backward()
    nn.utils.clip_grad_norm_(encoder.parameters(), CLIP)
    nn.utils.clip_grad_norm_(decoder.parameters(), CLIP)
    for optimizer in optimizers:
        optimizer.step()
    return nll_sum.detach()


def time_iterations(step: Callable[[Batch], torch.Tensor], batches: list[Batch], device: torch.device) -> list[float]:
    """Seconds per iteration, one per batch (the device is synchronised around each)."""
    times = []
    for batch in batches:
        sync(device)
        start = time.perf_counter()
        step(batch)
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_path(initial, config: dict, num_words: int, device: torch.device, fast: bool):
    """A model + optimisers from the shared initial weights, and its step function."""
    encoder, decoder = build_model(config, num_words)
    encoder.load_state_dict(initial[0])
    decoder.load_state_dict(initial[1])
    encoder.to(device).train()
    decoder.to(device).train()
    optimizers = make_optimizers(encoder, decoder, 1e-4, 5.0, fused=fast)
    if fast:
        return lambda b: train_step(encoder, decoder, optimizers, b, CLIP, teacher_forcing=True)
    return lambda b: reference_step(encoder, decoder, optimizers, b)


def check_same_loss(initial, config: dict, num_words: int, batch: Batch, device: torch.device) -> None:
    """Print both paths' objective on one batch with dropout off: they must agree."""
    encoder, decoder = build_model(config, num_words)
    encoder.load_state_dict(initial[0])
    decoder.load_state_dict(initial[1])
    encoder.to(device).eval()
    decoder.to(device).eval()
    with torch.no_grad():
        ref = step_loop_loss(encoder, decoder, batch)[0].item()
        ours = teacher_forced_loss(encoder, decoder, batch)[0].item()
    print(f"objective on batch 0 (eval mode): reference {ref:.6f}, ours {ours:.6f}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    device = pick_device(args.device)
    voc, pairs = load_pairs(args.cornell_dir)
    config = default_config(hidden_size=args.hidden_size)
    print(f"device {device}, threads {torch.get_num_threads()}, vocabulary {voc.num_words}, pairs {len(pairs)}, "
          f"hidden {args.hidden_size}, layers 2+2, batch {args.batch_size}, torch {torch.__version__}")
    torch.manual_seed(args.seed)
    encoder, decoder = build_model(config, voc.num_words)
    initial = (copy.deepcopy(encoder.state_dict()), copy.deepcopy(decoder.state_dict()))
    n = args.warmup + args.iterations
    batches = [make_batch(voc, b, device) for b in random_batches(pairs, args.batch_size, n, args.seed)]
    check_same_loss(initial, config, voc.num_words, batches[0], device)
    paths = {"reference": make_path(initial, config, voc.num_words, device, fast=False),
             "ours": make_path(initial, config, voc.num_words, device, fast=True)}
    for step in paths.values():
        time_iterations(step, batches[: args.warmup], device)
    times = {name: [] for name in paths}
    for batch in batches[args.warmup:]:  # interleaved, so load from elsewhere hits both paths alike
        for name, step in paths.items():
            times[name] += time_iterations(step, [batch], device)
    for name, ts in times.items():
        print(f"{name:>9}: {1000 * statistics.median(ts):8.1f} ms/iter median "
              f"(mean {1000 * statistics.mean(ts):.1f}, {len(ts)} iterations)")
    print(f"train_speedup: {statistics.median(times['reference']) / statistics.median(times['ours']):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
