"""model/int8.py: int8 layers that match float32 closely and never depend on their batch mates."""
from __future__ import annotations

import copy

import pytest
import torch
from conftest import tiny_checkpoint
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from bench.workload import random_checkpoint, synthetic_voc
from model import int8, load_chatbot, trace_step
from model.checkpoint import build_model
from model.int8 import Int8GRU, Int8Linear, quantize_int8


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_int8_linear_is_close_to_float32_and_rows_are_independent():
    linear = nn.Linear(40, 24)
    x = torch.randn(9, 40, generator=seeded()) * 3
    q = Int8Linear(linear)
    with torch.no_grad():
        expected, got = linear(x), q(x)
    assert (got - expected).abs().max() < 0.03 * expected.abs().max()
    for i in range(len(x)):  # bit for bit, whatever the other rows hold
        assert torch.equal(q(x[i: i + 1]), got[i: i + 1])
    assert torch.equal(q(x.view(3, 3, 40)), got.view(3, 3, 24))


def test_bounded_input_skips_the_scaling_but_keeps_the_result():
    linear = nn.Linear(40, 24)
    x = torch.rand(6, 40, generator=seeded()) * 2 - 1
    scaled, bounded = Int8Linear(linear), Int8Linear(linear, bounded_input=True)
    with torch.no_grad():
        assert (bounded(x) - linear(x)).abs().max() < 0.03 * linear(x).abs().max()
        assert not torch.equal(bounded(x), scaled(x))  # a different (fixed) input scale: not the same code
        assert torch.equal(bounded(x[2:3]), bounded(x)[2:3])


@pytest.mark.parametrize("bidirectional", [False, True])
def test_int8_gru_matches_nn_gru_on_packed_batches_and_each_sequence_alone(bidirectional):
    gru = nn.GRU(32, 32, num_layers=2, bidirectional=bidirectional).eval()
    q = Int8GRU(gru)
    x = torch.randn(7, 5, 32, generator=seeded())
    lengths = torch.tensor([3, 7, 1, 5, 7])
    with torch.no_grad():
        out, h = gru(pack_padded_sequence(x, lengths, enforce_sorted=False))
        q_out, q_h = q(pack_padded_sequence(x, lengths, enforce_sorted=False))
        out, q_out = pad_packed_sequence(out)[0], pad_packed_sequence(q_out)[0]
        assert (q_out - out).abs().max() < 0.05 and (q_h - h).abs().max() < 0.05
        for b, length in enumerate(lengths.tolist()):
            alone_out, alone_h = q(pack_padded_sequence(x[:length, b: b + 1], lengths[b: b + 1]))
            assert torch.equal(pad_packed_sequence(alone_out)[0][:, 0], q_out[:length, b])
            assert torch.equal(alone_h[:, 0], q_h[:, b])


@pytest.mark.parametrize("steps", [1, 4])
def test_int8_gru_matches_nn_gru_on_plain_tensors(steps):
    """steps=1 is greedy decoding's fast path."""
    gru = nn.GRU(32, 32, num_layers=2).eval()
    x = torch.randn(steps, 3, 32, generator=seeded())
    h0 = torch.rand(2, 3, 32, generator=seeded(1)) * 2 - 1
    with torch.no_grad():
        (out, h), (q_out, q_h) = gru(x, h0), Int8GRU(gru)(x, h0)
    assert q_out.shape == out.shape and q_h.shape == h.shape
    assert (q_out - out).abs().max() < 0.05 and (q_h - h).abs().max() < 0.05


def test_quantize_int8_swaps_gru_and_linear_but_not_attention():
    encoder, decoder = build_model(tiny_checkpoint("concat")["config"], 30)
    quantize_int8(encoder), quantize_int8(decoder, bounded_inputs=("out",))
    assert isinstance(encoder.gru, Int8GRU) and isinstance(decoder.gru, Int8GRU)
    assert isinstance(decoder.concat, Int8Linear) and not decoder.concat.bounded_input
    assert decoder.out.bounded_input
    assert isinstance(decoder.attn.attn, nn.Linear)  # 'concat' attention reads its weight directly


@pytest.mark.parametrize("attn", ["dot", "concat"])
def test_gate_tables_give_the_same_numbers_as_computing_the_gates(attn):
    """The looked-up first-layer gates are bit for bit what the GRU computes from the embedding."""
    config = tiny_checkpoint(attn)["config"]
    floats = build_model(config, 30)
    enc, dec = [quantize_int8(copy.deepcopy(m).eval(), bounded_inputs=("out",)) for m in floats]
    t_enc, t_dec = [int8.tabulate_input_gates(quantize_int8(m.eval(), bounded_inputs=("out",))) for m in floats]
    assert isinstance(t_enc.embedding, int8.GateTable) and t_enc.gru.gate_input and t_dec.gru.gate_input
    assert t_enc.embedding.table.shape == (30, 2 * 3 * config["hidden_size"])  # both directions
    ids, lengths = torch.randint(3, 30, (6, 4), generator=seeded()), torch.tensor([6, 2, 5, 6])
    with torch.no_grad():
        (out, h), (t_out, t_h) = enc(ids, lengths), t_enc(ids, lengths)
        assert torch.equal(out, t_out) and torch.equal(h, t_h)
        token = torch.randint(3, 30, (1, 4), generator=seeded(1))
        assert all(torch.equal(a, b) for a, b in zip(dec(token, h[:2], out), t_dec(token, h[:2], out)))
    with pytest.raises(ValueError, match="eval"):  # the decoder's embedding dropout sits between the two
        int8.tabulate_input_gates(quantize_int8(build_model(config, 30)[1]))


def test_int8_state_dict_holds_int8_weights():
    state = Int8Linear(nn.Linear(40, 24)).state_dict()
    assert state["weight.weight"].dtype == torch.int8 and state["weight.weight"].shape == (24, 40)
    assert state["weight.scale"].shape == (24,)


def test_eager_fallback_gives_the_same_numbers(monkeypatch):
    """Where TorchScript is missing, int8 layers run their Python code, with the same results."""
    linear = nn.Linear(40, 24)
    x = torch.randn(5, 40, generator=seeded())
    scripted = Int8Linear(linear)(x)
    monkeypatch.setattr(int8, "_compiled", {})
    monkeypatch.setattr(torch.jit, "script", lambda fn: (_ for _ in ()).throw(RuntimeError("no TorchScript")))
    eager = Int8Linear(linear)
    assert eager._linear is int8.int8_linear
    assert torch.equal(eager(x), scripted)


@pytest.mark.parametrize("quantize", [False, "int8", "fp16"])
def test_traced_step_gives_the_decoders_numbers(quantize):

    bot = load_chatbot(tiny_checkpoint("general"), quantize=quantize)
    assert isinstance(bot.step, torch.jit.ScriptModule)
    texts = ["hello there", "how are you ?", "hi", "what is your name ?"]
    traced = [r.text for r in bot.reply_batch(texts)]
    bot.step = None
    assert [r.text for r in bot.reply_batch(texts)] == traced


def test_trace_step_falls_back_to_the_decoder(monkeypatch, caplog):
    _, decoder = build_model(tiny_checkpoint()["config"], 30)
    monkeypatch.setattr(torch.jit, "trace", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("no tracing")))
    assert trace_step(decoder.eval()) is decoder
    assert "cannot trace the decoder step" in caplog.text


VOC = synthetic_voc([])  # 7,826 made-up words, as the Cornell vocabulary has
WORDS = [VOC.index2word[i] for i in range(3, VOC.num_words)]


def random_bot(attn_model: str, quantize):
    """Untrained weights with EOS disabled (bench.serve_bench's): near-tied logits everywhere, so the
    last bit of any number that depended on the batch would show up as a different reply. A hidden
    size that is not a multiple of the SIMD width puts rows at different lanes in different batches."""

    return load_chatbot(random_checkpoint(VOC, 0, hidden_size=50, attn_model=attn_model), quantize=quantize)


@pytest.mark.parametrize("attn_model", ["dot", "concat"])
@pytest.mark.parametrize("quantize", [False, "int8", "fp16"])
def test_untrained_replies_are_the_same_alone_and_in_any_batch(attn_model, quantize):
    bot = random_bot(attn_model, quantize)
    rng = torch.Generator().manual_seed(1)
    texts = [" ".join(WORDS[int(i)] for i in torch.randint(len(WORDS), (int(n),), generator=rng))
             for n in torch.randint(1, 10, (200,), generator=rng)]
    alone = [bot.reply(t).text for t in texts]
    for size in (8, 13):
        batched = [r.text for start in range(0, len(texts), size) for r in bot.reply_batch(texts[start: start + size])]
        assert batched == alone


def first_step_logits(bot, texts: list[str]) -> torch.Tensor:
    """(B, V) logits of the first greedy step of bot.reply_batch(texts)."""
    step, seen = bot.step, []

    def spy(*args):
        out = step(*args)
        seen.append(out[0][0])
        return out

    bot.step = spy
    try:
        bot.reply_batch(texts)
    finally:
        bot.step = step
    return seen[0]


@pytest.mark.parametrize("quantize", ["int8"])
def test_logits_are_bit_identical_alone_and_in_a_batch(quantize):
    """int8 only. Not float32: MKL's float kernels may round a row differently with other rows beside it; nor
    fp16 on every CPU: on an AVX-512 AMD EPYC, torch's fp16 dynamic GRU rounds some rows differently in a batch."""
    bot = random_bot("dot", quantize)
    rng = torch.Generator().manual_seed(2)  # texts of 1 to 9 words: a batch is padded to its longest
    texts = [" ".join(WORDS[int(i)] for i in torch.randint(len(WORDS), (n,), generator=rng))
             for n in list(range(1, 10)) * 6]
    together = first_step_logits(bot, texts)
    for i, text in enumerate(texts):
        assert torch.equal(first_step_logits(bot, [text])[0], together[i])



@pytest.mark.parametrize("quantize", [False, "fp16", "int8"])
def test_the_int8_speed_path_is_built_for_int8_weights_alone(quantize):
    """Gate tables (~140 MB for the Cornell model) and int8 kernels exist only where they are used."""
    from model.int8 import GateTable, Int8GRU, Int8Linear

    bot = random_bot("dot", quantize)
    built = {type(m) for part in (bot.encoder, bot.decoder) for m in part.modules()}
    assert bool(built & {GateTable, Int8GRU, Int8Linear}) == (quantize == "int8")


def test_a_gpu_never_gets_quantised_weights():
    from model import CheckpointError

    with pytest.raises(CheckpointError, match="CPU only"):
        load_chatbot(random_checkpoint(VOC, 0, hidden_size=50), device="meta", quantize="int8")
