"""Masked loss, the two training steps (tutorial step loop and vectorised teacher forcing), evaluation.

Both steps train the same model on the same objective as the PyTorch chatbot tutorial:
backward runs on the sum over decoder steps of the masked mean NLL at that step, and the
reported loss is the token-mean NLL (perplexity = exp(loss)).

Nothing in a training iteration reads a value back to the host (no .item(), no boolean
indexing on the device), so on CUDA the CPU queues iteration i+1 while the GPU runs i.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from model.seq2seq import EncoderRNN, LuongAttnDecoderRNN, source_mask
from model.voc import MAX_LENGTH, SOS_token, Voc
from train.data import Pair, batch_to_tensors

# (objective for backward, summed token NLL, token count), the first two 0-dim tensors
LossParts = tuple[torch.Tensor, torch.Tensor, int]


@dataclass
class Batch:
    """One batch on its device, with the index tensors the vectorised loss needs precomputed on the CPU."""

    input: torch.Tensor  # (Ts, B) padded source ids
    lengths: torch.Tensor  # (B,) source lengths, always on the CPU (pack_padded_sequence)
    src_mask: torch.Tensor  # (Ts, B) bool, True on real source tokens
    target: torch.Tensor  # (Tt, B) padded target ids
    mask: torch.Tensor  # (Tt, B) bool, True on real target tokens
    positions: torch.Tensor  # (N,) flat indexes t * B + b of the real target tokens
    step_counts: torch.Tensor  # (Tt,) float, real tokens at each decoder step
    max_target_len: int
    n_tokens: int  # N, known on the CPU so counting it never syncs


def make_batch(voc: Voc, pairs: Sequence[Pair], device: torch.device, max_length: int = MAX_LENGTH) -> Batch:
    """batch_to_tensors plus masks and indexes, copied to `device` (pinned + non_blocking on CUDA); max_length cuts
    a pair's earlier turns (model/context.py)."""
    inp, lengths, target, mask, max_target_len = batch_to_tensors(voc, pairs, max_length)
    cpu = {
        "input": inp,
        "src_mask": source_mask(lengths, inp.size(0), torch.device("cpu")),
        "target": target,
        "mask": mask,
        "positions": mask.flatten().nonzero().squeeze(1),
        "step_counts": mask.sum(dim=1).float(),
    }
    n_tokens = int(cpu["positions"].numel())
    if device.type == "cuda":  # pinned memory lets the copy overlap the GPU's current work
        on_device = {k: v.pin_memory().to(device, non_blocking=True) for k, v in cpu.items()}
    else:
        on_device = {k: v.to(device) for k, v in cpu.items()}
    return Batch(lengths=lengths, max_target_len=max_target_len, n_tokens=n_tokens, **on_device)


def prefetch(batches: Iterable[Batch]) -> Iterator[Batch]:
    """Yield batches one ahead: batch i+1 is built and its copy queued before step i is handed out."""
    iterator = iter(batches)
    ahead = next(iterator, None)
    while ahead is not None:
        current, ahead = ahead, next(iterator, None)
        yield current


# ---------------------------------------------------------------- loss

def token_nll(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """-log p(target) from raw logits (..., V) and ids (...) -> (...)."""
    return -F.log_softmax(logits, dim=-1).gather(-1, target.unsqueeze(-1)).squeeze(-1)


def mask_nll_loss(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The tutorial's maskNLLLoss for one step: logits (B, V), target (B,), mask (B,) -> (mean, sum) over mask.

    torch.where instead of masked_select: same values, no device-to-host sync for the result's size.
    """
    nll = torch.where(mask, token_nll(logits, target), torch.zeros((), device=logits.device))  # (B,)
    total = nll.sum()
    return total / mask.sum(), total


def sos_row(batch_size: int, device: torch.device) -> torch.Tensor:
    """(1, B) of SOS: the first decoder input."""
    return torch.full((1, batch_size), SOS_token, dtype=torch.long, device=device)


def step_loop_loss(encoder: EncoderRNN, decoder: LuongAttnDecoderRNN, batch: Batch,
                   teacher_forcing: bool = True) -> LossParts:
    """The tutorial's train(): one decoder call per target step, fed the target or its own argmax."""
    encoder_outputs, encoder_hidden = encoder(batch.input, batch.lengths)  # (Ts, B, H)
    hidden = encoder_hidden[: decoder.n_layers]
    token = sos_row(batch.input.size(1), batch.input.device)  # (1, B)
    objective = nll_sum = torch.zeros((), device=batch.input.device)
    for t in range(batch.max_target_len):
        logits, hidden = decoder(token, hidden, encoder_outputs, batch.src_mask)  # (1, B, V)
        step_mean, step_sum = mask_nll_loss(logits[0], batch.target[t], batch.mask[t])
        objective = objective + step_mean
        nll_sum = nll_sum + step_sum
        token = batch.target[t].unsqueeze(0) if teacher_forcing else logits.argmax(dim=2)  # (1, B)
    return objective, nll_sum, batch.n_tokens


def teacher_forced_loss(encoder: EncoderRNN, decoder: LuongAttnDecoderRNN, batch: Batch) -> LossParts:
    """Vectorised teacher forcing: the decoder runs once over the shifted target, the loss for all steps at once.

    Same objective and gradients as step_loop_loss(teacher_forcing=True): attention comes
    after the GRU (no input feeding), so step t depends only on target[:t].
    """
    encoder_outputs, encoder_hidden = encoder(batch.input, batch.lengths)  # (Ts, B, H)
    batch_size = batch.input.size(1)
    dec_input = torch.cat((sos_row(batch_size, batch.input.device), batch.target[:-1]))  # (Tt, B)
    features, _ = decoder.features(dec_input, encoder_hidden[: decoder.n_layers],
                                   encoder_outputs, batch.src_mask)  # (Tt, B, H)
    real = features.flatten(0, 1).index_select(0, batch.positions)  # (N, H) real tokens only
    nll = token_nll(decoder.out(real), batch.target.flatten().index_select(0, batch.positions))  # (N,)
    step_sums = nll.new_zeros(batch.target.size(0)).index_add(0, batch.positions // batch_size, nll)  # (Tt,)
    return (step_sums / batch.step_counts).sum(), nll.sum(), batch.n_tokens


# ---------------------------------------------------------------- optimisation

def make_optimizers(encoder: nn.Module, decoder: nn.Module, learning_rate: float, decoder_learning_ratio: float,
                    fused: bool) -> list[torch.optim.Adam]:
    """The tutorial's two Adams (the decoder's lr x decoder_learning_ratio).

    As in the tutorial, the shared embedding belongs to both modules, so both optimisers update it.
    fused=True: one kernel per step instead of a loop over tensors (CUDA and CPU).
    """
    options = {"fused": True} if fused else {}
    return [torch.optim.Adam(encoder.parameters(), lr=learning_rate, **options),
            torch.optim.Adam(decoder.parameters(), lr=learning_rate * decoder_learning_ratio, **options)]


class Objective(nn.Module):
    """The training objective as one module, so DistributedDataParallel can wrap encoder and decoder together."""

    def __init__(self, encoder: EncoderRNN, decoder: LuongAttnDecoderRNN):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def forward(self, batch: Batch, teacher_forcing: bool, loss_fn=teacher_forced_loss) -> LossParts:
        """Teacher forcing takes `loss_fn` (the vectorised loss unless told otherwise); without it the decoder
        feeds itself in the step loop."""
        if teacher_forcing:
            return loss_fn(self.encoder, self.decoder, batch)
        return step_loop_loss(self.encoder, self.decoder, batch, teacher_forcing=False)


def train_step(encoder: EncoderRNN, decoder: LuongAttnDecoderRNN, optimizers: Sequence[torch.optim.Optimizer],
               batch: Batch, clip: float, teacher_forcing: bool, loss_fn=teacher_forced_loss,
               objective_module: nn.Module | None = None) -> torch.Tensor:
    """One update; returns the batch's summed token NLL as a detached device tensor (read it later).

    objective_module: Objective(encoder, decoder), or its DistributedDataParallel wrapper under torchrun.
    """
    for optimizer in optimizers:
        optimizer.zero_grad(set_to_none=True)
    objective_module = objective_module or Objective(encoder, decoder)
    objective, nll_sum, _ = objective_module(batch, teacher_forcing, loss_fn)
    objective.backward()
    nn.utils.clip_grad_norm_(encoder.parameters(), clip, foreach=True)
    nn.utils.clip_grad_norm_(decoder.parameters(), clip, foreach=True)
    for optimizer in optimizers:
        optimizer.step()
    return nll_sum.detach()


@torch.no_grad()
def evaluate(encoder: EncoderRNN, decoder: LuongAttnDecoderRNN, voc: Voc, pairs: Sequence[Pair],
             batch_size: int, device: torch.device, max_length: int = MAX_LENGTH) -> float:
    """Token-mean teacher-forced NLL over `pairs` in eval mode (nan for no pairs); restores the modes."""
    if not pairs:
        return float("nan")
    modes = encoder.training, decoder.training
    encoder.eval()
    decoder.eval()
    total, tokens = torch.zeros((), device=device), 0
    for start in range(0, len(pairs), batch_size):
        batch = make_batch(voc, pairs[start: start + batch_size], device, max_length)
        total += teacher_forced_loss(encoder, decoder, batch)[1]
        tokens += batch.n_tokens
    encoder.train(modes[0])
    decoder.train(modes[1])
    return total.item() / tokens
