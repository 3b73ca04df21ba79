"""The turns before the one to answer, as the encoder reads them (a model trained with `context_turns` > 0).

The encoder input of a turn with context is, for each earlier turn read (oldest first), its tokens cut to
max_length - 1, then SEPARATOR; then the turn's own tokens and EOS, as without context. With no earlier turn the
input is exactly the one-turn input, so a checkpoint without context (context_turns 0, the tutorial's included)
reads what it always read. Training (train/data.py) and serving (Chatbot.encode) both build it here.

A training pair with context carries its earlier turns as one string, joined by TURN_BREAK (join_turns).
"""
from __future__ import annotations

from collections.abc import Sequence

from .voc import Encoded, NoKnownWordsError, SOS_token

# Marks the end of an earlier turn. SOS never occurs in an encoder input otherwise (it only starts the decoder), so
# every vocabulary, word or BPE, has it without a new token.
SEPARATOR = SOS_token
TURN_BREAK = "\n"  # joins a pair's earlier turns in one string; no prepared turn holds a newline
SENT_TURNS = 4  # the earlier turns a chat loop or page sends: more than any model here reads (the model picks)


def join_turns(turns: Sequence[str]) -> str:
    """Earlier turns as one string, oldest first (a newline inside a turn becomes a space)."""
    return TURN_BREAK.join(" ".join(turn.split()) for turn in turns)


def split_turns(context: str) -> list[str]:
    """join_turns' turns back, blank ones dropped."""
    return [turn for turn in context.split(TURN_BREAK) if turn.strip()]


def context_ids(voc, turns: Sequence[str], context_turns: int, max_length: int) -> list[int]:
    """The encoder's ids for the last `context_turns` of `turns` (oldest first): each turn's first max_length - 1
    known tokens, then SEPARATOR. A turn with no known word keeps its SEPARATOR: it was said, its words unknown."""
    ids: list[int] = []
    for turn in list(turns)[-context_turns:] if context_turns > 0 else []:
        try:
            ids += voc.encode(turn, max_length).ids[:-1]  # without its EOS
        except NoKnownWordsError:
            pass
        ids.append(SEPARATOR)
    return ids


def with_context(encoded: Encoded, prefix: list[int]) -> Encoded:
    """The encoded turn read after the context ids `prefix` (context_ids'), which say how many turns it has."""
    return Encoded(prefix + encoded.ids, encoded.unknown_words, encoded.truncated,
                   earlier_turns=prefix.count(SEPARATOR), context_tokens=len(prefix))


def input_length(max_length: int, context_turns: int) -> int:
    """The longest encoder input: the turn's max_length tokens plus max_length per earlier turn."""
    return max_length * (1 + context_turns)
