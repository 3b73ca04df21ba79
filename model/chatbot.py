"""A ready-to-talk chatbot: text in, replies out, one batched greedy decode per call."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from .seq2seq import greedy_decode
from .voc import NoKnownWordsError, PAD_token, Voc, decode, encode


@dataclass
class Reply:
    """The bot's answer to one input: `text`, or `error` when the input could not be used."""

    text: str = ""
    unknown_words: list[str] = field(default_factory=list)
    error: str | None = None


class Chatbot:
    """Vocabulary + encoder + decoder in eval mode, decoding whole batches greedily.

    step: what greedy search calls for one decoder step (default: the decoder itself; see
    seq2seq.trace_step for a faster copy on the CPU).
    """

    def __init__(self, voc: Voc, encoder: nn.Module, decoder: nn.Module, max_length: int,
                 device: torch.device, step: Callable | None = None):
        self.voc = voc
        self.encoder = encoder
        self.decoder = decoder
        self.max_length = max_length
        self.device = device
        self.step = step

    def reply(self, text: str) -> Reply:
        """The reply to one text."""
        return self.reply_batch([text])[0]

    def reply_batch(self, texts: Sequence[str]) -> list[Reply]:
        """One Reply per text, in order; texts with no known word get an error, the rest are decoded together."""
        replies = [Reply() for _ in texts]
        encoded = []  # (position in batch, token ids)
        for i, text in enumerate(texts):
            try:
                ids, replies[i].unknown_words = self.encode(text)
                encoded.append((i, ids))
            except NoKnownWordsError as e:
                replies[i].error = str(e)
                replies[i].unknown_words = e.unknown_words
        if encoded:
            for (i, _), text in zip(encoded, self.reply_texts([ids for _, ids in encoded])):
                replies[i].text = text
        return replies

    def encode(self, text: str) -> tuple[list[int], list[str]]:
        """(token ids ending in EOS, dropped unknown words) for one text; raises NoKnownWordsError."""
        return encode(self.voc, text, self.max_length)

    def reply_texts(self, batch: list[list[int]]) -> list[str]:
        """The reply text for each encoded input, all decoded together."""
        return [decode(self.voc, row) for row in self.decode_ids(batch)]

    def decode_ids(self, batch: list[list[int]]) -> list[list[int]]:
        """Greedy token ids for a batch of encoded inputs (each ending in EOS)."""
        lengths = torch.tensor([len(ids) for ids in batch], dtype=torch.long)
        # Always padded to max_length (encode never gives more): attention then sums over the same
        # number of positions alone or in any batch, so its last bits, and the reply, cannot change.
        src_len = max(self.max_length, int(lengths.max()))
        input_seq = torch.full((src_len, len(batch)), PAD_token, dtype=torch.long)  # (T, B)
        for b, ids in enumerate(batch):
            input_seq[: len(ids), b] = torch.tensor(ids)
        out = greedy_decode(self.encoder, self.decoder, input_seq.to(self.device), lengths, self.max_length,
                            self.step)
        return out.tolist()

