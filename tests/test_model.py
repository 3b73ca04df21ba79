"""Model package: normaliser, vocabulary, unknown-word policy, attention, batched greedy search, checkpoints."""
import io
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import MODEL_SENTENCES as SENTENCES
from conftest import tiny_checkpoint

from model import (
    Attn,
    CheckpointError,
    EOS_token,
    NoKnownWordsError,
    Voc,
    encode,
    greedy_decode,
    load_chatbot,
    normalize,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("raw, expected", [
    ("Hello, World!", "hello world !"),
    ("  Café   au   lait?? ", "cafe au lait ? ?"),
    ("I'm 42 years old...", "i m years old . . ."),
    ("naïve\tfaçade\n", "naive facade"),
    ("你好 😀", ""),
    ("", ""),
])
def test_normalize_matches_tutorial(raw, expected):
    assert normalize(raw) == expected


def test_voc_counts_and_trim():
    voc = Voc()
    for s in ["a b a", "a c b", "d"]:
        voc.add_sentence(s)
    assert voc.num_words == 3 + 4
    assert voc.word2count == {"a": 3, "b": 2, "c": 1, "d": 1}
    assert voc.trim(2) == (2, 4)
    assert voc.word2index == {"a": 3, "b": 4}
    assert voc.index2word == {0: "PAD", 1: "SOS", 2: "EOS", 3: "a", 4: "b"}
    assert voc.trim(1) == (2, 2), "a second trim is a no-op, like the tutorial's"


def test_voc_dict_round_trip_keeps_indices_and_counts():
    voc = Voc("rt")
    for s in SENTENCES:
        voc.add_sentence(s)
    back = Voc.from_dict(voc.to_dict())
    assert back.__dict__ == voc.__dict__


def test_encode_drops_and_reports_unknown_words():
    voc = Voc()
    voc.add_sentence("hello there .")
    ids, unknown = encode(voc, "Hello, Zorg! There.")
    assert ids == [voc.word2index[w] for w in ["hello", "there", "."]] + [EOS_token]
    assert unknown == ["zorg", "!"]


def test_encode_keeps_first_max_length_minus_one_words():
    voc = Voc()
    voc.add_sentence("a b c d e f g h i j k l")
    ids, _ = encode(voc, "a b c d e f g h i j k l", max_length=5)
    assert ids == [3, 4, 5, 6, EOS_token]


@pytest.mark.parametrize("text, unknown", [("", []), ("   !!  ", ["!", "!"]), ("zorg blip", ["zorg", "blip"])])
def test_encode_without_known_words_raises_with_reason(text, unknown):
    voc = Voc()
    voc.add_sentence("hello")
    with pytest.raises(NoKnownWordsError) as err:
        encode(voc, text)
    assert err.value.unknown_words == unknown
    assert str(err.value)


def test_concat_attention_equals_tutorial_formula():
    torch.manual_seed(0)
    attn = Attn("concat", 8)
    dec, enc = torch.randn(1, 3, 8), torch.randn(5, 3, 8)  # (1, B, H), (Ts, B, H)
    # The tutorial: energy = tanh(W [h_t ; h_s]), score = v . energy
    energy = attn.attn(torch.cat((dec.expand(5, -1, -1), enc), 2)).tanh()
    expected = torch.softmax(torch.sum(attn.v * energy, dim=2).t(), dim=1).unsqueeze(1)
    assert torch.allclose(attn(dec, enc), expected, atol=1e-6)


def test_attention_gives_padding_zero_weight():
    attn = Attn("dot", 4)
    mask = torch.tensor([[True, True], [True, False], [True, False]])  # (Ts, B)
    weights = attn(torch.randn(2, 2, 4), torch.randn(3, 2, 4), mask)  # (B, Td, Ts)
    assert torch.all(weights[1, :, 1:] == 0)
    assert torch.allclose(weights.sum(2), torch.ones(2, 2))


@pytest.mark.parametrize("attn_model", Attn.METHODS)
def test_batch_decoding_equals_single_decoding(attn_model):
    bot = load_chatbot(tiny_checkpoint(attn_model))
    texts = ["hello", "how are you ?", "what is your name ? i am going home", "good night bob",
             "where", "i am fine . my name is bob . good night !"]
    batched, alone = bot.reply_batch(texts), [bot.reply(t) for t in texts]
    assert [(r.text, r.unknown_words, r.error) for r in batched] == [(r.text, r.unknown_words, r.error) for r in alone]
    # float32 kernels may round a row's last bits differently beside others: the score, not the words
    assert [r.score for r in batched] == pytest.approx([r.score for r in alone], abs=1e-6)
    assert len({r.text for r in batched}) > 1, "a model that says one thing proves nothing"


def test_greedy_rows_stop_at_their_own_eos():
    bot = load_chatbot(tiny_checkpoint(seed=3))
    # Make EOS the only possible output after the first step by biasing the projection.
    bot.decoder.out.bias.data[EOS_token] = 1e4
    ids = torch.tensor([[3, 4], [EOS_token, 5], [0, EOS_token]])  # (T=3, B=2)
    out = greedy_decode(bot.encoder, bot.decoder, ids, torch.tensor([2, 3]), max_length=10)
    assert out.tolist() == [[EOS_token], [EOS_token]], "all rows finished, so decoding stopped early"


def test_batch_with_unusable_texts_still_answers_the_rest():
    bot = load_chatbot(tiny_checkpoint())
    replies = bot.reply_batch(["", "hello there", "qwerty"])
    assert replies[0].error and replies[2].error and replies[1].error is None
    assert replies[2].unknown_words == ["qwerty"]
    assert replies[1] == bot.reply("hello there")


def test_checkpoint_round_trip_with_weights_only():
    ckpt = tiny_checkpoint()
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    buf.seek(0)
    texts = ["hello", "how are you ?"]
    assert load_chatbot(buf).reply_batch(texts) == load_chatbot(ckpt).reply_batch(texts)


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("corrupt, message", [
    (lambda b: b[: len(b) // 2], "not a readable checkpoint"),
    (lambda b: b"hello", "not a readable checkpoint"),
    (lambda b: pickle.dumps({"config": Evil()}), "refused to load"),
])
def test_the_loader_refuses_broken_or_unsafe_files(corrupt, message):
    buf = io.BytesIO()
    torch.save(tiny_checkpoint(), buf)
    with pytest.raises(CheckpointError, match=message):
        load_chatbot(io.BytesIO(corrupt(buf.getvalue())))


def test_torch_saved_arbitrary_object_is_refused():
    buf = io.BytesIO()
    torch.save({"config": Evil()}, buf)
    buf.seek(0)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_chatbot(buf)


@pytest.mark.parametrize("break_it, message", [
    (lambda c: c.pop("decoder"), "missing keys: decoder"),
    (lambda c: c["config"].pop("hidden_size"), "config is missing: hidden_size"),
    (lambda c: c["config"].update(attn_model="magic"), "unknown attention"),
    (lambda c: c["voc"]["words"].append("extra") or c["voc"]["counts"].append(1), "vocabulary/weights mismatch"),
    (lambda c: c["voc"]["words"].append("extra"), "words but [0-9]+ counts"),
    (lambda c: c["config"].update(encoder_n_layers=3), "weights do not fit"),
])
def test_the_loader_rejects_inconsistent_checkpoints(break_it, message):
    ckpt = tiny_checkpoint()
    break_it(ckpt)
    with pytest.raises(CheckpointError, match=message):
        load_chatbot(ckpt)


def test_quantized_model_replies():
    ckpt = tiny_checkpoint("concat")
    replies = load_chatbot(ckpt, quantize=True).reply_batch(["hello", "zzz"])
    assert replies[0].error is None and replies[1].error


def vermin_py39(*paths):
    vermin = Path(sys.executable).with_name("vermin")
    return subprocess.run([str(vermin), "-t=3.9-", "--no-tips", "--violations", *map(str, paths)],
                          capture_output=True, text=True)


def test_shipped_code_runs_on_python_3_9():
    """model/ and handler/ go into the .mar and run on the pytorch/torchserve image (Python 3.9); so do the
    container-config renderer and the drain on SIGTERM, which the image runs."""
    shipped = [ROOT / d for d in ("model", "serving", "handler") if (ROOT / d).exists()]
    result = vermin_py39(*shipped, ROOT / "tools" / "server_config.py", ROOT / "tools" / "drain.py")
    assert result.returncode == 0, result.stdout + result.stderr


def test_python_3_9_checker_catches_newer_syntax(tmp_path):
    (tmp_path / "new.py").write_text("def f(x):\n    match x:\n        case _: return isinstance(x, int | str)\n")
    assert vermin_py39(tmp_path).returncode != 0
