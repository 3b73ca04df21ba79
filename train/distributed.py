"""Data-parallel training under torchrun (DistributedDataParallel; gloo on the CPU, NCCL on GPUs).

    torchrun --nproc-per-node 2 -m train.main --corpus tsv --data-path pairs.tsv ...

Every rank draws the same global batch from the same seeded sampler and trains on its own
contiguous share of it (batch_size / world size pairs); DDP all-reduces the gradients. The loss is
normalised by the *global* token count of each decoder step (the tutorial's per-step mean over the
whole batch), so a step of N ranks equals one single-process step on the same global batch.
Rank 0 alone logs, evaluates and writes checkpoints; --resume restores the one sampler state every
rank shares. Without torchrun (no WORLD_SIZE) nothing here changes the single-process path.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) without it."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def is_main() -> bool:
    return world()[0] == 0


def setup(device: torch.device) -> torch.device:
    """Join torchrun's process group (once); on GPUs each rank takes its LOCAL_RANK's device."""
    rank, size = world()
    if size == 1 or dist.is_initialized():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def teardown() -> None:
    """Wait for every rank (rank 0 may still be writing a checkpoint), then leave the process group: a rank that
    exits with gloo's threads still running aborts ("terminate called without an active exception")."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def shard(pairs: Sequence, rank: int, size: int) -> list:
    """Rank's contiguous share of a global batch (its size must divide by the world size)."""
    if len(pairs) % size:
        raise ValueError(f"--batch-size {len(pairs)} does not divide among {size} processes")
    share = len(pairs) // size
    return list(pairs[rank * share:(rank + 1) * share])


def global_step_counts(counts: torch.Tensor) -> torch.Tensor:
    """Real tokens at each decoder step summed over every rank's share (ranks' targets differ in length)."""
    length = torch.tensor([counts.numel()], device=counts.device)
    dist.all_reduce(length, op=dist.ReduceOp.MAX)
    padded = counts.new_zeros(int(length))
    padded[: counts.numel()] = counts
    dist.all_reduce(padded)
    return padded[: counts.numel()]


def normalise_globally(batch):
    """The batch with step counts that make DDP's averaged gradient the global batch's gradient: each rank's
    per-step sums are divided by the global counts, and DDP's 1/world size is undone."""
    return replace(batch, step_counts=global_step_counts(batch.step_counts) / world()[1])


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    """A copy of `value` summed over the ranks (the value itself in a single process)."""
    if world()[1] == 1:
        return value
    value = value.clone()
    dist.all_reduce(value)
    return value
