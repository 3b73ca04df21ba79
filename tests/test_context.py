"""The chitchat corpus and context from earlier turns: the loader, the encoder's input, the checkpoint, the served
routes (the JSON API's "context" field, the OpenAI history, X-Context-Used) on a real TorchServe."""
from __future__ import annotations

import pytest
import requests
import torch

from harness.launcher import build_mar, start_torchserve
from harness.tiny import TINY_SENTENCES, make_tiny_checkpoint, make_tiny_chitchat, message, write_chitchat
from model import load_chatbot
from model.context import SEPARATOR, context_ids, join_turns
from model.voc import EOS_token
from tools.chat_page import history_turns
from tools.server_config import MODEL_NAME, model_config
from train.config import stored_settings
from train.data import (
    batch_to_tensors,
    conversation_pairs,
    load_chitchat_conversations,
    load_data,
    load_pairs,
    source_ids,
)

SERVED_QUANTIZE = model_config()["handler"].get("quantize", False)  # the weight mode the archive serves


# ---------------------------------------------------------------- the loader


def test_a_senders_consecutive_messages_are_one_turn_and_empty_messages_are_dropped(tmp_path):
    corpus = write_chitchat(tmp_path / "c.json", [[
        [message("Hello", "a"), message("How are you doing today?", "a")],
        [message("whats up", "b")], [message("  ", "a")], [message("im good", "b")],  # b again after a blank
        [message("Cool", "a")],
    ]])
    assert load_chitchat_conversations(corpus) == [["Hello How are you doing today?", "whats up im good", "Cool"]]


def test_pairs_carry_the_turns_before_their_query_when_asked():
    turns = ["a1", "b1", "a2", "b2"]
    assert conversation_pairs([turns]) == [("a1", "b1"), ("b1", "a2"), ("a2", "b2")]
    assert conversation_pairs([turns], 1) == [("a1", "b1", ""), ("b1", "a2", "a1"), ("a2", "b2", "b1")]
    assert conversation_pairs([turns], 2)[2] == ("a2", "b2", join_turns(["a1", "b1"]))


def test_whole_conversations_are_held_out(tmp_path):
    corpus = make_tiny_chitchat(tmp_path / "c.json")
    settings = stored_settings({"corpus": "chitchat", "data_path": str(corpus), "min_count": 1,
                                "heldout_fraction": 0.25, "context_turns": 1})
    train, heldout = load_pairs(settings)
    conversation = {pair: {word for text in pair for word in text.split() if word.startswith("w")}
                    for pair in train + heldout}
    trained = set().union(*(conversation[p] for p in train))
    held = set().union(*(conversation[p] for p in heldout))
    assert len(held) == 10 and not trained & held  # 10 of 40 conversations, none of them partly trained on
    assert len(train) == 30 * 3 and len(heldout) == 10 * 3
    assert all(len(pair) == 3 for pair in train)
    _, prepared, prepared_heldout = load_data(settings)
    assert len(prepared) == len(train) and prepared_heldout == []  # held-out names are unknown words: no pair left


def test_context_needs_a_corpus_of_conversations():
    settings = stored_settings({"corpus": "chatterbot", "context_turns": 1})
    with pytest.raises(ValueError, match="--corpus chitchat"):
        load_data(settings)


def test_the_chitchat_package_is_installed_and_read():
    conversations = load_chitchat_conversations()
    assert len(conversations) == 7168
    assert sum(len(turns) for turns in conversations) > 130_000  # turns, after a sender's messages are joined


# ---------------------------------------------------------------- the encoder's input


def test_the_encoder_reads_each_earlier_turn_then_a_separator_then_the_turn(tmp_path):
    voc = load_chatbot(make_tiny_checkpoint(tmp_path / "c.tar")).voc
    ids = {w: voc.word2index[w] for w in ("hello", "there", "how", "are", "you")}
    pair = ("how are you", "i am fine .", join_turns(["hello there", "you"]))
    assert source_ids(voc, pair) == [ids["hello"], ids["there"], SEPARATOR, ids["you"], SEPARATOR,
                                     ids["how"], ids["are"], ids["you"], EOS_token]
    assert source_ids(voc, ("how are you", "i am fine .", "")) == source_ids(voc, ("how are you", "i am fine ."))
    # an earlier turn is cut to max_length - 1 tokens, as the turn itself is
    assert context_ids(voc, ["hello " * 30], 1, 10) == [ids["hello"]] * 9 + [SEPARATOR]
    # a turn of unknown words was still said: its separator stays
    assert context_ids(voc, ["zorblax", "hello"], 2, 10) == [SEPARATOR, ids["hello"], SEPARATOR]
    inp, lengths, *_ = batch_to_tensors(voc, [pair, ("how are you", "i am fine .")])
    assert lengths.tolist() == [9, 4] and inp[:, 0].tolist() == source_ids(voc, pair)


def test_a_checkpoint_without_context_answers_exactly_as_before_whatever_it_is_sent(tmp_path):
    path = make_tiny_checkpoint(tmp_path / "c.tar")
    stored = torch.load(path, weights_only=True)
    del stored["config"]["context_turns"]  # as written before the key existed
    torch.save(stored, tmp_path / "old.tar")
    bot = load_chatbot(tmp_path / "old.tar")
    assert bot.context_turns == 0
    for text in TINY_SENTENCES:
        alone = bot.reply(text)
        assert bot.reply(text, earlier_turns=["where do you live ?"]) == alone
        assert bot.encode(text, ["where do you live ?"]) == bot.encode(text)


def test_a_context_model_reads_the_last_turns_and_its_replies_depend_on_them(tmp_path):
    bot = load_chatbot(make_tiny_checkpoint(tmp_path / "c.tar", context_turns=1))
    encoded = bot.encode("how are you ?", ["good bye !", "hello there !"])
    assert encoded.earlier_turns == 1 and encoded.context_tokens == 4  # "hello there !" and its separator only
    assert encoded.ids[:4] == bot.voc.encode("hello there !", 10).ids[:-1] + [SEPARATOR]
    assert bot.encode("how are you ?").ids == bot.voc.encode("how are you ?", 10).ids  # no turn: the turn alone
    replies = {bot.reply("how are you ?", earlier_turns=[before]).text for before in TINY_SENTENCES}
    assert len(replies) > 1  # the reply depends on the earlier turn
    # batched with others, a text's reply with its context is the one it gets alone
    batch = bot.reply_batch(["how are you ?"] * 3, None, [["hello there !"], [], ["good bye !"]])
    assert [r.text for r in batch] == [bot.reply("how are you ?", earlier_turns=t).text
                                       for t in (["hello there !"], [], ["good bye !"])]


def test_the_chat_page_sends_the_turns_of_its_history_without_the_notes():
    history = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi there\n\n*unknown: x*"},
               {"role": "user", "content": [{"type": "text", "text": "how are you"}]}]
    assert history_turns(history) == ["hello", "hi there", "how are you"]


# ---------------------------------------------------------------- the real server


@pytest.fixture(scope="module")
def context_server(tmp_path_factory):
    """TorchServe serving a tiny model trained (here: built) with one turn of context, and its reference bot."""
    workdir = tmp_path_factory.mktemp("context-serve")
    checkpoint = make_tiny_checkpoint(workdir / "1_checkpoint.tar", context_turns=1)
    mar = build_mar(checkpoint, workdir / "store")
    with start_torchserve(workdir / "server", mar.parent) as server:
        yield server, load_chatbot(checkpoint, quantize=SERVED_QUANTIZE)


@pytest.mark.server
def test_the_json_api_reads_the_context_field_and_says_how_much(context_server):
    server, bot = context_server
    for before in ("hello there !", "good bye !", ["zorblax", "do you like music ?"]):
        turns = [before] if isinstance(before, str) else before
        response = requests.post(server.predictions_url, json={"text": "how are you ?", "context": before},
                                 timeout=30)
        expected = bot.reply("how are you ?", earlier_turns=turns)
        assert response.status_code == 200 and response.json()["reply"] == expected.text
        tokens = len(bot.encode("how are you ?", turns).ids) - len(bot.encode("how are you ?").ids)
        assert response.headers["X-Context-Used"] == f"last-user-message; earlier-turns=1; earlier-tokens={tokens}"
    alone = requests.post(server.predictions_url, json={"text": "how are you ?"}, timeout=30)
    assert alone.json()["reply"] == bot.reply("how are you ?").text and "X-Context-Used" not in alone.headers


@pytest.mark.server
def test_the_openai_route_reads_the_turn_before_the_users(context_server):
    server, bot = context_server
    url = server.openai_url + "/chat/completions"
    for before in TINY_SENTENCES[:4]:
        messages = [{"role": "system", "content": "be nice"}, {"role": "user", "content": "where do you live ?"},
                    {"role": "assistant", "content": before}, {"role": "user", "content": "how are you ?"}]
        response = requests.post(url, json={"model": MODEL_NAME, "messages": messages}, timeout=30)
        expected = bot.reply("how are you ?", earlier_turns=["where do you live ?", before]).text
        assert response.json()["choices"][0]["message"]["content"] == expected
        assert "earlier-turns=1" in response.headers["X-Context-Used"]


@pytest.mark.server
@pytest.mark.parametrize("context, status, kind", [(3, 400, "InvalidOption"), ([["nested"]], 400, "InvalidOption"),
                                                   ("x" * 5000, 413, "InputTooLong")])
def test_a_bad_context_field_gets_a_4xx_that_names_it(context_server, context, status, kind):
    server, _ = context_server
    response = requests.post(server.predictions_url, json={"text": "hello", "context": context}, timeout=30)
    body = response.json()
    assert response.status_code == status and body["type"] == kind and "context" in body["message"]


@pytest.mark.server
def test_a_model_without_context_reads_only_the_last_turn_and_says_so(torchserve, serving_chatbot):
    response = requests.post(torchserve.predictions_url, json={"text": "how are you ?", "context": "good night !"},
                             timeout=30)
    assert response.json()["reply"] == serving_chatbot.reply("how are you ?").text
    assert response.headers["X-Context-Used"] == "last-user-message"
