"""Batched greedy, beam and sampling search; the options they follow are model/schema.py's DecodeOptions.

A batch of requests with mixed options is decoded in one call per mode (Chatbot.generate groups them):

- greedy (beam_size 1, no sampling option): seq2seq.greedy_decode;
- beam (beam_size > 1, or greedy with no_repeat_ngram_size): every request's beams are rows of one
  decoder call per step; hypotheses are ranked by their mean token log-probability (EOS counted);
  the greedy path rides along (in the beam that holds it, else as one more row), so the best reply
  never scores below greedy's;
- sample (temperature, top_k or top_p set): one row per reply, each with its own generator seeded
  from `seed` and the reply's number, so a seeded request gets the same replies alone or in any batch.

Every mode masks each step's logits with model/constraints.py's ReplyRules (no PAD or SOS, EOS only after
min_length tokens, byte-level replies always whole UTF-8 characters) and subtracts a request's OpenAI presence and
frequency penalties (`penalize`); scores stay the model's own log-probabilities of the chosen tokens, except beam
search's, which ranks hypotheses by their penalized log-probabilities.

Each search takes `listen`: None, or a function called as listen(request, token) with each token of a request
that asks for one reply, the step it is chosen (how the server streams a reply). Greedy search and sampling
know their tokens as they go; beam search knows them only when it ends, so it calls nobody (its caller
streams its candidates then).
"""
from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .constraints import START, BatchMask, ReplyRules
from .schema import DecodeOptions
from .seq2seq import greedy_decode, source_mask
from .voc import EOS_token, SOS_token


@dataclass(frozen=True)
class Candidate:
    """One decoded reply: token ids (up to and including EOS, if emitted) and its mean token log-probability."""

    ids: list
    score: float


def banned_tokens(tokens: list[int], n: int) -> list[int]:
    """Tokens that would repeat an n-gram already in `tokens` (the usual no_repeat_ngram rule)."""
    if n <= 0 or len(tokens) < n - 1:
        return []
    prefix = tuple(tokens[len(tokens) - n + 1:])
    return [tokens[i + n - 1] for i in range(len(tokens) - n + 1) if tuple(tokens[i:i + n - 1]) == prefix]


def ban_repeats(logprobs: torch.Tensor, rows: list[list[int]], sizes: list[int]) -> torch.Tensor:
    """logprobs (R, V) with -inf wherever row r's next token would repeat an n-gram (n = sizes[r]), unless that
    leaves the row no token at all (ReplyRules' masks are hard rules; a repeat is only unwanted)."""
    for r, (tokens, n) in enumerate(zip(rows, sizes)):
        banned = banned_tokens(tokens, n)
        if banned:
            kept = logprobs[r, banned].clone()
            logprobs[r, banned] = float("-inf")
            if not bool(torch.isfinite(logprobs[r]).any()):
                logprobs[r, banned] = kept
    return logprobs


def penalize(logits: torch.Tensor, histories: list[list[int]], options: list[DecodeOptions]) -> torch.Tensor:
    """logits (R, V) less OpenAI's penalties, in place: for row r, each token's count c in its reply so far
    (histories[r]) times options[r].frequency_penalty, plus presence_penalty where c > 0. Rows without a penalty or
    a token yet are untouched; each row's result depends on its own values only (batch invariance)."""
    rows = [r for r, (tokens, o) in enumerate(zip(histories, options)) if tokens and o.penalized]
    if not rows:
        return logits
    counts = torch.zeros(len(rows), logits.size(1), dtype=logits.dtype, device=logits.device)  # (n, V)
    for i, r in enumerate(rows):
        ids = torch.tensor(histories[r], device=logits.device)
        counts[i].index_add_(0, ids, torch.ones(len(histories[r]), dtype=logits.dtype, device=logits.device))
    frequency, presence = (torch.tensor([[getattr(options[r], name)] for r in rows], dtype=logits.dtype,
                                        device=logits.device) for name in ("frequency_penalty", "presence_penalty"))
    index = torch.tensor(rows, device=logits.device)
    logits[index] = logits[index] - (counts * frequency + (counts > 0).to(logits.dtype) * presence)
    return logits


class PenalizedMask:
    """A BatchMask that also applies `penalize` (greedy search with penalties): it keeps each row's reply so far."""

    def __init__(self, mask: BatchMask, options: list[DecodeOptions]):
        self.mask, self.options = mask, options
        self.histories: list[list[int]] = [[] for _ in options]

    def __call__(self, logits: torch.Tensor, rows: torch.Tensor, length: int) -> torch.Tensor:
        """logits (n, V) of batch rows `rows`, penalized and masked in place for their token number `length`."""
        row_list = rows.tolist()
        penalize(logits, [self.histories[r] for r in row_list], [self.options[r] for r in row_list])
        return self.mask(logits, rows, length)

    def advance(self, rows: torch.Tensor, tokens: torch.Tensor) -> None:
        """Batch rows `rows` (n,) took `tokens` (n,)."""
        for r, token in zip(rows.tolist(), tokens.tolist()):
            self.histories[r].append(token)
        self.mask.advance(rows, tokens)


def row_limits(options: list[DecodeOptions], owners: list[int]) -> tuple:
    """ReplyRules.mask's limit arguments for rows of requests `owners`: (min_lengths, max_lengths, longest_min);
    min_lengths one int when every row's is the same (the usual batch: no per-row test), else (R,) per row."""
    minimums = [options[r].min_length for r in owners]
    longest = max(minimums)
    return (longest if min(minimums) == longest else torch.tensor(minimums),
            torch.tensor([options[r].max_length for r in owners]), longest)


@dataclass
class Hyp:
    """A hypothesis being extended: generated tokens (no SOS), summed log-probability, its parent row."""

    tokens: list
    total: float
    parent: int = 0
    state: int = START  # ReplyRules' UTF-8 state after the tokens

    def mean(self) -> float:
        return self.total / len(self.tokens)


class BeamState:
    """One request's beam search: alive beams, a greedy lane, and finished candidates."""

    def __init__(self, options: DecodeOptions, rules: ReplyRules):
        self.options = options
        self.rules = rules
        self.k = options.beam_size
        self.alive = [Hyp([], 0.0)] if self.k > 1 else []  # beam_size 1: the greedy lane alone is the search
        self.lane = [Hyp([], 0.0)]  # the greedy path: one more row only while no alive beam holds it
        self.finished: list[Candidate] = []
        self.lane_at = 0  # which of this request's rows holds the lane's state (see share_lane)

    def rows(self) -> list[Hyp]:
        """The hypotheses that need a decoder row this step: the alive beams, then the lane if it has its own."""
        return self.alive + self.lane if self.lane_at == len(self.alive) else self.alive

    def share_lane(self) -> None:
        """Point lane_at at an alive beam with the lane's tokens (the usual case: the greedy path is among the
        beams, and their rows would be identical), else at the lane's own row after the beams."""
        tokens = self.lane[0].tokens if self.lane else None
        self.lane_at = next((i for i, h in enumerate(self.alive) if h.tokens == tokens), len(self.alive))

    def step_index(self) -> int:
        """How many tokens the hypotheses have."""
        return len(self.alive[0].tokens) if self.alive else len(self.lane[0].tokens)

    def advance(self, top: tuple[list, list] | None, lane: tuple[int, float] | None, vocabulary: int,
                first_row: int) -> None:
        """Extend by one token. top: the 2k best (total, flat index) of this request's beams' totals, from
        beam_tops (None without alive beams); lane: the greedy row's (token, log-probability)."""
        last = self.step_index() + 1 == self.options.max_length
        lane_row = first_row + self.lane_at
        if self.alive:
            alive = []
            for rank, (total, index) in enumerate(zip(*top)):
                row, token = divmod(index, vocabulary)
                if total == float("-inf"):
                    break
                parent = self.alive[row]
                hyp = Hyp(parent.tokens + [token], total, first_row + row, self.rules.next_state(parent.state, token))
                if token == EOS_token or last:
                    if rank < self.k:
                        self.finished.append(Candidate(hyp.tokens, hyp.mean()))
                elif len(alive) < self.k:
                    alive.append(hyp)
                if len(alive) == self.k:
                    break
            self.alive = [] if last else alive
        if self.lane:
            token, logprob = lane
            lane_hyp = self.lane[0]
            hyp = Hyp(lane_hyp.tokens + [token], lane_hyp.total + logprob, lane_row,
                      self.rules.next_state(lane_hyp.state, token))
            self.lane = [] if token == EOS_token or last else [hyp]
            if not self.lane:
                self.finished.append(Candidate(hyp.tokens, hyp.mean()))
        self.prune()
        self.share_lane()

    def prune(self) -> None:
        """Stop the beams once no alive one can beat the k-th best finished (a bound, never a guess):
        a prefix summing to s can end no higher than s / max_length, as log-probabilities are <= 0."""
        best = sorted((c.score for c in self.finished), reverse=True)
        if self.alive and len(best) >= self.k:
            if max(h.total for h in self.alive) / self.options.max_length <= best[self.k - 1]:
                self.alive = []

    def result(self) -> list[Candidate]:
        """The num_replies best distinct candidates, best first."""
        unique = {}
        for c in sorted(self.finished, key=lambda c: -c.score):
            unique.setdefault(tuple(c.ids), c)
        return list(unique.values())[: self.options.num_replies]


@torch.no_grad()
def beam_search(encoder, decoder, input_seq: torch.Tensor, input_lengths: torch.Tensor,
                options: list[DecodeOptions], step: Callable | None = None,
                rules: ReplyRules | None = None, listen: Callable | None = None) -> list[list[Candidate]]:
    """Batched beam search: (T, B) padded ids -> each request's candidates, best first.

    All requests' rows (beams and greedy lanes) go through one decoder call per step.
    """
    step = step or decoder
    rules = rules or ReplyRules(decoder.output_size)
    encoder_outputs, encoder_hidden = encoder(input_seq, input_lengths)  # (T, B, H), (2L, B, H)
    mask = source_mask(input_lengths, input_seq.size(0), input_seq.device)  # (T, B)
    states = [BeamState(o, rules) for o in options]
    rows = [(r, h) for r, s in enumerate(states) for h in s.rows()]  # (request, hypothesis), grouped by request
    hidden = encoder_hidden[: decoder.n_layers, [r for r, _ in rows]]  # (L, R, H): the tutorial's initial state
    token = torch.full((1, len(rows)), SOS_token, dtype=torch.long, device=input_seq.device)
    owners, row_inputs = None, None
    length = 0  # tokens each hypothesis has (all requests start together)
    while rows:
        if owners != [r for r, _ in rows]:  # the rows' requests changed: only then copy their encoder outputs
            owners = [r for r, _ in rows]
            row_inputs, limits = (encoder_outputs[:, owners], mask[:, owners]), row_limits(options, owners)
        logits, hidden = step(token, hidden, *row_inputs)  # (1, R, V)
        logprobs = torch.log_softmax(logits[0].float(), dim=1).cpu()  # (R, V); totals are Python floats
        utf8 = torch.tensor([h.state for _, h in rows]) if rules.allowed is not None else None  # words: none
        rules.mask(logprobs, utf8, length, *limits)
        length += 1
        ban_repeats(logprobs, [h.tokens for _, h in rows], [states[r].options.no_repeat_ngram_size for r in owners])
        penalize(logprobs, [h.tokens for _, h in rows], [states[r].options for r in owners])  # ranks by them
        firsts = request_rows(owners)
        best = logprobs.topk(min(max(2 * states[r].k for r in firsts), logprobs.size(1)), dim=1)  # (R, w): one call
        tops, lanes = beam_tops(states, firsts, best, logprobs.size(1)), lane_steps(states, firsts, best, logprobs)
        for r, first in firsts.items():
            states[r].advance(tops.get(r), lanes.get(r), logprobs.size(1), first)
        rows = [(r, h) for r, s in enumerate(states) for h in s.rows()]
        parents = torch.tensor([h.parent for _, h in rows], dtype=torch.long)
        token = torch.tensor([[h.tokens[-1] for _, h in rows]], dtype=torch.long, device=input_seq.device)
        hidden = hidden[:, parents.to(hidden.device)]
    return [s.result() for s in states]


def request_rows(owners: list[int]) -> dict[int, int]:
    """{request: its first row} for rows grouped by request."""
    firsts: dict[int, int] = {}
    for row, r in enumerate(owners):
        firsts.setdefault(r, row)
    return firsts


def beam_tops(states: list[BeamState], firsts: dict[int, int], best: tuple, vocabulary: int) -> dict[int, tuple]:
    """{request: (2k best totals, their flat indices into (alive, V))} for every request with alive beams.

    best: every row's top-w log-probabilities (values, indices: (R, w) each; w >= 2k unless V < 2k). The 2k best
    of a request come from its beams' own 2k best tokens: one top-k per group of requests with as many alive
    beams and the same k ranks those, not every beam x token."""
    groups: dict[tuple, list[int]] = {}
    for r in firsts:
        if states[r].alive:
            groups.setdefault((len(states[r].alive), states[r].k), []).append(r)
    tops = {}
    best_values, best_indices = best
    for (alive, k), members in groups.items():
        width = min(2 * k, best_values.size(1))
        rows = torch.tensor([firsts[r] + i for r in members for i in range(alive)])
        values = best_values.index_select(0, rows)[:, :width]  # (G*a, width)
        totals = torch.tensor([h.total for r in members for h in states[r].alive], dtype=torch.double)
        flat = (totals.unsqueeze(1) + values.double()).view(len(members), alive * width)  # (G, a*width)
        top = flat.topk(min(2 * k, flat.size(1)), dim=1)
        beam = top.indices // width  # which alive beam, and its token: a flat index into (alive, V)
        tokens = best_indices.index_select(0, rows)[:, :width].reshape(len(members), -1).gather(1, top.indices)
        for r, totals_r, indices in zip(members, top.values.tolist(), (beam * vocabulary + tokens).tolist()):
            tops[r] = (totals_r, indices)
    return tops


def lane_steps(states: list[BeamState], firsts: dict[int, int], best: tuple,
               logprobs: torch.Tensor) -> dict[int, tuple]:
    """{request: (token, log-probability)} of every greedy lane's next token: its row's first of `best` (top-w,
    w >= 2), or, where the first two tie, max's choice, which greedy search makes."""
    firsts_two, tokens = best[0][:, :2].tolist(), best[1][:, 0].tolist()
    steps = {}
    for r in firsts:
        if states[r].lane:
            row = firsts[r] + states[r].lane_at
            steps[r] = (tokens[row], firsts_two[row][0])
            if firsts_two[row][0] == firsts_two[row][1]:
                value, token = logprobs[row].max(dim=0)
                steps[r] = (int(token), float(value))
    return steps


def row_seed(seed: int, reply: int) -> int:
    """The seed of reply number `reply`'s generator: replies of one request draw independent streams."""
    return (seed + 0x9E3779B97F4A7C15 * reply) % 2**63


def temperatures(options: list[DecodeOptions]) -> torch.Tensor:
    """(R, 1) each row's temperature (1 when unset), what `temperature_probs` divides by."""
    return torch.tensor([[o.temperature or 1.0] for o in options])


def temperature_probs(logits: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """Probabilities (R, V) of each row's logits divided by its temperature (R, 1) (`temperatures`)."""
    return (logits / temperature.to(logits.dtype)).softmax(dim=1)


def filter_limits(options: list[DecodeOptions]) -> tuple[torch.Tensor, torch.Tensor]:
    """(top_k, top_p) per row as (R,) tensors (top_p float64), the largest values meaning "no limit"."""
    top_k = torch.tensor([o.top_k if o.top_k is not None else 2**62 for o in options])
    top_p = torch.tensor([o.top_p if o.top_p is not None else 2.0 for o in options], dtype=torch.double)
    return top_k, top_p


def refused(probs: torch.Tensor, choices: torch.Tensor, rows: list[int], options: list[DecodeOptions]) -> list[int]:
    """The rows (of `rows`) whose chosen token is outside their kept tokens (top_k / top_p). The rule, the same
    as ranking by probability: a token is kept when fewer than top_k tokens are likelier and the likelier ones
    hold less than top_p (so the likeliest is always kept, and the nucleus is the smallest set that reaches
    top_p). Most draws are settled by surely_kept from their own probability; the others cost one pass over
    their rows, no sort: what makes sampling cheap."""
    chosen = probs.gather(1, choices.unsqueeze(1))[:, 0].tolist()  # (R,) every row's: one op, not a per-row index
    looked = [r for r in rows if not surely_kept(chosen[r], options[r])]
    if not looked:
        return []
    q = torch.tensor([[chosen[r]] for r in looked], dtype=torch.double)  # (n, 1), float32 values held exactly
    # How far each likelier token's probability is above the chosen one's, in float64: exact differences of
    # float32 values, so the boundary does not hang on rounding; the likelier mass is their sum + q * count.
    above = (probs.index_select(0, torch.tensor(looked)).double() - q).clamp_min_(0)  # (n, V)
    counts = above.sign().sum(dim=1).tolist()  # how many are likelier (a third of count_nonzero's time)
    masses = above.sum(dim=1).tolist()
    return [r for r, c, m, p in zip(looked, counts, masses, q[:, 0].tolist())
            if not within_limits(c, m + p * c, options[r])]


def within_limits(likelier: int, mass: float, option: DecodeOptions) -> bool:
    """Whether a token with `likelier` likelier tokens holding `mass` is among the option's kept tokens."""
    return (option.top_k is None or likelier < option.top_k) and (option.top_p is None or mass < option.top_p)


SUM_SLACK = 1e-5  # how far a float32 softmax row may sum above 1


def surely_kept(chosen: float, option: DecodeOptions) -> bool:
    """True when `refused` would keep a token of probability `chosen` whatever the other tokens hold: the
    likelier ones hold at most 1 - p of the mass and number fewer than (1 - p) / p, so p > 1 - top_p and
    p * (top_k + 1) > 1 settle it (most draws at the usual top_p). False: look. Plain floats: a handful of
    rows costs less than a tensor operation."""
    top_p = 2.0 if option.top_p is None else option.top_p
    top_k = float("inf") if option.top_k is None else option.top_k
    return chosen > 1 - top_p + SUM_SLACK and chosen * (top_k + 1) > 1 + SUM_SLACK


def restrict(probs: torch.Tensor, options: list[DecodeOptions]) -> torch.Tensor:
    """probs (R, V) with 0 for every token outside its row's top_k / top_p (refused's rule, for every token
    at once, by a sort): the exact distribution `pick` samples from; pick itself rarely needs it."""
    ascending, _ = probs.sort(dim=1)
    below = torch.cat((ascending.new_zeros(probs.size(0), 1, dtype=torch.double),
                       ascending.double().cumsum(dim=1)), dim=1)  # below[:, j]: mass of the j least likely
    at_most = torch.searchsorted(ascending, probs, right=True)  # (R, V): how many tokens are no likelier
    likelier_mass = below[:, -1:] - below.gather(1, at_most)
    top_k, top_p = filter_limits(options)
    kept = (probs.size(1) - at_most < top_k.unsqueeze(1)) & (likelier_mass < top_p.unsqueeze(1))
    return probs * kept


@dataclass
class SampleRow:
    """One reply being sampled: its request, uniform-number generator and tokens so far."""

    request: int
    generator: random.Random
    tokens: list
    total: float = 0.0
    state: int = START  # ReplyRules' UTF-8 state after the tokens


def inverse_cdf(cdf: torch.Tensor, generators: list[random.Random]) -> torch.Tensor:
    """(R,) token ids: one uniform number of each row's generator through its float64 cumulative sum (R, V).

    Python's Mersenne Twister, not torch.multinomial: its draws for a seed differ between torch versions
    (2.4 in the serving image, 2.13 here); these do not.
    """
    targets = torch.tensor([[g.random()] for g in generators], dtype=torch.double) * cdf[:, -1:]
    return torch.searchsorted(cdf, targets, right=True).clamp(max=cdf.size(1) - 1)[:, 0]


def draw(probs: torch.Tensor, generators: list[random.Random]) -> torch.Tensor:
    """(R,) token ids: one per row from probabilities (R, V), by inverse CDF in vocabulary order."""
    return inverse_cdf(probs.cumsum(dim=1, dtype=torch.double), generators)


REJECTION_TRIES = 8  # draws per row and step before a row's kept tokens are found by sorting instead


def pick(probs: torch.Tensor, options: list[DecodeOptions], generators: list[random.Random]) -> list[int]:
    """One token per row from its probabilities restricted to its top_k / top_p tokens (nucleus's distribution).

    By rejection: a token drawn from the whole row is kept if not `refused` (most are settled by surely_kept
    without a pass over the vocabulary), else the row draws again; a kept draw then follows exactly the
    restricted distribution. A nucleus holds at least top_p of the mass, so with top_p 0.9 nine draws in ten
    are kept at once; a row still refused after REJECTION_TRIES draws (a small top_k over a flat
    distribution) draws from `restrict`'s exact distribution. This replaced ranking a top-256 per step
    (~1 ms for 8 rows of 7,826 words, more than the decoder step itself).
    """
    cdf = probs.cumsum(dim=1, dtype=torch.double)  # (R, V)
    choices = inverse_cdf(cdf, generators)
    pending = [r for r, o in enumerate(options) if o.top_k is not None or o.top_p is not None]
    for attempt in range(REJECTION_TRIES + 1):
        pending = refused(probs, choices, pending, options)
        if not pending or attempt == REJECTION_TRIES:
            break
        choices[pending] = inverse_cdf(cdf[pending], [generators[r] for r in pending])
    if pending:
        choices[pending] = draw(restrict(probs[pending], [options[r] for r in pending]),
                                [generators[r] for r in pending])
    return choices.tolist()


def sample_constants(rows: list[SampleRow], options: list[DecodeOptions]) -> tuple:
    """(each row's options, ReplyRules.mask's limits, temperatures (R, 1), no_repeat_ngram sizes) of `rows`:
    what sampling needs each step and what changes only when rows leave."""
    owners = [row.request for row in rows]
    row_options = [options[r] for r in owners]
    return row_options, row_limits(options, owners), temperatures(row_options), \
        [o.no_repeat_ngram_size for o in row_options]


@torch.no_grad()
def sample(encoder, decoder, input_seq: torch.Tensor, input_lengths: torch.Tensor,
           options: list[DecodeOptions], step: Callable | None = None,
           rules: ReplyRules | None = None, listen: Callable | None = None) -> list[list[Candidate]]:
    """Batched sampling: num_replies rows per request, each drawing from its own seeded generator.

    A row's draws depend only on its own logits and generator, so a seeded request samples the
    same replies alone or beside any others (with batch-invariant logits: int8 weights, padded input).
    Scores are the mean log-probability under the model itself (no temperature or filtering).
    """
    step = step or decoder
    rules = rules or ReplyRules(decoder.output_size)
    encoder_outputs, encoder_hidden = encoder(input_seq, input_lengths)
    mask = source_mask(input_lengths, input_seq.size(0), input_seq.device)
    rows = []
    for r, o in enumerate(options):
        seed = o.seed if o.seed is not None else random.SystemRandom().randrange(2**63)
        rows += [SampleRow(r, random.Random(row_seed(seed, j)), []) for j in range(o.num_replies)]
    results: list[list[Candidate]] = [[] for _ in options]
    owners = [row.request for row in rows]
    hidden = encoder_hidden[: decoder.n_layers, owners]
    encoder_outputs, mask = encoder_outputs[:, owners], mask[:, owners]  # one row per reply; shrunk as they end
    token = torch.full((1, len(rows)), SOS_token, dtype=torch.long, device=input_seq.device)
    constants = None  # what each row's request sets, rebuilt only when rows leave (see sample_constants)
    while rows:
        constants = constants or sample_constants(rows, options)
        row_options, limits, temperature, sizes = constants
        logits, hidden = step(token, hidden, encoder_outputs, mask)  # (1, R, V)
        logits = logits[0].float().cpu()
        logprobs = torch.log_softmax(logits, 1)  # the model's own (log_softmax: half logsumexp's time here)
        # masked and banned tokens are never drawn (the scores keep the model's own normaliser)
        states = torch.tensor([row.state for row in rows]) if rules.allowed is not None else None  # words: none
        logits = rules.mask(logits.clone(), states, len(rows[0].tokens), *limits)
        if any(sizes):
            logits = ban_repeats(logits, [row.tokens for row in rows], sizes)
        penalize(logits, [row.tokens for row in rows], row_options)  # on the logits, before the temperature
        choices = pick(temperature_probs(logits, temperature), row_options, [row.generator for row in rows])
        chosen = logprobs.gather(1, torch.tensor(choices).unsqueeze(1))[:, 0].tolist()
        going = []
        for i, (row, choice, logprob) in enumerate(zip(rows, choices, chosen)):
            row.tokens.append(choice)
            row.total += logprob
            row.state = rules.next_state(row.state, choice)
            if listen is not None and options[row.request].num_replies == 1:
                listen(row.request, choice)
            if choice == EOS_token or len(row.tokens) == options[row.request].max_length:
                results[row.request].append(Candidate(row.tokens, row.total / len(row.tokens)))
            else:
                going.append(i)
        if len(going) < len(rows):  # only then: every re-index copies the rows
            rows, constants = [rows[i] for i in going], None
            hidden, encoder_outputs, mask = hidden[:, going], encoder_outputs[:, going], mask[:, going]
        token = torch.tensor([[row.tokens[-1] for row in rows]], dtype=torch.long, device=input_seq.device)
    return [sorted(c, key=lambda c: -c.score) for c in results]


@torch.no_grad()
def greedy(encoder, decoder, input_seq: torch.Tensor, input_lengths: torch.Tensor,
           options: list[DecodeOptions], step: Callable | None = None,
           rules: ReplyRules | None = None, listen: Callable | None = None) -> list[list[Candidate]]:
    """seq2seq.greedy_decode for the batch under ReplyRules, each reply cut to its own max_length."""
    longest = max(o.max_length for o in options)
    constrain = BatchMask(rules or ReplyRules(decoder.output_size), [o.min_length for o in options],
                          [o.max_length for o in options], input_seq.device)
    if any(o.penalized for o in options):
        constrain = PenalizedMask(constrain, options)
    on_step = None if listen is None else step_listener(listen, options)
    ids, logprobs = greedy_decode(encoder, decoder, input_seq, input_lengths, longest, step, with_logprobs=True,
                                  constrain=constrain, on_step=on_step)
    results = []
    for row, lp, o in zip(ids.tolist(), logprobs.tolist(), options):
        length = min(o.max_length, row.index(EOS_token) + 1 if EOS_token in row else len(row))
        results.append([Candidate(row[:length], sum(lp[:length]) / length)])
    return results


def step_listener(listen: Callable, options: list[DecodeOptions]) -> Callable:
    """greedy_decode's on_step(rows, tokens, t) as listen(request, token) calls, none past a request's own
    max_length (the batch decodes up to the longest)."""
    def on_step(rows: torch.Tensor, tokens: torch.Tensor, t: int) -> None:
        for r, token in zip(rows.tolist(), tokens.tolist()):
            if t < options[r].max_length:
                listen(r, token)
    return on_step


SEARCHES = {"greedy": greedy, "beam": beam_search, "sample": sample}
