"""The OpenAI-compatible route on the real TorchServe, driven by the official `openai` SDK (pinned in
requirements-dev.txt): what a user's chat front end or evaluation harness does. Replies are checked against the
Chatbot the checkpoint rebuilds in this process (the independent reference of every serving test).
"""
from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import requests

from harness.launcher import METRICS_INTERVAL_S
from model.schema import DecodeOptions
from tools.server_config import MODEL_NAME

pytestmark = pytest.mark.server
TEXTS = ["how are you ?", "hello there .", "what is your name ?", "where are you going ?"]


@pytest.fixture(scope="module")
def client(torchserve) -> openai.OpenAI:
    return openai.OpenAI(base_url=torchserve.openai_url, api_key="unused", max_retries=0, timeout=60)


def ask(client: openai.OpenAI, text: str, **fields):
    return client.chat.completions.create(model=MODEL_NAME, messages=[{"role": "user", "content": text}], **fields)


def streamed_text(client: openai.OpenAI, text: str, **fields) -> tuple[str, list]:
    """(the deltas joined, every chunk) of a streamed completion."""
    chunks = list(ask(client, text, stream=True, **fields))
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices), chunks


def test_a_plain_completion_is_the_bots_reply(client, serving_chatbot):
    for text in TEXTS:
        completion = ask(client, text)
        reply = serving_chatbot.reply(text)
        [choice] = completion.choices
        assert (choice.message.role, choice.message.content) == ("assistant", reply.text)
        assert choice.finish_reason == ("stop" if reply.token_ids[0][-1] == 2 else "length")
        assert completion.model == MODEL_NAME and completion.object == "chat.completion"
        assert completion.usage.completion_tokens == len(reply.token_ids[0])
        assert completion.usage.prompt_tokens == reply.prompt_tokens


def test_n_3_gives_the_three_best_beams(client, serving_chatbot):
    completion = ask(client, "hello there .", n=3)
    beams = serving_chatbot.reply("hello there .", DecodeOptions(max_length=10, beam_size=3, num_replies=3))
    assert [c.message.content for c in completion.choices] == [text for text, _ in beams.replies]
    assert [c.index for c in completion.choices] == [0, 1, 2]


def test_seeded_sampling_gives_the_same_choices_twice(client, serving_chatbot):
    fields = {"temperature": 1.2, "top_p": 0.95, "seed": 11, "n": 3}
    first, second = ask(client, "how are you ?", **fields), ask(client, "how are you ?", **fields)
    assert [c.message.content for c in first.choices] == [c.message.content for c in second.choices]
    local = serving_chatbot.reply("how are you ?", DecodeOptions(max_length=10, num_replies=3, temperature=1.2,
                                                                 top_p=0.95, seed=11))
    assert [c.message.content for c in first.choices] == [text for text, _ in local.replies]


@pytest.mark.parametrize("fields", [{}, {"temperature": 0.9, "seed": 3}, {"max_completion_tokens": 3}])
def test_a_stream_joins_to_the_non_streamed_reply(client, fields):
    joined, chunks = streamed_text(client, "where are you going ?", **fields)
    whole = ask(client, "where are you going ?", **fields).choices[0]
    assert joined == whole.message.content
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].object == "chat.completion.chunk"
    assert [c.choices[0].finish_reason for c in chunks] == [None] * (len(chunks) - 1) + [whole.finish_reason]
    assert len({c.id for c in chunks}) == 1


def test_a_stream_can_end_with_its_usage(client):
    chunks = list(ask(client, "how are you ?", stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == (chunks[-1].usage.prompt_tokens
                                                                          + chunks[-1].usage.completion_tokens)


def test_the_model_list(client):
    assert [m.id for m in client.models.list()] == [MODEL_NAME]


@pytest.mark.parametrize("fields, error, status, code", [
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, openai.BadRequestError, 400,
     "InvalidOption"),
    ({"response_format": {"type": "json_object"}}, openai.BadRequestError, 400, "InvalidOption"),
    ({"n": 99}, openai.BadRequestError, 400, "InvalidOption"),
    ({"model": "gpt-4o"}, openai.NotFoundError, 404, "NotFound"),
    ({"messages": [{"role": "user", "content": "zorblax quuxly"}]}, openai.UnprocessableEntityError, 422,
     "NoKnownWords"),
    ({"messages": [{"role": "user", "content": "hello " * 300}]}, openai.APIStatusError, 413, "InputTooLong"),
    ({"messages": [{"role": "user", "content": "  "}], "stream": True}, openai.BadRequestError, 400, "EmptyInput"),
])
def test_each_error_is_the_sdks_matching_exception_with_our_message(client, fields, error, status, code):
    body = {"model": MODEL_NAME, "messages": [{"role": "user", "content": "how are you ?"}], **fields}
    with pytest.raises(error) as raised:
        client.chat.completions.create(**body)
    assert raised.value.status_code == status and raised.value.code == code
    assert raised.value.body["message"] and raised.value.body["message"] in raised.value.message


def test_token_mode_takes_the_inference_key_as_api_key(torchserve_factory, serving_chatbot):
    server = torchserve_factory(token_auth=True)
    key = server.keys()["inference"]["key"]
    good = openai.OpenAI(base_url=server.openai_url, api_key=key, max_retries=0, timeout=60)
    assert ask(good, "how are you ?").choices[0].message.content == serving_chatbot.reply("how are you ?").text
    assert streamed_text(good, "how are you ?")[0] == serving_chatbot.reply("how are you ?").text
    wrong = openai.OpenAI(base_url=server.openai_url, api_key="wrong", max_retries=0, timeout=60)
    with pytest.raises(openai.BadRequestError) as denied:  # TorchServe 0.12 answers a wrong key 400, not 401
        ask(wrong, "how are you ?")
    assert denied.value.body["type"] == "InvalidKeyException"


def raw_stream(url: str, text: str, close_early: bool = False) -> str:
    """A streamed completion read with requests (every byte, or only the first line when close_early)."""
    body = {"model": MODEL_NAME, "messages": [{"role": "user", "content": text}], "stream": True}
    with requests.post(f"{url}/chat/completions", json=body, stream=True, timeout=60) as response:
        assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/event-stream")
        if close_early:
            return next(response.iter_lines())
        return response.content.decode("utf-8")


def test_mixed_load_every_request_is_answered_once_and_right(torchserve, client, serving_chatbot):
    """Streamed, non-streamed and JSON API requests at once (batched together by TorchServe), and streams whose
    clients hang up after the first event: every other request gets its one right answer."""
    expected = {text: serving_chatbot.reply(text).text for text in TEXTS}
    jobs = []
    with ThreadPoolExecutor(16) as pool:
        for _ in range(6):
            for text in TEXTS:
                jobs.append(("stream", text, pool.submit(raw_stream, torchserve.openai_url, text)))
                jobs.append(("sdk", text, pool.submit(lambda t=text: ask(client, t).choices[0].message.content)))
                jobs.append(("json", text, pool.submit(lambda t=text: requests.post(
                    torchserve.predictions_url, json={"text": t}, timeout=60).json()["reply"])))
                jobs.append(("hang-up", text, pool.submit(raw_stream, torchserve.openai_url, text, True)))
    for kind, text, job in jobs:
        result = job.result()
        if kind == "stream":
            events = [block[6:] for block in result.split("\n\n") if block]
            assert events[-1] == "[DONE]" and events.count("[DONE]") == 1, result
            chunks = [json.loads(e) for e in events[:-1]]
            assert sum(1 for c in chunks if c["choices"][0]["finish_reason"]) == 1
            assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == expected[text]
        elif kind in ("sdk", "json"):
            assert result == expected[text], kind
    assert torchserve.batches_of_more_than_one(above=0) > 0
    assert ask(client, "how are you ?").choices[0].message.content == expected["how are you ?"]
    log = (torchserve.workdir / "logs" / "ts_log.log").read_text()
    assert "Backend worker process died" not in log


def test_this_routes_requests_are_counted_like_the_others(torchserve, client):
    def decoded() -> float:
        return sum(torchserve.metric_values("seq2seq_requests_decoded_total").values())

    time.sleep(METRICS_INTERVAL_S + 0.3)  # the worker hands its counters over within the interval: earlier ones first
    before = decoded()
    ask(client, "how are you ?")
    streamed_text(client, "how are you ?")
    # then the frontend reads them from the worker's log as they come: the last one can follow the reply
    deadline = time.monotonic() + 10
    while decoded() < before + 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(METRICS_INTERVAL_S + 0.3)  # and nothing more comes
    assert decoded() == before + 2


def test_the_benchmarks_cases_and_first_token_timing_judge_this_route(torchserve, serving_chatbot):
    """bench.serve_bench's openai scenario: its cases are judged right by harness.load, a wrong expected reply is
    judged wrong, and a timed stream's deltas join to the reply."""
    from bench.serve_bench import chat_cases, first_token
    from harness.load import send

    url = f"{torchserve.openai_url}/chat/completions"
    expected = {text: serving_chatbot.reply(text).text for text in TEXTS}
    with requests.Session() as session:
        assert all(send(session, url, case).correct for case in chat_cases(expected))
        assert not send(session, url, chat_cases({TEXTS[0]: "not the reply"})[0]).correct
        for case in chat_cases(expected, stream=True):
            ms, right = first_token(session, url, case)
            assert right and 0 < ms < 10_000
