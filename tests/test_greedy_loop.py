"""model/greedy_loop.py and the encoder's one loop for both directions: faster, and the same numbers bit for bit.

The reference is the Python loop they replace (seq2seq.greedy_decode, a loop per direction), which
tests/test_tutorial_checkpoint.py holds to the tutorial's own GreedySearchDecoder.
"""
from __future__ import annotations

import pytest
import torch
from conftest import tiny_checkpoint
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from model import load_chatbot
from model.decoding import greedy
from model.int8 import Int8GRU
from model.schema import DecodeOptions
from model.voc import EOS_token
from serving.loading import load_core
from tools.server_config import model_config

TEXTS = ["hello there .", "how are you ?", "i am fine", "what is your name ?", "my name is bob .", "you",
         "where are you going ?", "i am going home .", "good night !", "bob", "are you fine ?", "home"]


def lively_checkpoint(attn_model: str, seed: int = 0) -> dict:
    """tiny_checkpoint with its weights tripled and EOS favoured: replies that differ by input and would often end
    (EOS) before min_length, at different steps."""
    ckpt = tiny_checkpoint(attn_model, seed=seed)
    for part in ("encoder", "decoder"):
        ckpt[part] = {name: value * 3 if value.is_floating_point() else value for name, value in ckpt[part].items()}
    ckpt["decoder"]["out.bias"][EOS_token] += 1.5
    return ckpt


def both_loops(bot, texts: list[str], options: list[DecodeOptions]) -> tuple[list, list]:
    """greedy()'s candidates through the compiled loop and through the Python loop, with the same traced step."""
    assert hasattr(bot.step, "greedy")
    input_seq, lengths = bot.pad([bot.encode(t).ids for t in texts])
    compiled = greedy(bot.encoder, bot.decoder, input_seq, lengths, options, bot.step, bot.rules)
    python = greedy(bot.encoder, bot.decoder, input_seq, lengths, options, bot.step.step, bot.rules)
    return compiled, python


def mixed_options(n: int) -> list[DecodeOptions]:
    """n requests' options with different min_length and max_length, as one TorchServe batch may hold."""
    return [DecodeOptions(max_length=(3, 10, 6, 1)[i % 4], min_length=(1, 1, 4, 1)[i % 4]) for i in range(n)]


@pytest.mark.parametrize("quantize", [False, "int8"])
@pytest.mark.parametrize("attn_model", ["dot", "general", "concat"])
def test_the_compiled_loop_decodes_what_the_python_loop_decodes(attn_model, quantize):
    bot = load_chatbot(lively_checkpoint(attn_model), quantize=quantize)
    for options in ([bot.default_options] * len(TEXTS), mixed_options(len(TEXTS))):
        compiled, python = both_loops(bot, TEXTS, options)
        assert compiled == python  # token ids and scores (mean log-probabilities), exactly
    lengths = {len(c[0].ids) for c in compiled}
    assert len(lengths) > 2  # rows left the batch at different steps: the shrinking batch was exercised
    assert min(len(c[0].ids) for c in compiled) == 1  # EOS came as soon as min_length 1 let it
    if quantize == "int8":  # batch invariance: int8's promise (float32's MKL kernels may round a row by its batch)
        assert [both_loops(bot, [t], [o])[0][0] for t, o in zip(TEXTS, options)] == compiled


def test_the_compiled_loop_keeps_byte_level_replies_whole_utf8(bpe_checkpoint):
    bot = load_chatbot(bpe_checkpoint, quantize="int8")
    texts = ["héllo wörld", "ça va ?", "日本語", "ok", "naïve café", "?"]
    compiled, python = both_loops(bot, texts, mixed_options(len(texts)))
    assert compiled == python
    for candidates in compiled:
        ids = [t for t in candidates[0].ids if t != EOS_token]
        bot.voc.decode(ids).encode("utf-8")  # ReplyRules: never a broken character, so never U+FFFD
        assert "\ufffd" not in bot.voc.decode(ids)


class Guarded:
    """A step whose compiled loop must not run: it raises if greedy search calls it."""

    def __init__(self, step):
        self.step = step

    def __call__(self, *args):
        return self.step(*args)

    def greedy(self, *args):
        raise AssertionError("the compiled loop ran")


def test_streams_and_penalties_take_the_python_loop():
    """The compiled loop has no hooks: a streamed reply needs its tokens as they come, penalties a row's history."""
    bot = load_chatbot(lively_checkpoint("dot"), quantize="int8")
    input_seq, lengths = bot.pad([bot.encode(t).ids for t in TEXTS[:3]])
    guarded, plain = Guarded(bot.step), [bot.default_options] * 3
    heard = []
    streamed = greedy(bot.encoder, bot.decoder, input_seq, lengths, plain, guarded, bot.rules,
                      lambda r, token: heard.append((r, token)))
    assert streamed == greedy(bot.encoder, bot.decoder, input_seq, lengths, plain, bot.step, bot.rules)
    assert sorted(heard) == sorted((r, t) for r, c in enumerate(streamed) for t in c[0].ids)
    penalized = [DecodeOptions(max_length=10, presence_penalty=1.0)] * 3
    greedy(bot.encoder, bot.decoder, input_seq, lengths, penalized, guarded, bot.rules)
    with pytest.raises(AssertionError, match="compiled loop ran"):  # the guard works: a plain batch calls it
        greedy(bot.encoder, bot.decoder, input_seq, lengths, plain, guarded, bot.rules)


@pytest.mark.parametrize("layers", [1, 2])
def test_both_directions_in_one_loop_give_each_directions_own_numbers(layers):
    gru = nn.GRU(40, 40, num_layers=layers, bidirectional=True).eval()
    q = Int8GRU(gru)
    x = torch.randn(9, 6, 40, generator=torch.Generator().manual_seed(0))
    lengths = torch.tensor([3, 9, 1, 5, 9, 2])
    results = {}
    with torch.no_grad():
        for together in (True, False):
            q.directions_together = together
            out, h = q(pack_padded_sequence(x, lengths, enforce_sorted=False))
            results[together] = (pad_packed_sequence(out)[0], h)
    assert all(torch.equal(a, b) for a, b in zip(results[True], results[False]))


def test_compiled_decode_false_is_the_decode_of_before_with_the_same_replies():
    ckpt = lively_checkpoint("dot")
    new, old = load_chatbot(ckpt, quantize="int8"), load_chatbot(ckpt, quantize="int8", compiled_decode=False)
    assert hasattr(new.step, "greedy") and not hasattr(old.step, "greedy")
    assert {m.directions_together for m in new.encoder.modules() if isinstance(m, Int8GRU)} == {True}
    assert {m.directions_together for m in old.encoder.modules() if isinstance(m, Int8GRU)} == {False}
    assert [r.text for r in old.reply_batch(TEXTS)] == [r.text for r in new.reply_batch(TEXTS)]


def test_the_handler_option_compiled_decode_must_be_true_or_false(serving_checkpoint):
    shipped = model_config()["handler"]
    assert shipped["compiled_decode"] is True
    assert hasattr(load_core(str(serving_checkpoint), shipped, "m").chatbot.step, "greedy")
    off = load_core(str(serving_checkpoint), {**shipped, "compiled_decode": False}, "m")
    assert not hasattr(off.chatbot.step, "greedy")
    with pytest.raises(ValueError, match="compiled_decode must be true or false, not 'no'"):
        load_core(str(serving_checkpoint), {**shipped, "compiled_decode": "no"}, "m")
