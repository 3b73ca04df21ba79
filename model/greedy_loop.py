"""The greedy search loop compiled by TorchScript: one call decodes a whole batch, no Python per step.

seq2seq.greedy_decode runs each step's bookkeeping (masks, the chosen token, who has finished) in Python,
about 50 µs a step at batch 1, a fifth of a reply at the tutorial's sizes. `CompiledGreedy` holds the traced
decoder step (seq2seq.trace_step) and the same loop beside it in TorchScript: the same operations in the same
order, so the same replies bit for bit (tests/test_greedy_loop.py). It has no hooks: a streamed reply (on_step)
and OpenAI penalties (Python state per row) take greedy_decode's loop, with the same step.
"""
from __future__ import annotations

import logging
import warnings
from typing import Optional

import torch
from torch import Tensor, nn

from .constraints import START, mask_logits
from .voc import EOS_token, SOS_token

logger = logging.getLogger(__name__)


class CompiledGreedy(nn.Module):
    """A decoder step (called as the step itself) with `greedy`, the whole greedy loop, beside it."""

    def __init__(self, step: nn.Module):
        super().__init__()
        self.step = step
        self.sos, self.eos, self.start = SOS_token, EOS_token, START  # TorchScript reads no global variables

    def forward(self, token: Tensor, hidden: Tensor, encoder_outputs: Tensor,
                mask: Tensor) -> tuple[Tensor, Tensor]:
        """One decoder step, as the traced step: (1, n) ids -> logits (1, n, V), hidden (L, n, H)."""
        return self.step(token, hidden, encoder_outputs, mask)

    @torch.jit.export
    def greedy(self, encoder_outputs: Tensor, hidden: Tensor, mask: Tensor, max_length: int, never: Tensor,
               min_length: int, min_lengths: Optional[Tensor], allowed: Optional[Tensor], after: Optional[Tensor],
               horizon: int, max_lengths: Optional[Tensor]) -> tuple[Tensor, Tensor]:
        """greedy_decode's loop under a BatchMask's rules (BatchMask.loop_arguments, in this order): encoder
        outputs (T, B, H), the initial hidden (L, B, H) and source mask (T, B) -> replies (B, <= max_length) and
        each token's log-probability (B, <= max_length), float64, 0 after EOS."""
        batch = hidden.size(1)
        replies = torch.full((batch, max_length), self.eos, dtype=torch.long, device=hidden.device)
        logprobs = torch.zeros((batch, max_length), dtype=torch.double, device=hidden.device)
        rows = torch.arange(batch, device=hidden.device)  # which reply each row of the shrinking batch fills
        token = torch.full((1, batch), self.sos, dtype=torch.long, device=hidden.device)
        states: Optional[Tensor] = None if after is None else torch.full((batch,), self.start, dtype=torch.long,
                                                                          device=hidden.device)
        for t in range(max_length):
            logits, hidden = self.step(token, hidden, encoder_outputs, mask)  # (1, n, V)
            model_logprobs = torch.log_softmax(logits[0].float(), dim=1)  # (n, V)
            mask_logits(logits[0], never, t, min_length, None if min_lengths is None else min_lengths[rows],
                        allowed, None if states is None else states[rows],
                        None if max_lengths is None else max_lengths[rows], horizon, self.eos)
            token = logits.max(dim=2).indices  # (1, n)
            replies[rows, t] = token[0]
            if states is not None and after is not None:
                states[rows] = after[states[rows], token[0]]
            logprobs[rows, t] = model_logprobs.gather(1, token.t())[:, 0].double()
            going = token[0] != self.eos
            if not bool(going.all()):
                if not bool(going.any()):
                    return replies[:, : t + 1], logprobs[:, : t + 1]
                keep = going.nonzero().squeeze(1)
                rows, token, hidden = rows[keep], token[:, keep], hidden[:, keep]
                encoder_outputs, mask = encoder_outputs[:, keep], mask[:, keep]
        return replies, logprobs


def compile_greedy(step: nn.Module) -> nn.Module:
    """step (a traced decoder step) inside a scripted CompiledGreedy, or step itself if TorchScript refuses."""
    if not isinstance(step, torch.jit.ScriptModule):
        return step  # an eager decoder: trace_step fell back, so TorchScript is not to be relied on
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated",
                                    category=DeprecationWarning)
            return torch.jit.script(CompiledGreedy(step))
    except Exception as e:  # TorchScript may be gone from a future torch: greedy_decode's loop gives the same replies
        logger.warning("cannot compile the greedy loop (%s); decoding with the Python loop", type(e).__name__)
        return step

