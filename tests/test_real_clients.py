"""Real chat clients against the real TorchServe, with the settings they send by default: LangChain's `ChatOpenAI`
and the official `openai` SDK configured as a chat front end (both pinned in requirements-dev.txt). Each reply is
checked against the Chatbot the checkpoint rebuilds in this process, with the options the route maps the client's
settings to (a requested maximum above the model's limit is clamped to it).
"""
from __future__ import annotations

import openai
import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI

from model.schema import DecodeOptions
from tools.server_config import MODEL_NAME, model_config

pytestmark = pytest.mark.server
LIMIT = model_config()["handler"]["limits"]["max_length"]  # what max_tokens 512 or 2048 is clamped to
HISTORY = [SystemMessage("You are a helpful assistant."), HumanMessage("hello there ."), AIMessage("hi ."),
           HumanMessage("where are you going ?")]


@pytest.fixture(scope="module")
def chat_model(torchserve) -> ChatOpenAI:
    return ChatOpenAI(model=MODEL_NAME, base_url=torchserve.openai_url, api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def front_end(torchserve) -> openai.OpenAI:
    return openai.OpenAI(base_url=torchserve.openai_url, api_key="unused", max_retries=0, timeout=60)


def test_langchain_invokes_a_history_and_gets_the_last_user_turns_reply(chat_model, serving_chatbot):
    message = chat_model.invoke(HISTORY)
    assert message.content == serving_chatbot.reply("where are you going ?").text
    assert message.response_metadata["finish_reason"] in ("stop", "length")
    assert message.usage_metadata["output_tokens"] == len(serving_chatbot.reply("where are you going ?").token_ids[0])


def test_langchain_streams_the_same_reply(chat_model, serving_chatbot):
    chunks = list(chat_model.stream(HISTORY))
    assert "".join(c.content for c in chunks) == serving_chatbot.reply("where are you going ?").text
    assert len([c for c in chunks if c.content]) > 1  # token by token, not one piece


def test_langchain_max_tokens_512_is_clamped_to_the_models_limit(torchserve, serving_chatbot):
    model = ChatOpenAI(model=MODEL_NAME, base_url=torchserve.openai_url, api_key="unused", max_retries=0,
                       timeout=60, max_tokens=512)
    reply = serving_chatbot.reply("good night !", DecodeOptions(max_length=LIMIT))
    message = model.invoke("good night !")
    assert message.content == reply.text and len(reply.token_ids[0]) == LIMIT  # this untrained bot never stops
    assert message.response_metadata["finish_reason"] == "length"


def test_langchain_stop_list_ends_the_reply_before_the_first_stop(chat_model, serving_chatbot):
    whole = serving_chatbot.reply("what is your name ?").text  # "you small house ..."
    stop = " " + whole.split()[1]
    message = chat_model.invoke("what is your name ?", stop=["never said", stop])
    assert message.content == whole[: whole.find(stop)] and message.response_metadata["finish_reason"] == "stop"
    streamed = "".join(c.content for c in chat_model.stream("what is your name ?", stop=["never said", stop]))
    assert streamed == message.content


def test_the_sdk_as_a_chat_front_end_configures_it(front_end, serving_chatbot):
    """models.list() first, then temperature 0.7, top_p 1, max_tokens 2048, zero penalties, streamed with usage (and
    a seed, so the sampled reply can be checked)."""
    assert [m.id for m in front_end.models.list()] == [MODEL_NAME]
    settings = {"temperature": 0.7, "top_p": 1, "max_tokens": 2048, "presence_penalty": 0, "frequency_penalty": 0}
    for seed in (1, 2, 3):
        chunks = list(front_end.chat.completions.create(
            model=MODEL_NAME, messages=[{"role": "user", "content": "how are you ?"}], stream=True,
            stream_options={"include_usage": True}, seed=seed, **settings))
        reply = serving_chatbot.reply("how are you ?", DecodeOptions(max_length=LIMIT, temperature=0.7, seed=seed))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == reply.text
        assert chunks[-1].usage.completion_tokens == len(reply.token_ids[0])
        plain = front_end.chat.completions.create(model=MODEL_NAME, seed=seed, messages=[
            {"role": "user", "content": "how are you ?"}], **settings)
        assert plain.choices[0].message.content == reply.text


def test_the_sdk_with_what_a_newer_client_sends(front_end, serving_chatbot):
    """Fields the route does not know yet, and metadata and caching hints, are accepted; the reply is unchanged."""
    completion = front_end.chat.completions.create(
        model=MODEL_NAME, messages=[{"role": "user", "content": "how are you ?"}], safety_identifier="user-1",
        prompt_cache_key="k", metadata={"app": "test"}, store=False, extra_body={"a_field_from_2027": True})
    assert completion.choices[0].message.content == serving_chatbot.reply("how are you ?").text


def test_the_sdk_sees_which_turn_was_read(front_end):
    raw = front_end.chat.completions.with_raw_response.create(
        model=MODEL_NAME, messages=[{"role": "system", "content": "be brief"},
                                    {"role": "user", "content": "how are you ?"}])
    assert raw.headers["X-Context-Used"] == "last-user-message"
