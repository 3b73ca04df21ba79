"""Decoding controls: beam search against exhaustive search, greedy and sampling invariants, option checks.

The references are independent of model/decoding.py: exhaustive search scores every sequence by
running the decoder one teacher-forced step at a time.
"""
from __future__ import annotations

import functools
import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from model import Voc, build_model, default_config, load_chatbot
from model.decoding import beam_search, greedy, sample
from model.schema import OPTIONS, DecodeOptions, InvalidOption, options_from_config, parse_options
from model.seq2seq import greedy_decode
from model.voc import EOS_token, PAD_token, SOS_token

WORDS = "hello there how are you i am fine what is your name".split()
LIMITS = {"max_length": 20, "beam_size": 10, "num_replies": 10}


@functools.cache
def tiny_bot(words=tuple(WORDS), hidden: int = 16, seed: int = 0, quantize=False, scale: float = 3.0):
    """A random-weight chatbot over `words`; larger weights make replies depend on the input."""
    voc = Voc("tiny")
    for w in words:
        voc.add_word(w)
    config = default_config(hidden_size=hidden, encoder_n_layers=1, decoder_n_layers=1, dropout=0.0)
    torch.manual_seed(seed)
    encoder, decoder = build_model(config, voc.num_words)
    with torch.no_grad():
        for p in [*encoder.parameters(), *decoder.parameters()]:
            p.mul_(scale)
    return load_chatbot({"format": "seq2seq-chatbot/1", "config": config, "voc": voc.to_dict(),
                            "encoder": encoder.state_dict(), "decoder": decoder.state_dict()}, quantize=quantize)


def run(search, bot, texts, options):
    input_seq, lengths = bot.pad([bot.encode(t).ids for t in texts])
    return search(bot.encoder, bot.decoder, input_seq, lengths, options, bot.step, bot.rules)


@torch.no_grad()
def sequence_score(bot, text: str, tokens: list[int]) -> float:
    """Mean log-probability of `tokens` as the reply to `text`, one decoder step at a time."""
    input_seq, lengths = bot.pad([bot.encode(text).ids])
    outputs, hidden = bot.encoder(input_seq, lengths)
    hidden = hidden[: bot.decoder.n_layers]
    mask = torch.arange(input_seq.size(0)).unsqueeze(1) < lengths.unsqueeze(0)
    previous, total = SOS_token, 0.0
    for token in tokens:
        logits, hidden = bot.decoder(torch.tensor([[previous]]), hidden, outputs, mask)
        total += float(torch.log_softmax(logits[0, 0].double(), 0)[token])
        previous = token
    return total / len(tokens)


def exhaustive_best(bot, text: str, max_length: int) -> tuple[list[int], float]:
    """The best-scoring reply over every sequence of at most max_length tokens that ends at its first EOS
    (or runs to max_length), a reply being text: words only (no PAD or SOS), at least one before EOS."""
    words = [t for t in range(bot.voc.num_words) if t not in (PAD_token, SOS_token, EOS_token)]
    best = ([], -math.inf)
    for length in range(1, max_length + 1):
        for body in itertools.product(words, repeat=length - 1):
            for last in [*words, EOS_token]:
                if last != EOS_token and length < max_length:
                    continue  # not finished: it goes on in a longer sequence
                if last == EOS_token and length == 1:
                    continue  # an empty reply
                tokens = [*body, last]
                score = sequence_score(bot, text, tokens)
                if score > best[1]:
                    best = (tokens, score)
    return best


# ---------------------------------------------------------------- beam search


@pytest.mark.parametrize("max_length, beam", [(2, None), (3, "square")])
def test_beam_search_as_wide_as_the_sequences_finds_the_exhaustive_best(max_length, beam):
    """Width V at length 2 (and V^2 at length 3) keeps every prefix: nothing may be pruned wrongly."""
    bot = tiny_bot(words=("yes", "no"), hidden=8, seed=4)
    width = bot.voc.num_words if beam is None else bot.voc.num_words ** 2
    for text in ("yes", "no", "yes no", "no no yes"):
        [[best, *_]] = run(beam_search, bot, [text], [DecodeOptions(max_length=max_length, beam_size=width)])
        tokens, score = exhaustive_best(bot, text, max_length)
        assert best.ids == tokens, text
        assert best.score == pytest.approx(score, abs=1e-6)


def test_beam_size_1_is_greedy():
    bot = tiny_bot(seed=1)
    texts = [" ".join(WORDS[i:i + 3]) for i in range(0, len(WORDS) - 2)]
    input_seq, lengths = bot.pad([bot.encode(t).ids for t in texts])
    expected = greedy_decode(bot.encoder, bot.decoder, input_seq, lengths, bot.max_length).tolist()
    found = run(beam_search, bot, texts, [DecodeOptions(beam_size=1)] * len(texts))
    assert [c[0].ids for c in found] == [row[: row.index(EOS_token) + 1] if EOS_token in row else row
                                         for row in expected]
    assert len({tuple(c[0].ids) for c in found}) > 1


PROMPTS = st.lists(st.sampled_from(WORDS), min_size=1, max_size=6).map(" ".join)


@given(texts=st.lists(PROMPTS, min_size=1, max_size=4), beam=st.integers(2, 6), seed=st.integers(0, 3))
@settings(max_examples=40, deadline=None, database=None)
def test_the_best_beam_never_scores_below_greedy(texts, beam, seed):
    bot = tiny_bot(seed=seed, quantize="int8")  # batch-invariant logits: the comparison is exact
    greedy_scores = [c[0].score for c in run(greedy, bot, texts, [DecodeOptions()] * len(texts))]
    beams = run(beam_search, bot, texts, [DecodeOptions(beam_size=beam, num_replies=beam)] * len(texts))
    for text, greedy_score, candidates in zip(texts, greedy_scores, beams):
        assert candidates[0].score >= greedy_score - 1e-12, text
        assert [c.score for c in candidates] == sorted((c.score for c in candidates), reverse=True)
        assert len({tuple(c.ids) for c in candidates}) == len(candidates)  # distinct replies


def test_a_beam_request_decodes_the_same_alone_and_beside_others():
    bot = tiny_bot(seed=2, quantize="int8")
    texts = ["hello there", "what is your name", "i am fine", "how are you"]
    options = [DecodeOptions(beam_size=5, num_replies=3), DecodeOptions(beam_size=2), DecodeOptions(beam_size=7),
               DecodeOptions(beam_size=3, no_repeat_ngram_size=2)]
    together = run(beam_search, bot, texts, options)
    assert together == [run(beam_search, bot, [t], [o])[0] for t, o in zip(texts, options)]


def test_the_greedy_lane_shares_the_row_of_the_beam_that_holds_it():
    """The lane costs a decoder row only once it leaves the beams: the first step (beam and lane both just SOS)
    decodes one row per request, and no step more than beam_size + 1."""
    bot = tiny_bot(seed=1)
    texts, beam = ["hello there", "what is your name", "i am fine"], 3
    rows_per_step = []

    def counting_step(token, *rest):
        rows_per_step.append(token.size(1))
        return bot.step(token, *rest)

    input_seq, lengths = bot.pad([bot.encode(t).ids for t in texts])
    found = beam_search(bot.encoder, bot.decoder, input_seq, lengths, [DecodeOptions(beam_size=beam)] * 3,
                        counting_step)
    assert rows_per_step[0] == len(texts)  # was 2 per request: the beam's SOS row and the lane's
    assert max(rows_per_step) <= len(texts) * (beam + 1)
    assert found == run(beam_search, bot, texts, [DecodeOptions(beam_size=beam)] * 3)


# ---------------------------------------------------------------- sampling


@pytest.mark.parametrize("seeded", [DecodeOptions(temperature=1.5, top_k=8, seed=1234, num_replies=3),
                                    DecodeOptions(temperature=1.5, seed=99, num_replies=2)])
def test_a_seeded_sample_is_the_same_alone_and_in_a_mixed_batch(seeded):
    bot = tiny_bot(seed=5, quantize="int8")
    alone = bot.reply("hello there", seeded)
    mixed = bot.reply_batch(["i am fine", "hello there", "what is your name", "hello there", "i am fine"],
                            [DecodeOptions(beam_size=4), seeded, DecodeOptions(top_p=0.9, seed=7), DecodeOptions(),
                             DecodeOptions(temperature=0.7, seed=3)])
    assert mixed[1] == alone
    assert bot.reply("hello there", seeded) == alone
    other_seed = [bot.reply("hello there", DecodeOptions(temperature=1.5, top_k=8, seed=s)).text for s in range(8)]
    assert len(set(other_seed)) > 1, "sampling that ignores its seed proves nothing"


def test_top_k_1_samples_the_greedy_reply():
    bot = tiny_bot(seed=6)
    texts = ["hello there", "what is your name", "i am fine"]
    assert [r.text for r in bot.reply_batch(texts, [DecodeOptions(top_k=1, seed=s) for s in range(3)])] == \
        [r.text for r in bot.reply_batch(texts)]


def test_top_k_and_top_p_keep_only_their_tokens():
    from model.decoding import restrict
    probs = restrict(torch.tensor([[0.15, 0.5, 0.05, 0.3]] * 3),
                     [DecodeOptions(top_p=0.7), DecodeOptions(top_p=0.45), DecodeOptions(top_k=3)])
    kept = [(probs[r] > 0).nonzero()[:, 0].tolist() for r in range(3)]
    assert kept == [[1, 3], [1], [0, 1, 3]]  # 0.5 < 0.7 <= 0.5 + 0.3; 0.5 reaches 0.45; the three likeliest


# ---------------------------------------------------------------- no_repeat_ngram_size


def repeats(tokens: list[int], n: int) -> bool:
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    return len(grams) != len(set(grams))


@given(text=PROMPTS, n=st.integers(1, 3), mode=st.sampled_from(["greedy", "beam", "sample"]), seed=st.integers(0, 3))
@settings(max_examples=80, deadline=None, database=None)
def test_no_repeat_ngram_size_is_never_violated(text, n, mode, seed):
    bot = tiny_bot(seed=seed, scale=1.0)  # small weights: replies that would repeat themselves
    options = {"greedy": DecodeOptions(no_repeat_ngram_size=n, max_length=12),
               "beam": DecodeOptions(beam_size=4, num_replies=4, no_repeat_ngram_size=n, max_length=12),
               "sample": DecodeOptions(temperature=1.0, seed=seed, num_replies=3, no_repeat_ngram_size=n,
                                       max_length=12)}[mode]
    for candidate in bot.generate([bot.encode(text).ids], [options])[0]:
        assert not repeats(candidate.ids, n), (mode, candidate.ids)


def test_without_the_option_the_same_model_does_repeat():
    """The ngram test above can fail: unconstrained, these replies repeat themselves."""
    bot = tiny_bot(seed=0, scale=1.0)
    replies = [bot.generate([bot.encode(" ".join(WORDS[i:i + 2])).ids], [DecodeOptions(max_length=12)])[0][0].ids
               for i in range(len(WORDS) - 1)]
    assert any(repeats(r, 2) for r in replies)


# ---------------------------------------------------------------- options


@pytest.mark.parametrize("values, field", [
    ({"beam_size": "5"}, "beam_size"), ({"beam_size": True}, "beam_size"), ({"beam_size": 2.5}, "beam_size"),
    ({"beam_size": 0}, "beam_size"), ({"beam_size": 11}, "beam_size"), ({"max_length": 21}, "max_length"),
    ({"temperature": 0}, "temperature"), ({"temperature": -1.0}, "temperature"), ({"top_p": 1.5}, "top_p"),
    ({"top_p": 0}, "top_p"), ({"top_k": 0}, "top_k"), ({"seed": -1}, "seed"), ({"seed": 2**64}, "seed"),
    ({"no_repeat_ngram_size": -1}, "no_repeat_ngram_size"), ({"num_replies": 3}, "num_replies"),
    ({"beam_size": 3, "num_replies": 4}, "num_replies"), ({"beam_size": 3, "temperature": 0.7}, "beam_size"),
    ({"temperature": float("nan")}, "temperature"), ({"beams": 3}, "beams"), ({"num_replies": 11, "top_k": 5},
                                                                                "num_replies"),
])
def test_an_invalid_option_names_its_field_and_range(values, field):
    with pytest.raises(InvalidOption) as error:
        parse_options(values, DecodeOptions(), LIMITS)
    assert error.value.field == field and str(error.value).startswith(f"{field}: ")


def test_valid_options_and_their_modes():
    assert parse_options({}, DecodeOptions(), LIMITS).mode == "greedy"
    assert parse_options({"beam_size": 5, "num_replies": 5}, DecodeOptions(), LIMITS).mode == "beam"
    assert parse_options({"no_repeat_ngram_size": 2}, DecodeOptions(), LIMITS).mode == "beam"
    assert parse_options({"top_p": 0.9, "num_replies": 4}, DecodeOptions(), LIMITS).mode == "sample"
    assert parse_options({"temperature": 1}, DecodeOptions(), LIMITS).temperature == 1.0


def test_the_model_config_gives_defaults_and_limits():
    most = {"max_length": 20, "beam_size": 4, "num_replies": 3}
    defaults, limits = options_from_config({"beam_size": 2, "limits": most, "quantize": "int8"}, 10)
    assert (defaults.beam_size, defaults.max_length, limits) == (2, 10, most)
    with pytest.raises(InvalidOption, match="beam_size"):
        options_from_config({"beam_size": 5, "limits": most}, 10)
    with pytest.raises(ValueError, match="handler.limits has no num_replies"):  # no fallback restates them
        options_from_config({"limits": {"max_length": 20, "beam_size": 4}}, 10)


def test_a_request_choosing_its_mode_overrides_the_other_modes_defaults():
    beams = DecodeOptions(beam_size=5, no_repeat_ngram_size=2)  # what make demo CORPUS=chitchat serves by default
    sampled = parse_options({"temperature": 0.7}, beams, LIMITS)  # an OpenAI client's usual temperature
    assert (sampled.mode, sampled.beam_size, sampled.no_repeat_ngram_size) == ("sample", 1, 2)
    assert parse_options({}, beams, LIMITS).beam_size == 5
    searched = parse_options({"beam_size": 3}, DecodeOptions(temperature=0.8, top_p=0.9), LIMITS)
    assert (searched.mode, searched.temperature, searched.top_p) == ("beam", None, None)
    with pytest.raises(InvalidOption, match="cannot be combined"):  # a request that asks for both still may not
        parse_options({"beam_size": 3, "temperature": 0.7}, beams, LIMITS)


def test_every_option_is_a_decode_options_field_with_help():
    assert list(OPTIONS) == [f for f in DecodeOptions.__dataclass_fields__]
    assert all(o.help for o in OPTIONS.values())


def test_sample_and_greedy_share_one_score_definition():
    """A reply's score is its mean token log-probability whichever search found it."""
    bot = tiny_bot(seed=3)
    for search, options in ((greedy, DecodeOptions()), (sample, DecodeOptions(temperature=0.5, seed=1)),
                            (beam_search, DecodeOptions(beam_size=3))):
        [[best, *_]] = run(search, bot, ["what is your name"], [options])
        assert best.score == pytest.approx(sequence_score(bot, "what is your name", best.ids), abs=1e-5)


def test_draw_follows_the_probabilities_and_never_picks_a_zero_one():
    import random

    from model.decoding import draw
    probs = torch.tensor([[0.0, 0.2, 0.0, 0.8, 0.0]])
    rng = random.Random(0)
    counts = [0] * 5
    for _ in range(4000):
        counts[int(draw(probs, [rng])[0])] += 1
    assert counts[0] == counts[2] == counts[4] == 0
    assert counts[3] / 4000 == pytest.approx(0.8, abs=0.03)


def reference_nucleus(probs: list[float], top_k: int | None, top_p: float | None) -> set[int]:
    """The tokens top_k / top_p keep, by the textbook recipe: rank by probability, keep the k likeliest and, of
    those, the smallest prefix whose mass reaches top_p."""
    ranked = sorted(range(len(probs)), key=lambda i: -probs[i])[: top_k or len(probs)]
    kept, mass = set(), 0.0
    for i in ranked:
        if top_p is not None and mass >= top_p:
            break
        kept.add(i)
        mass += probs[i]
    return kept


@pytest.mark.parametrize("top_k, top_p", [(None, 0.9), (None, 0.3), (3, None), (5, 0.6), (1, None), (2, 0.99)])
def test_pick_samples_the_textbook_nucleus_in_proportion(top_k, top_p):
    import random

    from model.decoding import pick
    probs = torch.tensor([[0.02, 0.3, 0.01, 0.18, 0.25, 0.04, 0.12, 0.05, 0.03]])
    options = [DecodeOptions(top_k=top_k, top_p=top_p)]
    kept = reference_nucleus(probs[0].tolist(), top_k, top_p)
    rng, counts = random.Random(1), [0] * probs.size(1)
    for _ in range(6000):
        counts[pick(probs, options, [rng])[0]] += 1
    assert {i for i, c in enumerate(counts) if c} == kept
    total = sum(probs[0, i].item() for i in kept)
    for i in kept:
        assert counts[i] / 6000 == pytest.approx(probs[0, i].item() / total, abs=0.025)


def test_pick_falls_back_to_the_exact_nucleus_when_draws_keep_being_refused():
    import random

    from model.decoding import REJECTION_TRIES, pick
    probs = torch.full((1, 400), 1.0)  # nearly flat: top_k 2 keeps 2 tokens in 400, almost every draw is refused
    probs[0, 7], probs[0, 300] = 1.5, 1.2
    probs /= probs.sum()
    rng = random.Random(0)
    drawn = {pick(probs, [DecodeOptions(top_k=2)], [rng])[0] for _ in range(200)}
    assert drawn == {7, 300} and REJECTION_TRIES < 200  # the fallback, not luck, found them


# ---------------------------------------------------------------- OpenAI's presence and frequency penalties

@torch.no_grad()
def penalized_greedy_reference(bot, text: str, options: DecodeOptions) -> list[int]:
    """OpenAI's published rule, one unbatched decoder step at a time: logit[j] -= c[j] * frequency_penalty +
    (c[j] > 0) * presence_penalty, c[j] the count of token j in the reply so far; then PAD and SOS barred, EOS
    barred before min_length, and the likeliest token taken."""
    input_seq, lengths = bot.pad([bot.encode(text).ids])
    outputs, hidden = bot.encoder(input_seq, lengths)
    hidden = hidden[: bot.decoder.n_layers]
    mask = torch.arange(input_seq.size(0)).unsqueeze(1) < lengths.unsqueeze(0)
    tokens, previous = [], SOS_token
    for t in range(options.max_length):
        logits, hidden = bot.decoder(torch.tensor([[previous]]), hidden, outputs, mask)
        row = logits[0, 0].double().tolist()
        for j in range(len(row)):
            count = tokens.count(j)
            row[j] -= count * options.frequency_penalty + (count > 0) * options.presence_penalty
        barred = {PAD_token, SOS_token} | ({EOS_token} if t < options.min_length else set())
        previous = max((j for j in range(len(row)) if j not in barred), key=lambda j: row[j])
        tokens.append(previous)
        if previous == EOS_token:
            break
    return tokens


@pytest.mark.parametrize("presence, frequency", [(0.0, 2.0), (2.0, 0.0), (0.7, 1.3), (-1.0, 0.5)])
def test_penalized_greedy_is_openais_rule(presence, frequency):
    bot = tiny_bot()
    options = DecodeOptions(max_length=12, min_length=6, presence_penalty=presence, frequency_penalty=frequency)
    texts = ["hello there", "how are you", "what is your name", "i am fine"]
    found = run(greedy, bot, texts, [options] * len(texts))
    assert [c[0].ids for c in found] == [penalized_greedy_reference(bot, t, options) for t in texts]


def test_a_frequency_penalty_stops_the_repeats_it_is_for():
    bot = tiny_bot()
    plain, penalized = (DecodeOptions(max_length=12, min_length=12, frequency_penalty=f) for f in (0.0, 2.0))
    repeats = [max(ids.count(t) for t in set(ids)) for ids in
               (run(greedy, bot, ["how are you"], [o])[0][0].ids for o in (plain, penalized))]
    assert repeats[0] > repeats[1]


@pytest.mark.parametrize("mode", ["greedy", "beam", "sample"])
def test_a_penalized_request_decodes_the_same_alone_and_beside_others(mode):
    bot = tiny_bot(quantize="int8")
    extra = {"greedy": {}, "beam": {"beam_size": 3}, "sample": {"temperature": 0.9, "seed": 4}}[mode]
    mine = DecodeOptions(max_length=10, presence_penalty=1.0, frequency_penalty=0.5, **extra)
    others = [DecodeOptions(max_length=10, **extra), DecodeOptions(max_length=10, frequency_penalty=-1.0, **extra)]
    search = {"greedy": greedy, "beam": beam_search, "sample": sample}[mode]
    alone = run(search, bot, ["how are you"], [mine])[0]
    batched = run(search, bot, ["i am fine", "how are you", "what is your name"], [others[0], mine, others[1]])[1]
    assert [c.ids for c in alone] == [c.ids for c in batched]
