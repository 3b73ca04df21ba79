"""A ready-to-talk chatbot: text in, replies out, one batched decode per decoding mode and call."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .decoding import SEARCHES, Candidate, DecodeOptions
from .voc import Encoded, NoKnownWordsError, PAD_token


@dataclass
class Reply:
    """The bot's answer to one input: `text`, or `error` when the input could not be used.

    score: the reply's mean token log-probability; replies: every (text, score) asked for
    (num_replies), best first, the first being (text, score); truncated: the input was cut to the
    model's max_length tokens.
    """

    text: str = ""
    unknown_words: list[str] = field(default_factory=list)
    truncated: bool = False
    error: str | None = None
    score: float | None = None
    replies: list[tuple[str, float]] = field(default_factory=list)


@dataclass(eq=False)
class Chatbot:
    """Vocabulary (word or BPE: model/tokenizer.py) + encoder + decoder in eval mode, decoding whole batches.

    step: what greedy search calls for one decoder step (default: the decoder itself; see
    seq2seq.trace_step for a faster copy on the CPU).
    """

    voc: Any  # model/voc.py's Voc or model/tokenizer.py's BpeTokenizer
    encoder: nn.Module
    decoder: nn.Module
    max_length: int
    device: torch.device
    step: Callable | None = None

    @property
    def default_options(self) -> DecodeOptions:
        """Greedy, up to the model's max_length tokens."""
        return DecodeOptions(max_length=self.max_length)

    def reply(self, text: str, options: DecodeOptions | None = None) -> Reply:
        """The reply to one text."""
        return self.reply_batch([text], None if options is None else [options])[0]

    def reply_batch(self, texts: Sequence[str], options: Sequence[DecodeOptions] | None = None) -> list[Reply]:
        """One Reply per text, in order; texts with no known word get an error, the rest are decoded together."""
        options = list(options) if options is not None else [self.default_options] * len(texts)
        replies = [Reply() for _ in texts]
        encoded = []  # (position in batch, token ids)
        for i, text in enumerate(texts):
            try:
                found = self.encode(text)
                replies[i].unknown_words, replies[i].truncated = found.unknown_words, found.truncated
                encoded.append((i, found.ids))
            except NoKnownWordsError as e:
                replies[i].error = str(e)
                replies[i].unknown_words = e.unknown_words
        if encoded:
            found = self.generate([ids for _, ids in encoded], [options[i] for i, _ in encoded])
            for (i, _), candidates in zip(encoded, found):
                replies[i].replies = [(self.text(c), c.score) for c in candidates]
                replies[i].text, replies[i].score = replies[i].replies[0]
        return replies

    def encode(self, text: str) -> Encoded:
        """One text's token ids ending in EOS (cut to max_length), with the dropped unknown words; raises
        NoKnownWordsError when a word vocabulary knows none of its words."""
        return self.voc.encode(text, self.max_length)

    def text(self, candidate: Candidate) -> str:
        """A candidate's reply text."""
        return self.voc.decode(candidate.ids)

    def generate(self, batch: list[list[int]], options: Sequence[DecodeOptions]) -> list[list[Candidate]]:
        """Each encoded input's candidates, best first: requests are grouped by decoding mode (greedy, beam,
        sample) and each group is decoded in one batched search."""
        groups: dict[str, list[int]] = {}
        for i, o in enumerate(options):
            groups.setdefault(o.mode, []).append(i)
        results: list[list[Candidate]] = [[] for _ in batch]
        for mode, indices in groups.items():
            input_seq, lengths = self.pad([batch[i] for i in indices])
            found = SEARCHES[mode](self.encoder, self.decoder, input_seq, lengths, [options[i] for i in indices],
                                   self.step)
            for i, candidates in zip(indices, found):
                results[i] = candidates
        return results

    def pad(self, batch: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """(T, B) padded ids on the model's device and (B,) lengths for a batch of encoded inputs."""
        lengths = torch.tensor([len(ids) for ids in batch], dtype=torch.long)
        # Always padded to max_length (encode never gives more): attention then sums over the same
        # number of positions alone or in any batch, so its last bits, and the reply, cannot change.
        src_len = max(self.max_length, int(lengths.max()))
        input_seq = torch.full((src_len, len(batch)), PAD_token, dtype=torch.long)  # (T, B)
        for b, ids in enumerate(batch):
            input_seq[: len(ids), b] = torch.tensor(ids)
        return input_seq.to(self.device), lengths
