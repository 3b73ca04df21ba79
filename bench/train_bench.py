"""Training-speed benchmark: the tutorial's step loop against our fast path, same batches, same start.

Reference: the tutorial's train() (one decoder call per step, default Adam, default
clip_grad_norm_). Ours: train.engine.train_step (vectorised teacher forcing, loss on real
tokens only, fused Adam, foreach clipping). Both at the tutorial's sizes on the Cornell
pairs. The last line printed is `train_speedup: X` (reference median ms per iteration / ours).

    python -m bench.train_bench [--data-path data/cornell] [--timed-iterations 40] [--device auto]
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
from model.config import ModelConfig
from train.config import DEFAULT_CORNELL_PATH, DataConfig, OptimConfig, RunConfig, add_flags, stored_settings
from train.data import CORNELL_FILES, load_data, random_batches
from train.device import pick_device
from train.engine import (
    Batch,
    make_batch,
    make_optimizers,
    step_loop_loss,
    teacher_forced_loss,
    train_step,
)

CLIP = OptimConfig.clip  # the tutorial's, for both paths


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.train_bench", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_flags(p, DataConfig, only=("data_path", "seed"))
    add_flags(p, ModelConfig, only=("hidden_size",))
    add_flags(p, OptimConfig, only=("batch_size",))
    add_flags(p, RunConfig, only=("device",))
    p.add_argument("--timed-iterations", type=int, default=40,
                   help="timed iterations per path, the two paths taking turns batch by batch")
    p.add_argument("--warmup", type=int, default=3, help="untimed iterations per path first")
    return p.parse_args(argv)


def load_pairs(data_path: str | None):
    """(voc, training pairs) of the Cornell corpus at data_path (default data/cornell), or of the chatterbot corpus
    (with a note) when it is absent."""
    folder = Path(data_path or DEFAULT_CORNELL_PATH)
    if not all((folder / name).is_file() for name in CORNELL_FILES):
        print(f"note: no Cornell corpus in {folder}; benchmarking on the (much smaller) chatterbot corpus")
        voc, pairs, _ = load_data(stored_settings({"corpus": "chatterbot", "min_count": 1}))
        return voc, pairs
    print(f"corpus: Cornell Movie-Dialogs from {folder}")
    voc, pairs, _ = load_data(stored_settings({"corpus": "cornell", "data_path": str(folder)}))
    return voc, pairs


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
    voc, pairs = load_pairs(args.data_path)
    config = default_config(hidden_size=args.hidden_size)
    print(f"device {device}, threads {torch.get_num_threads()}, vocabulary {voc.num_words}, pairs {len(pairs)}, "
          f"hidden {args.hidden_size}, layers 2+2, batch {args.batch_size}, torch {torch.__version__}")
    torch.manual_seed(args.seed)
    encoder, decoder = build_model(config, voc.num_words)
    initial = (copy.deepcopy(encoder.state_dict()), copy.deepcopy(decoder.state_dict()))
    n = args.warmup + args.timed_iterations
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
