"""A ready-to-talk chatbot: text in, Replies out, one batched decode per decoding mode and call.

The one path from text to reply, for the chat CLI, the benchmarks and the TorchServe handler alike:
`encode` each text (the unknown-word and length policy), then `answer` the encoded texts of a batch
together. `reply_batch` does both for callers that need no per-request isolation.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .constraints import ReplyRules
from .context import context_ids, input_length, with_context
from .decoding import SEARCHES, Candidate
from .schema import DecodeOptions, Reply
from .voc import Encoded, NoKnownWordsError, PAD_token

NO_KNOWN_WORDS = "NoKnownWords"  # Reply.error_type of a text with no known word (the wire's 422)


@dataclass(eq=False)
class Chatbot:
    """Vocabulary (word or BPE: model/tokenizer.py) + encoder + decoder in eval mode, decoding whole batches.

    step: what greedy search calls for one decoder step (default: the decoder itself; see
    seq2seq.trace_step for a faster copy on the CPU); rules: the masks every search applies (model/constraints.py).
    checkpoint: the dict it was rebuilt from (model.checkpoint.load_chatbot), for what a caller reads beside the
    weights (iteration, losses, run settings).
    """

    voc: Any  # model/voc.py's Voc or model/tokenizer.py's BpeTokenizer
    encoder: nn.Module
    decoder: nn.Module
    max_length: int
    device: torch.device
    step: Callable | None = None
    checkpoint: dict = field(default_factory=dict)
    rules: ReplyRules | None = None  # what a reply may hold (model/constraints.py), built from voc when None
    context_turns: int = 0  # earlier turns the encoder reads before the user's (model/context.py)

    def __post_init__(self):
        if self.rules is None:
            self.rules = ReplyRules.for_vocabulary(self.voc)

    @property
    def default_options(self) -> DecodeOptions:
        """Greedy, up to the model's max_length tokens."""
        return DecodeOptions(max_length=self.max_length)

    def reply(self, text: str, options: DecodeOptions | None = None, earlier_turns: Sequence[str] = ()) -> Reply:
        """The reply to one text (after earlier_turns, oldest first: see encode)."""
        return self.reply_batch([text], None if options is None else [options], [earlier_turns])[0]

    def reply_batch(self, texts: Sequence[str], options: Sequence[DecodeOptions] | None = None,
                    earlier_turns: Sequence[Sequence[str]] | None = None) -> list[Reply]:
        """One Reply per text, in order; texts with no known word get an error, the rest are answered together.
        earlier_turns: each text's conversation before it, oldest first (see encode)."""
        options = list(options) if options is not None else [self.default_options] * len(texts)
        earlier_turns = list(earlier_turns) if earlier_turns is not None else [()] * len(texts)
        replies: list[Reply | None] = [None] * len(texts)
        usable = []  # (position in batch, encoded text)
        for i, text in enumerate(texts):
            try:
                usable.append((i, self.encode(text, earlier_turns[i])))
            except NoKnownWordsError as e:
                replies[i] = Reply(unknown_words=e.unknown_words, error=str(e), error_type=NO_KNOWN_WORDS)
        answered = self.answer([e for _, e in usable], [options[i] for i, _ in usable]) if usable else []
        for (i, _), reply in zip(usable, answered):
            replies[i] = reply
        return replies

    def encode(self, text: str, earlier_turns: Sequence[str] = ()) -> Encoded:
        """One text's token ids ending in EOS (cut to max_length), with the dropped unknown words; raises
        NoKnownWordsError when a word vocabulary knows none of its words. A model trained with context reads the
        last context_turns of earlier_turns (oldest first) before it (model/context.py); others ignore them."""
        encoded = self.voc.encode(text, self.max_length)
        if not self.context_turns or not earlier_turns:
            return encoded
        return with_context(encoded, context_ids(self.voc, earlier_turns, self.context_turns, self.max_length))

    def answer(self, batch: Sequence[Encoded], options: Sequence[DecodeOptions],
               on_token: dict[int, Callable[[int], None]] | None = None) -> list[Reply]:
        """The Reply to each encoded text, decoded together (one batched search per decoding mode).

        on_token: {i: listener} calls listener(token) with each token of batch[i] as it is chosen, for requests of
        one reply decoded greedily or by sampling (model/decoding.py's `listen`); TextStream turns them into text.
        """
        found = self.generate([e.ids for e in batch], options, on_token)
        return [self.to_reply(e, o, candidates) for e, o, candidates in zip(batch, options, found)]

    def to_reply(self, encoded: Encoded, options: DecodeOptions, candidates: list[Candidate]) -> Reply:
        """A Reply from a text's candidates, best first."""
        replies = [(self.voc.decode(c.ids), c.score) for c in candidates]
        text, score = replies[0]
        return Reply(text, score, replies, encoded.unknown_words, encoded.truncated, num_replies=options.num_replies,
                     token_ids=[list(c.ids) for c in candidates], prompt_tokens=len(encoded.ids))

    def generate(self, batch: list[list[int]], options: Sequence[DecodeOptions],
                 on_token: dict[int, Callable[[int], None]] | None = None) -> list[list[Candidate]]:
        """Each encoded input's candidates, best first: requests are grouped by decoding mode (greedy, beam,
        sample) and each group is decoded in one batched search. The rows with a listener (on_token) are a group
        of their own, so that a streamed request never takes the others of its mode off the compiled greedy loop
        (which has no per-step hook); replies do not depend on the batch, so the split changes none."""
        on_token = on_token or {}
        groups: dict[tuple[str, bool], list[int]] = {}
        for i, o in enumerate(options):
            groups.setdefault((o.mode, i in on_token), []).append(i)
        results: list[list[Candidate]] = [[] for _ in batch]
        for (mode, listened), indices in groups.items():
            input_seq, lengths = self.pad([batch[i] for i in indices])
            listen = (lambda r, token, indices=indices: on_token[indices[r]](token)) if listened else None
            found = SEARCHES[mode](self.encoder, self.decoder, input_seq, lengths, [options[i] for i in indices],
                                   self.step, self.rules, listen)
            for i, candidates in zip(indices, found):
                results[i] = candidates
        return results

    def stream(self) -> TextStream:
        """A TextStream over this bot's vocabulary: one reply's text as its tokens arrive."""
        return TextStream(self.voc)

    def pad(self, batch: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """(T, B) padded ids on the model's device and (B,) lengths for a batch of encoded inputs."""
        lengths = torch.tensor([len(ids) for ids in batch], dtype=torch.long)
        # Always padded to max_length (encode never gives more): attention then sums over the same
        # number of positions alone or in any batch, so its last bits, and the reply, cannot change.
        src_len = max(input_length(self.max_length, self.context_turns), int(lengths.max()))
        input_seq = torch.full((src_len, len(batch)), PAD_token, dtype=torch.long)  # (T, B)
        for b, ids in enumerate(batch):
            input_seq[: len(ids), b] = torch.tensor(ids)
        return input_seq.to(self.device), lengths


class TextStream:
    """One reply's text as its tokens arrive: push(token) gives the text those tokens add that is final.

    A byte-level token can end inside a character: its bytes decode to a trailing U+FFFD, which is held back until
    the character's last byte arrives (ReplyRules finish every character before EOS). The pieces joined are the
    reply's text: a word reply's words are joined by spaces, a byte-level reply's bytes decoded as a whole.
    """

    def __init__(self, voc: Any):
        self.voc = voc
        self.ids: list[int] = []
        self.sent = ""

    def push(self, token: int) -> str:
        """The new final text after one more token ('' when it adds none yet, EOS included)."""
        self.ids.append(token)
        return self.advance(self.voc.decode(self.ids).rstrip("\ufffd"))

    def finish(self, text: str) -> str:
        """What is left to send of the reply's whole text (held-back characters, or all of it if nothing was
        pushed); ValueError if what was sent does not begin it (the reply was decoded anew and differs)."""
        if not text.startswith(self.sent):
            raise ValueError("the streamed text is not the beginning of the reply")
        return self.advance(text)

    def advance(self, text: str) -> str:
        """text's part after what was sent, if text extends it."""
        if len(text) <= len(self.sent) or not text.startswith(self.sent):
            return ""
        new, self.sent = text[len(self.sent):], text
        return new
