"""What any reply may hold, whatever the search: the rules every decoding step's logits are masked by.

Greedy, beam search and sampling all call `ReplyRules.mask` on each step's logits, so these hold by
construction, batched, in every mode:

- PAD and SOS are never generated (they are not text);
- EOS only once the reply has its request's `min_length` tokens (default 1: never an empty reply);
- byte-level BPE only: each token keeps the reply's bytes a valid UTF-8 prefix, a character is left
  unfinished only if the tokens still allowed (max_length) can finish it, EOS comes only on a character
  boundary, and the first token is not whitespace or control characters alone. So every reply decodes as
  strict UTF-8, never with U+FFFD.

A word vocabulary needs only the first two rules: two small in-place writes per step. BPE adds one table
lookup per step: a (rows, V) row of a bool table indexed by each row's UTF-8 state and remaining steps.
"""
from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from typing import Optional

import torch

from .voc import EOS_token, PAD_token, SOS_token

NEVER = (PAD_token, SOS_token)
REJECT = -1
BOUNDARY, START = 0, 8  # between characters; before the first token (a boundary where blank tokens are refused)
# UTF-8 (RFC 3629) after a lead byte: state -> (lowest, highest allowed next byte, state after it)
CONTINUATION = {1: (0x80, 0xBF, BOUNDARY), 2: (0x80, 0xBF, 1), 3: (0x80, 0xBF, 2),
                4: (0xA0, 0xBF, 1),  # after E0: no overlong 3-byte forms
                5: (0x80, 0x9F, 1),  # after ED: no surrogates
                6: (0x90, 0xBF, 2),  # after F0: no overlong 4-byte forms
                7: (0x80, 0x8F, 2)}  # after F4: nothing above U+10FFFF
STATES = 9


def lead_byte(b: int) -> int:
    """The state after byte b at a character boundary (REJECT if b cannot start a character)."""
    if b < 0x80:
        return BOUNDARY
    if 0xC2 <= b <= 0xDF:
        return 1
    if 0xE0 <= b <= 0xEF:
        return {0xE0: 4, 0xED: 5}.get(b, 2)
    if 0xF0 <= b <= 0xF4:
        return {0xF0: 6, 0xF4: 7}.get(b, 3)
    return REJECT


def utf8_step(state: int, data: bytes) -> int:
    """The UTF-8 state after `data` from `state`, or REJECT if the bytes cannot continue a valid text."""
    for b in data:
        if state in (BOUNDARY, START):
            state = lead_byte(b)
        else:
            low, high, after = CONTINUATION[state]
            state = after if low <= b <= high else REJECT
        if state == REJECT:
            return REJECT
    return state


def is_blank(data: bytes) -> bool:
    """Whether a token's whole characters are all whitespace or control characters (a reply may not start with
    one; a token that is only part of a character is not blank: what it becomes is not known yet)."""
    text = data.decode("utf-8", "ignore")
    return bool(text) and all(c.isspace() or unicodedata.category(c) in ("Cc", "Cf") for c in text)


class ReplyRules:
    """The masks of one vocabulary, built once (at load): `mask` applies them to a step's logits."""

    def __init__(self, num_words: int, token_bytes: Sequence[bytes | None] | None = None):
        """token_bytes: each token's bytes (None for PAD/SOS/EOS) for a byte-level vocabulary; None for words."""
        self.num_words = num_words
        self.never = torch.tensor(NEVER)  # (2,)
        self.after = self.allowed = None  # (S, V) the state after each token; (S, H + 1, V) which tokens may come
        self.horizon = 0
        if token_bytes is not None:
            self.utf8_tables(token_bytes)

    @classmethod
    def for_vocabulary(cls, voc) -> ReplyRules:
        """The rules of a Voc or BpeTokenizer (its `token_bytes()` when it has them)."""
        token_bytes = voc.token_bytes() if hasattr(voc, "token_bytes") else None
        return cls(voc.num_words, token_bytes)

    def utf8_tables(self, token_bytes: Sequence[bytes | None]) -> None:
        """Build `after` (STATES, V): the UTF-8 state after each token from each state; and `allowed`
        (STATES, H + 1, V) bool: may a row in this state, with r more tokens allowed after this one (capped at
        H, the most tokens any state needs to finish its character), take each token."""
        after = torch.full((STATES, len(token_bytes)), REJECT, dtype=torch.long)  # (S, V): the state after a token
        for t, data in enumerate(token_bytes):
            if data:  # specials (None) and empty tokens are never text
                for s in range(STATES):
                    after[s, t] = utf8_step(s, data)
        blank = torch.tensor([bool(d) and is_blank(d) for d in token_bytes])
        after[START, blank] = REJECT
        finish = self.steps_to_finish(after)  # (S,)
        horizon = int(finish[finish < STATES].max())
        target = finish[after.clamp(min=0)]  # (S, V): steps the state after each token needs to finish
        table = torch.stack([(after != REJECT) & (target <= r) for r in range(horizon + 1)], dim=1)
        table[BOUNDARY, :, EOS_token] = True  # EOS only between characters (and not at START)
        self.after, self.allowed, self.horizon = after, table, horizon
        self.after_rows = after.tolist()  # the same as lists: beam and sampling step one hypothesis at a time

    @staticmethod
    def steps_to_finish(after: torch.Tensor) -> torch.Tensor:
        """(S,) the fewest tokens that bring each state back to a character boundary (STATES: never)."""
        finish = torch.full((STATES,), STATES, dtype=torch.long)
        finish[BOUNDARY] = 0
        for _ in range(STATES):  # Bellman-Ford: a path is at most STATES tokens long
            reach = torch.where(after != REJECT, finish[after.clamp(min=0)] + 1, STATES).min(dim=1).values
            finish = torch.minimum(finish, reach)
        return finish

    def start(self, rows: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """(rows,) the UTF-8 state of replies with no token yet."""
        return torch.full((rows,), START, dtype=torch.long, device=device)

    def advance(self, states: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """(n,) each row's state after its token (n,); word vocabularies have one state."""
        if self.after is None:
            return torch.zeros_like(states)
        return self.after.to(states.device)[states, tokens]

    def next_state(self, state: int, token: int) -> int:
        """One hypothesis's state after `token` (0 for word vocabularies)."""
        return 0 if self.after is None else self.after_rows[state][token]

    def mask(self, logits: torch.Tensor, states: torch.Tensor | None, length: int, min_lengths: torch.Tensor | int,
             max_lengths: torch.Tensor | None, longest_min: int | None = None) -> torch.Tensor:
        """logits (n, V) with -inf (in place) at every token row i may not take as its token number `length`
        (0-based); states (n,) from `advance` and max_lengths (n,) each row's request's (read for byte-level
        vocabularies only: None will do for words); min_lengths (n,) each row's, or one int for every row (no
        per-row test); longest_min: the largest min_length, when the caller knows it (skips a device sync once
        past it)."""
        device = logits.device
        allowed = None if self.allowed is None else self.allowed.to(device)
        if isinstance(min_lengths, int):
            return mask_logits(logits, self.never.to(device), length, min_lengths, None, allowed, states, max_lengths,
                               self.horizon)
        longest = 2**31 if longest_min is None else longest_min
        return mask_logits(logits, self.never.to(device), length, longest, min_lengths, allowed, states, max_lengths,
                           self.horizon)


def mask_logits(logits: torch.Tensor, never: torch.Tensor, length: int, min_length: int,
                min_lengths: Optional[torch.Tensor], allowed: Optional[torch.Tensor], states: Optional[torch.Tensor],
                max_lengths: Optional[torch.Tensor], horizon: int, eos: int = EOS_token) -> torch.Tensor:
    """ReplyRules.mask's work on tensors alone, so TorchScript compiles it too (model/greedy_loop.py's compiled greedy
    loop): logits (n, V) masked in place for token number `length`. never: the ids no reply holds; allowed
    (S, horizon + 1, V), states (n,), max_lengths (n,): the byte-level table (all None for words); min_lengths:
    None when every row's is min_length, else each row's (n,), min_length then the largest of them. (eos: a
    default argument, as TorchScript reads no global variables.)"""
    logits.index_fill_(1, never, float("-inf"))
    if allowed is not None and states is not None and max_lengths is not None:
        remaining = (max_lengths - length - 1).clamp(0, horizon)  # tokens allowed after this one
        logits.masked_fill_(~allowed[states, remaining], float("-inf"))  # (n, V)
    if length < min_length:
        if min_lengths is None:
            logits.select(1, eos).fill_(float("-inf"))
        else:
            early = min_lengths > length
            if bool(early.any()):
                logits.select(1, eos).masked_fill_(early, float("-inf"))
    return logits


def of_rows(values: torch.Tensor | int | None, rows: torch.Tensor) -> torch.Tensor | int | None:
    """The entries of batch rows `rows` of a per-row tensor; a value shared by every row (or None) as it is."""
    return values[rows] if isinstance(values, torch.Tensor) else values


class BatchMask:
    """The rules for one batch of rows decoded in lock step (greedy search): each row's UTF-8 state and its
    request's min_length and max_length, indexed by the row's number in the batch."""

    def __init__(self, rules: ReplyRules, min_lengths: Sequence[int], max_lengths: Sequence[int],
                 device: torch.device | str = "cpu"):
        self.rules = rules
        self.longest_min = max(min_lengths)
        # One min_length for every row (the usual batch) stays a number, and a word vocabulary keeps no UTF-8
        # states or max_lengths: each step is then one fill of PAD and SOS (and of EOS before min_length)
        uniform = min(min_lengths) == self.longest_min
        self.min_lengths = self.longest_min if uniform else torch.tensor(list(min_lengths), device=device)  # (B,)
        byte_level = rules.allowed is not None
        self.states = rules.start(len(min_lengths), device) if byte_level else None  # (B,)
        self.max_lengths = torch.tensor(list(max_lengths), device=device) if byte_level else None  # (B,)

    def __call__(self, logits: torch.Tensor, rows: torch.Tensor, length: int) -> torch.Tensor:
        """logits (n, V) of batch rows `rows` (n,), masked in place for their token number `length`."""
        return self.rules.mask(logits, of_rows(self.states, rows), length, of_rows(self.min_lengths, rows),
                               of_rows(self.max_lengths, rows), self.longest_min)

    def loop_arguments(self) -> tuple:
        """(never, min_length, min_lengths, allowed, after, horizon, max_lengths): these rules as
        greedy_loop.CompiledGreedy.greedy takes them (mask_logits' arguments, and the UTF-8 state table)."""
        device = self.states.device if self.states is not None else self.rules.never.device
        uniform = isinstance(self.min_lengths, int)
        table = (lambda x: None if x is None else x.to(device))  # noqa: E731
        return (self.rules.never.to(device), self.longest_min, None if uniform else self.min_lengths,
                table(self.rules.allowed), table(self.rules.after), self.rules.horizon, self.max_lengths)

    def advance(self, rows: torch.Tensor, tokens: torch.Tensor) -> None:
        """Batch rows `rows` (n,) took `tokens` (n,)."""
        if self.states is not None:  # word vocabularies have no state to keep
            self.states[rows] = self.rules.advance(self.states[rows], tokens)
