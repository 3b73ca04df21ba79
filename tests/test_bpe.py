"""Byte-level BPE tokens (issue: a bot for any language): the tokenizer, training, checkpoints, chat and serving.

The independent reference for "byte-level" is GPT-2's published byte-to-character table
(openai/gpt-2 src/encoder.py, bytes_to_unicode), written out here: a BPE token is a run of those
characters, so the tokens of any text spell its UTF-8 bytes through that table.
"""
from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
import requests
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.launcher import REPO, build_mar, start_torchserve
from harness.tiny import BPE_SENTENCES, make_tiny_bpe_checkpoint
from model import BpeTokenizer, load_chatbot
from model.tokenizer import BPE_SPECIAL_TOKENS, vocabulary_from_dict
from model.voc import EOS_token, PAD_token, SOS_token
from train import main as train_main
from train.data import prepare_bpe, split_heldout

pytestmark = pytest.mark.filterwarnings("ignore:The given buffer is not writable")


def gpt2_bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table (openai/gpt-2, encoder.py): printable bytes map to themselves, the rest to chr(256 + n)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


BYTE_CHARS = gpt2_bytes_to_unicode()


def cleaned(text: str) -> str:
    """What the tokenizer keeps of a text, by the rule documented in model/tokenizer.py: NFC, one space, stripped."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFC", text)).strip()


@pytest.fixture(scope="module")
def tokenizer() -> BpeTokenizer:
    return BpeTokenizer.train(BPE_SENTENCES * 3, 400, "test")


TEXTS = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Cn", "Zl", "Zp")) | st.sampled_from(" \t\n"),
                max_size=60)


@settings(max_examples=300, deadline=None)
@given(text=TEXTS)
def test_any_text_round_trips_and_its_tokens_spell_its_bytes_as_gpt2_does(tokenizer, text):
    encoded = tokenizer.encode(text, max_length=10_000)
    assert encoded.unknown_words == [] and not encoded.truncated and encoded.ids[-1] == EOS_token
    assert tokenizer.decode(encoded.ids) == cleaned(text)
    tokens = tokenizer.tokenizer.encode(text, add_special_tokens=False).tokens
    assert "".join(tokens) == "".join(BYTE_CHARS[b] for b in cleaned(text).encode("utf-8"))


def test_a_space_before_a_word_is_g_dot_and_learnt_words_are_one_token(tokenizer):
    tokens = tokenizer.tokenizer.encode("how are you ?", add_special_tokens=False).tokens
    assert tokens[-3:] == ["Ġare", "Ġyou", "Ġ?"] and "".join(tokens[:-3]) == "how"  # frequent words: whole tokens


def test_pad_sos_eos_are_ids_0_1_2_and_text_spelling_them_stays_text(tokenizer):
    assert [tokenizer.tokenizer.token_to_id(t) for t in BPE_SPECIAL_TOKENS] == [PAD_token, SOS_token, EOS_token]
    ids = tokenizer.encode("<eos> <pad> <sos>", 100).ids
    assert ids.count(EOS_token) == 1 and PAD_token not in ids and SOS_token not in ids
    assert tokenizer.decode(ids) == "<eos> <pad> <sos>"


def test_a_text_longer_than_max_length_tokens_is_cut_and_says_so(tokenizer):
    full = tokenizer.encode("I was born in 1984 and I live in a small house.", 1000)
    cut = tokenizer.encode("I was born in 1984 and I live in a small house.", 6)
    assert len(full.ids) > 6 and cut.truncated and not full.truncated
    assert cut.ids == full.ids[:5] + [EOS_token]


def test_decode_stops_at_eos_and_skips_pad_and_sos(tokenizer):
    ids = tokenizer.encode("你好", 100).ids[:-1]
    assert tokenizer.decode([SOS_token, *ids, PAD_token, EOS_token, *ids]) == "你好"


def test_the_tokenizer_survives_the_checkpoint_as_a_json_string(tokenizer, tmp_path):
    torch.save({"voc": tokenizer.to_dict()}, tmp_path / "t.tar")
    stored = torch.load(tmp_path / "t.tar", weights_only=True)["voc"]
    assert isinstance(stored["json"], str) and json.loads(stored["json"])["model"]["type"] == "BPE"
    again = vocabulary_from_dict(stored)
    for text in BPE_SENTENCES:
        assert again.encode(text, 50) == tokenizer.encode(text, 50)


def test_bpe_pairs_are_filtered_by_token_count_and_the_tokens_never_see_held_out_text():
    pairs = [(" ".join(["word"] * (i % 9 + 1)), f"reply {i}") for i in range(200)]  # 1 to 9 tokens or more
    held = split_heldout(list(range(200)), 0.1, seed=3)[1][0]  # the split depends on positions alone
    pairs[held] = ("zqzqzqzqzq wvwvwvwvwv", "reply")  # words that appear nowhere else
    tokenizer, kept, kept_heldout = prepare_bpe(pairs, 6, 300, 0.1, seed=3)
    train, heldout = split_heldout(pairs, 0.1, seed=3)
    assert pairs[held] in heldout
    assert kept == [p for p in train if all(0 < len(tokenizer.tokenizer.encode(s).ids) < 6 for s in p)]
    assert kept_heldout == [p for p in heldout if all(0 < len(tokenizer.tokenizer.encode(s).ids) < 6 for s in p)]
    assert 0 < len(kept) < len(train)
    assert not any("zq" in token for token in tokenizer.tokenizer.get_vocab())  # learnt from training text only


def test_a_bpe_bot_answers_any_language_with_no_unknown_words(bpe_checkpoint):
    bot = load_chatbot(bpe_checkpoint)
    replies = bot.reply_batch(["你好", "I was born in 1984", "zorblax quuxly", "¿cómo estás?"])
    assert all(r.error is None and r.unknown_words == [] and "Ġ" not in r.text for r in replies)
    assert [r.text for r in replies] == [bot.reply(t).text for t in ["你好", "I was born in 1984", "zorblax quuxly",
                                                                     "¿cómo estás?"]]


# ---------------------------------------------------------------- training, resume and the chat CLI


@pytest.fixture(scope="module")
def chinese_run(tmp_path_factory) -> Path:
    """A few iterations of --tokenizer bpe on chatterbot-corpus's Chinese conversations."""
    save_dir = tmp_path_factory.mktemp("bpe-run")
    assert train_main.main(["--corpus", "chatterbot", "--language", "chinese", "--tokenizer", "bpe",
                            "--vocab-size", "600", "--max-length", "16", "--hidden-size", "16", "--iterations", "4",
                            "--save-every", "2", "--batch-size", "8", "--save-dir", str(save_dir),
                            "--device", "cpu"]) == 0
    return save_dir


def test_a_bpe_training_run_saves_its_tokenizer_in_a_weights_only_checkpoint(chinese_run):
    ckpt = torch.load(chinese_run / "4_checkpoint.tar", weights_only=True)
    assert ckpt["voc"]["kind"] == "bpe" and ckpt["args"]["tokenizer"] == "bpe"
    tokenizer = vocabulary_from_dict(ckpt["voc"])
    assert ckpt["encoder"]["embedding.weight"].shape[0] == tokenizer.num_words <= 600
    assert tokenizer.encode("你好", 16).unknown_words == []


def test_resuming_a_bpe_run_keeps_its_tokenizer(chinese_run, tmp_path):
    assert train_main.main(["--resume", str(chinese_run / "2_checkpoint.tar"), "--iterations", "4",
                            "--save-dir", str(tmp_path)]) == 0
    resumed = torch.load(tmp_path / "4_checkpoint.tar", weights_only=True)
    straight = torch.load(chinese_run / "4_checkpoint.tar", weights_only=True)
    assert resumed["voc"] == straight["voc"]
    assert all(torch.equal(resumed["decoder"][k], v) for k, v in straight["decoder"].items())


def test_the_chat_cli_answers_chinese_in_chinese_characters(chinese_run):
    path = chinese_run / "best_checkpoint.tar"
    result = subprocess.run([sys.executable, "-m", "tools.chat", "--checkpoint", str(path), "--text", "你好"], cwd=REPO,
                            capture_output=True, text=True, encoding="utf-8", timeout=120)
    expected = load_chatbot(path).reply("你好").text
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected + "\n" and "Ġ" not in result.stdout and result.stderr == ""


# ---------------------------------------------------------------- real TorchServe


@pytest.fixture(scope="module")
def bpe_server(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("bpe-serve")
    checkpoint = make_tiny_bpe_checkpoint(workdir / "1_checkpoint.tar")
    mar = build_mar(checkpoint, workdir / "store")
    with start_torchserve(workdir / "server", mar.parent) as server:
        yield server, checkpoint


@pytest.mark.server
def test_torchserve_answers_a_utf8_chinese_file_like_the_in_process_bot(bpe_server, serving_chatbot):
    server, checkpoint = bpe_server
    bot = load_chatbot(checkpoint, quantize="int8")  # the served weight mode: handler/model-config.yaml's default
    reply = requests.put(server.predictions_url, data="你好\n".encode(), timeout=30)  # curl -T hello.txt
    assert reply.status_code == 200 and reply.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert reply.content.decode("utf-8") == bot.reply("你好").text + "\n"
    assert "X-Unknown-Words" not in reply.headers


@pytest.mark.server
def test_torchserve_bpe_json_reply_has_no_unknown_words_and_says_when_the_text_was_cut(bpe_server):
    server, _ = bpe_server
    long_text = "I was born in 1984. " * 10
    body = requests.post(server.predictions_url, json={"text": long_text, "beam_size": 3}, timeout=30).json()
    assert body["unknown_words"] == [] and body["truncated"] is True and "Ġ" not in body["reply"]
    raw = requests.post(server.predictions_url, data=long_text.encode(), headers={"Content-Type": "text/plain"},
                        timeout=30)
    assert raw.status_code == 200 and raw.headers["X-Truncated"] == "true"
    short = requests.post(server.predictions_url, json={"text": "zorblax"}, timeout=30).json()
    assert short["unknown_words"] == [] and short["truncated"] is False


# ---------------------------------------------------------------- the word vs BPE comparison


def stepwise_nats(bot, query: str, reply: str) -> float:
    """-log p(reply + EOS | query), one decoder call per token: the tutorial's step loop, written out here."""
    ids = bot.voc.token_ids(reply) + [EOS_token]
    source = bot.voc.token_ids(query) + [EOS_token]
    outputs, hidden = bot.encoder(torch.tensor(source).unsqueeze(1), torch.tensor([len(source)]))
    hidden, token, nats = hidden[: bot.decoder.n_layers], torch.tensor([[SOS_token]]), 0.0
    for target in ids:
        logits, hidden = bot.decoder(token, hidden, outputs)
        nats -= float(torch.log_softmax(logits[0, 0].double(), 0)[target])
        token = torch.tensor([[target]])
    return nats


@pytest.mark.parametrize("kind", ["word", "bpe"])
def test_bits_per_byte_is_the_replies_nll_in_bits_over_their_utf8_bytes(kind, bpe_checkpoint, serving_checkpoint):
    from bench.tokens_compare import bits_per_byte

    bot = load_chatbot(bpe_checkpoint if kind == "bpe" else serving_checkpoint)
    pairs = [("how are you ?", "i am fine ."), ("hello there !", "good bye !")]
    if kind == "bpe":
        pairs += [("你好", "我很好，谢谢."), ("I was born in 1984.", "Hola, ¿cómo estás?")]
    nats = sum(stepwise_nats(bot, q, r) for q, r in pairs)
    size = sum(len(r.encode("utf-8")) + 1 for _, r in pairs)
    assert bits_per_byte(bot, pairs) == pytest.approx(nats / math.log(2) / size, rel=1e-5)
