"""Encoder, Luong attention decoder and batched greedy search (PyTorch chatbot tutorial)."""
from __future__ import annotations

import logging
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .voc import EOS_token, SOS_token

logger = logging.getLogger(__name__)


class EncoderRNN(nn.Module):
    """Bidirectional GRU encoder; the two directions' outputs are summed."""

    def __init__(self, hidden_size: int, embedding: nn.Embedding, n_layers: int = 1, dropout: float = 0.0):
        super().__init__()
        self.n_layers = n_layers
        self.hidden_size = hidden_size
        self.embedding = embedding
        self.gru = nn.GRU(hidden_size, hidden_size, n_layers,
                          dropout=(0 if n_layers == 1 else dropout), bidirectional=True)

    def forward(self, input_seq: torch.Tensor, input_lengths: torch.Tensor,
                hidden: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """input_seq (T, B) padded ids, input_lengths (B,) on the CPU -> outputs (T, B, H), hidden (2L, B, H)."""
        embedded = self.embedding(input_seq)  # (T, B, H)
        lengths = input_lengths.cpu()
        # A serving batch comes in any order (packing then sorts and unsorts for us); training
        # batches come sorted, which skips the sort index's blocking host-to-GPU copy.
        is_sorted = bool((lengths[:-1] >= lengths[1:]).all())
        packed = nn.utils.rnn.pack_padded_sequence(embedded, lengths, enforce_sorted=is_sorted)
        outputs, hidden = self.gru(packed, hidden)
        outputs, _ = nn.utils.rnn.pad_packed_sequence(outputs, total_length=input_seq.size(0))  # (T, B, 2H)
        outputs = outputs[:, :, : self.hidden_size] + outputs[:, :, self.hidden_size:]  # (T, B, H)
        return outputs, hidden


class Attn(nn.Module):
    """Luong attention scores ('dot', 'general' or 'concat') for many decoder steps at once."""

    METHODS = ("dot", "general", "concat")

    def __init__(self, method: str, hidden_size: int):
        super().__init__()
        if method not in self.METHODS:
            raise ValueError(f"attention method must be one of {self.METHODS}, not {method!r}")
        self.method = method
        self.hidden_size = hidden_size
        if method == "general":
            self.attn = nn.Linear(hidden_size, hidden_size)
        elif method == "concat":
            self.attn = nn.Linear(hidden_size * 2, hidden_size)
            self.v = nn.Parameter(torch.empty(hidden_size).uniform_(-0.1, 0.1))

    def scores(self, dec: torch.Tensor, enc: torch.Tensor) -> torch.Tensor:
        """dec (Td, B, H), enc (Ts, B, H) -> raw scores (B, Td, Ts)."""
        if self.method == "general":
            enc = self.attn(enc)
        if self.method in ("dot", "general"):
            return torch.bmm(dec.transpose(0, 1), enc.permute(1, 2, 0))
        # concat: W[h_t; h_s] = W_dec h_t + W_enc h_s, so no (Td x Ts) concatenation is built.
        w_dec, w_enc = self.attn.weight.split(self.hidden_size, dim=1)
        energy = torch.tanh(
            (dec @ w_dec.t()).unsqueeze(1) + (enc @ w_enc.t() + self.attn.bias).unsqueeze(0)
        )  # (Td, Ts, B, H)
        return (energy @ self.v).permute(2, 0, 1)

    def forward(self, dec: torch.Tensor, enc: torch.Tensor, src_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Attention weights (B, Td, Ts); padded source positions (src_mask False) get zero weight."""
        scores = self.scores(dec, enc)
        if src_mask is not None:  # src_mask (Ts, B)
            scores = scores.masked_fill(~src_mask.t().unsqueeze(1), float("-inf"))
        return F.softmax(scores, dim=2)


class LuongAttnDecoderRNN(nn.Module):
    """GRU decoder with global attention after the GRU step (no input feeding).

    Because attention does not feed back into the GRU, a teacher-forced target can be run
    in one GRU call over all steps; a single greedy step is the same call with T = 1.
    """

    def __init__(self, attn_model: str, embedding: nn.Embedding, hidden_size: int, output_size: int,
                 n_layers: int = 1, dropout: float = 0.1):
        super().__init__()
        self.attn_model = attn_model
        self.hidden_size = hidden_size
        self.output_size = output_size
        self.n_layers = n_layers
        self.embedding = embedding
        self.embedding_dropout = nn.Dropout(dropout)
        self.gru = nn.GRU(hidden_size, hidden_size, n_layers, dropout=(0 if n_layers == 1 else dropout))
        self.concat = nn.Linear(hidden_size * 2, hidden_size)
        self.out = nn.Linear(hidden_size, output_size)
        self.attn = Attn(attn_model, hidden_size)

    def features(self, input_seq: torch.Tensor, last_hidden: torch.Tensor, encoder_outputs: torch.Tensor,
                 src_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Everything but the output projection: (Td, B) ids -> features (Td, B, H), hidden (L, B, H).

        Split out so training can project only the real (unpadded) target tokens.
        """
        embedded = self.embedding_dropout(self.embedding(input_seq))  # (Td, B, H)
        rnn_output, hidden = self.gru(embedded, last_hidden)  # (Td, B, H)
        attn_weights = self.attn(rnn_output, encoder_outputs, src_mask)  # (B, Td, Ts)
        context = torch.bmm(attn_weights, encoder_outputs.transpose(0, 1)).transpose(0, 1)  # (Td, B, H)
        return torch.tanh(self.concat(torch.cat((rnn_output, context), dim=2))), hidden

    def forward(self, input_seq: torch.Tensor, last_hidden: torch.Tensor, encoder_outputs: torch.Tensor,
                src_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """input_seq (Td, B) ids -> logits (Td, B, V) and hidden (L, B, H). No softmax: callers pick."""
        features, hidden = self.features(input_seq, last_hidden, encoder_outputs, src_mask)
        return self.out(features), hidden


def source_mask(input_lengths: torch.Tensor, max_len: int, device: torch.device) -> torch.Tensor:
    """(Ts, B) bool mask, True where a source position holds a real token."""
    positions = torch.arange(max_len, device=device).unsqueeze(1)  # (Ts, 1)
    return positions < input_lengths.to(device).unsqueeze(0)


@torch.no_grad()
def greedy_decode(encoder: EncoderRNN, decoder: LuongAttnDecoderRNN, input_seq: torch.Tensor,
                  input_lengths: torch.Tensor, max_length: int, step: Callable | None = None,
                  with_logprobs: bool = False, constrain: Callable | None = None,
                  on_step: Callable | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Greedy replies for a whole batch: (T, B) padded ids -> (B, <= max_length) token ids.

    with_logprobs: also return each token's log-probability (B, <= max_length) (0 after EOS), under the
    model's own distribution; the ids are the same either way.

    constrain: what may be generated (model/constraints.py's BatchMask): called as constrain(logits (n, V),
    rows (n,), t) to mask each step's logits in place, then constrain.advance(rows, tokens). None: the
    tutorial's GreedySearchDecoder, any token at any step.

    on_step: called as on_step(rows (n,), tokens (n,), t) with each step's chosen tokens, as they are chosen (a
    streamed reply's tokens); None: nothing is called.

    step runs one decoder step, as decoder(token, hidden, encoder_outputs, mask) does (default:
    the decoder itself; trace_step's copy is the same with less Python overhead). A step with a `greedy` method
    (model/greedy_loop.py's CompiledGreedy) runs the whole loop in that one call when constrain is a BatchMask
    and on_step is None.

    Each row stops at its own EOS (everything after it is EOS padding) and leaves the batch, so
    later steps decode only the unfinished rows; the loop ends when every row has finished or
    max_length tokens were produced. Padded source positions are masked out of attention; with
    input_seq padded to a fixed length (Chatbot pads to max_length) a sentence decodes the same
    alone or inside any batch.
    """
    device = input_seq.device
    encoder_outputs, encoder_hidden = encoder(input_seq, input_lengths)  # (T, B, H), (2L, B, H)
    mask = source_mask(input_lengths, input_seq.size(0), device)  # (T, B)
    hidden = encoder_hidden[: decoder.n_layers]  # the tutorial's choice: layer 0's two directions
    step = step or decoder
    if hasattr(step, "greedy") and hasattr(constrain, "loop_arguments") and on_step is None:
        # the same loop compiled (model/greedy_loop.py): the same replies without Python per step
        replies, logprobs = step.greedy(encoder_outputs, hidden, mask, max_length, *constrain.loop_arguments())
        return (replies, logprobs) if with_logprobs else replies
    batch = input_seq.size(1)
    replies = torch.full((batch, max_length), EOS_token, dtype=torch.long, device=device)
    logprobs = torch.zeros((batch, max_length), dtype=torch.double, device=device) if with_logprobs else None
    rows = torch.arange(batch, device=device)  # which reply each row of the shrinking batch fills
    token = torch.full((1, batch), SOS_token, dtype=torch.long, device=device)
    for t in range(max_length):
        logits, hidden = step(token, hidden, encoder_outputs, mask)  # (1, n, V)
        model_logprobs = torch.log_softmax(logits[0].float(), dim=1) if logprobs is not None else None  # (n, V)
        if constrain is not None:
            constrain(logits[0], rows, t)
        best = logits.max(dim=2)  # argmax of logits == of softmax; max() is 3x faster than argmax()
        token = best.indices  # (1, n)
        replies[rows, t] = token[0]
        if constrain is not None:
            constrain.advance(rows, token[0])
        if on_step is not None:
            on_step(rows, token[0], t)
        if logprobs is not None:  # the chosen token's log-probability, as beam search computes it
            logprobs[rows, t] = model_logprobs.gather(1, token.t())[:, 0].double()
        going = token[0] != EOS_token
        if not bool(going.all()):
            if not bool(going.any()):
                replies = replies[:, : t + 1]
                return (replies, logprobs[:, : t + 1]) if logprobs is not None else replies
            keep = going.nonzero().squeeze(1)
            rows, token, hidden = rows[keep], token[:, keep], hidden[:, keep]
            encoder_outputs, mask = encoder_outputs[:, keep], mask[:, keep]
    return (replies, logprobs) if logprobs is not None else replies


def _step_example(decoder: LuongAttnDecoderRNN, batch: int, src_len: int) -> tuple:
    """Random (token, hidden, encoder_outputs, mask) for one step; hidden within [-1, 1] as a GRU's is."""
    g = torch.Generator().manual_seed(batch)
    token = torch.randint(decoder.output_size, (1, batch), generator=g)
    hidden = torch.rand(decoder.n_layers, batch, decoder.hidden_size, generator=g) * 2 - 1
    encoder_outputs = torch.randn(src_len, batch, decoder.hidden_size, generator=g)
    mask = torch.ones(src_len, batch, dtype=torch.bool)
    mask[src_len - 1, 0] = False  # one padded source position
    return token, hidden, encoder_outputs, mask


@torch.no_grad()
def trace_step(decoder: LuongAttnDecoderRNN) -> Callable:
    """The CPU decoder's one-token step compiled by torch.jit.trace, or the decoder itself if that fails.

    The same numbers with a third less time per greedy step (Python's per-module overhead is
    gone). Only for greedy search: the trace follows the one-token path, so teacher-forced
    calls with a longer target must go to the decoder.
    """
    try:
        with warnings.catch_warnings():
            # expected: the trace is checked against the decoder below, and recent torch deprecates TorchScript
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.(trace|script)", category=DeprecationWarning)
            warnings.filterwarnings("ignore", message="Converting a tensor to a Python boolean",
                                    category=torch.jit.TracerWarning)
            traced = torch.jit.trace(decoder, _step_example(decoder, 3, 5), check_trace=False)
        check = _step_example(decoder, 2, 4)  # other sizes: the trace must not have fixed them
        if all(torch.equal(a, b) for a, b in zip(traced(*check), decoder(*check))):
            return traced
        logger.warning("the traced decoder step differs from the decoder; decoding without it")
    except Exception as e:  # TorchScript may be gone from a future torch
        logger.warning("cannot trace the decoder step (%s); decoding without it", type(e).__name__)
    return decoder
