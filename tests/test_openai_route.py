"""The OpenAI Chat Completions route in-process: TorchServe's own worker code frames the requests (url_path header,
as the frontend sets it) and decodes what the handler streams. The real server and the official SDK are in
test_openai_sdk.py; here, the wire details the SDK hides.
"""
from __future__ import annotations

import json
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from worker import json_request, request, run_batch, start_handler

from model import load_chatbot
from model.schema import DecodeOptions
from tools.server_config import MODEL_NAME

CHAT = {"url_path": "v1/chat/completions"}


def chat(body: object) -> dict:
    """A batch entry POSTed to .../v1/chat/completions."""
    return request(json.dumps(body), "application/json", headers=CHAT)


def ask(text: str, **fields) -> dict:
    return chat({"model": MODEL_NAME, "messages": [{"role": "user", "content": text}], **fields})


def events(body: str) -> list:
    """The server-sent events of a stream: parsed JSON, and the closing '[DONE]'."""
    blocks = [block for block in body.split("\n\n") if block]
    assert all(block.startswith("data: ") and "\n" not in block for block in blocks), body
    return [block[6:] if block == "data: [DONE]" else json.loads(block[6:]) for block in blocks]


@pytest.fixture
def handler(tmp_path, serving_checkpoint):
    shutil.copy(serving_checkpoint, tmp_path / "1_checkpoint.tar")
    return start_handler(tmp_path)


@pytest.fixture
def bpe_handler(tmp_path, bpe_checkpoint):
    shutil.copy(bpe_checkpoint, tmp_path / "1_checkpoint.tar")
    return start_handler(tmp_path)


def test_a_completion_is_the_json_apis_reply_with_openais_fields(handler, serving_chatbot):
    completion, plain = run_batch(handler, [ask("how are you ?"), json_request({"text": "how are you ?"})])
    body = completion.json()
    assert completion.status == 200 and completion.content_type == "application/json"
    assert body["object"] == "chat.completion" and body["model"] == MODEL_NAME and body["id"].startswith("chatcmpl-")
    [choice] = body["choices"]
    assert choice["message"] == {"role": "assistant", "content": plain.json()["reply"], "refusal": None}
    reply = serving_chatbot.reply("how are you ?")
    ended = reply.token_ids[0][-1] == 2  # EOS
    assert choice["finish_reason"] == ("stop" if ended else "length")
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": len(reply.token_ids[0]),
                             "total_tokens": 5 + len(reply.token_ids[0])}  # how, are, you, ? and EOS


def test_only_the_last_user_message_is_answered(handler):
    history = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "good night !"},
               {"role": "assistant", "content": "i am fine ."}, {"role": "user", "content": [
                   {"type": "text", "text": "where are you going ?"}]}]
    turns, alone = run_batch(handler, [chat({"model": MODEL_NAME, "messages": history}), ask("where are you going ?")])
    assert turns.json()["choices"] == alone.json()["choices"]


def test_n_without_sampling_is_the_n_best_beams_and_temperature_0_is_greedy(handler, serving_chatbot):
    three, greedy = run_batch(handler, [ask("hello there .", n=3), ask("hello there .", temperature=0, top_p=1)])
    beams = serving_chatbot.reply("hello there .", DecodeOptions(max_length=10, beam_size=3, num_replies=3))
    assert [c["message"]["content"] for c in three.json()["choices"]] == [text for text, _ in beams.replies]
    assert greedy.json()["choices"][0]["message"]["content"] == serving_chatbot.reply("hello there .").text


def test_a_streamed_reply_joins_to_the_same_reply_in_the_same_batch_as_the_others(handler):
    seeded = {"temperature": 0.9, "seed": 7, "max_completion_tokens": 8}
    entries = [ask("how are you ?", stream=True, **seeded), ask("how are you ?", **seeded),
               json_request({"text": "how are you ?"}), ask("hello there .", stream=True, n=2,
                                                            stream_options={"include_usage": True})]
    responses = run_batch(handler, entries)
    streamed, plain, json_api, beams = responses
    assert [r.status for r in responses] == [200] * 4
    assert not plain.pieces and not json_api.pieces  # one response each
    assert streamed.content_type.startswith("text/event-stream")
    found = events(streamed.streamed)
    assert found[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""} and found[-1] == "[DONE]"
    deltas = [e["choices"][0]["delta"]["content"] for e in found[1:-2]]
    assert all(deltas) and "".join(deltas) == plain.json()["choices"][0]["message"]["content"]
    assert len(streamed.pieces) == 1 + len(deltas)  # the role, then each token sent as it was chosen
    assert found[-2]["choices"][0]["finish_reason"] == plain.json()["choices"][0]["finish_reason"]
    beam_events = events(beams.streamed)
    assert beam_events[-2]["usage"]["total_tokens"] > 0 and beam_events[-2]["choices"] == []
    for i in (0, 1):
        mine = [e["choices"][0] for e in beam_events[:-2] if e["choices"][0]["index"] == i]
        assert mine[0]["delta"]["role"] == "assistant" and mine[-1]["finish_reason"] in ("stop", "length")
        assert "".join(c["delta"].get("content", "") for c in mine)


def test_a_byte_level_stream_never_splits_a_character(bpe_handler, bpe_checkpoint):
    bot = load_chatbot(bpe_checkpoint, quantize="int8")
    for seed in range(12):
        options = {"temperature": 1.5, "seed": seed, "max_completion_tokens": 12}
        streamed, plain = run_batch(bpe_handler, [ask("你好，世界 🙂", stream=True, **options),
                                                  ask("你好，世界 🙂", **options)])
        deltas = [e["choices"][0]["delta"].get("content", "") for e in events(streamed.streamed)[:-1]]
        assert "".join(deltas) == plain.json()["choices"][0]["message"]["content"]
        assert all("\ufffd" not in d for d in deltas)
        raw = "".join(streamed.pieces).encode("utf-8")  # each piece was whole characters (no surrogate escapes)
        assert raw.decode("utf-8") == "".join(streamed.pieces)
    assert bot.voc.kind == "bpe"


def test_a_requested_maximum_above_the_models_limit_is_clamped_and_usage_stays_exact(handler, serving_chatbot):
    limit = handler.core.limits["max_length"]
    big, at_limit = run_batch(handler, [ask("how are you ?", max_tokens=2048),
                                        json_request({"text": "how are you ?", "max_length": limit})])
    reply = serving_chatbot.reply("how are you ?", DecodeOptions(max_length=limit))
    [choice] = big.json()["choices"]
    assert choice["message"]["content"] == at_limit.json()["reply"] == reply.text
    assert choice["finish_reason"] == ("stop" if reply.token_ids[0][-1] == 2 else "length")
    assert big.json()["usage"]["completion_tokens"] == len(reply.token_ids[0]) <= limit


def test_top_p_1_alone_is_still_greedy_and_a_temperature_samples(handler, serving_chatbot):
    top_p, seeded, plain = run_batch(handler, [ask("hello there .", top_p=1, max_tokens=10),
                                               ask("hello there .", temperature=0.7, top_p=1, seed=5),
                                               ask("hello there .")])
    assert top_p.json()["choices"] == plain.json()["choices"]
    sampled = serving_chatbot.reply("hello there .", DecodeOptions(temperature=0.7, seed=5))
    assert seeded.json()["choices"][0]["message"]["content"] == sampled.text


def test_penalties_reach_the_decode(handler, serving_chatbot):
    options = {"presence_penalty": 1.5, "frequency_penalty": 2.0}
    penalized, plain = run_batch(handler, [ask("where are you going ?", **options), ask("where are you going ?")])
    reference = serving_chatbot.reply("where are you going ?", DecodeOptions(**options))
    assert penalized.json()["choices"][0]["message"]["content"] == reference.text
    assert reference.text != plain.json()["choices"][0]["message"]["content"]  # 'am am am ...' without them


def first_words(handler, text: str) -> tuple[str, str]:
    """(the greedy reply, a stop string: its second word with the space before it)."""
    reply = run_batch(handler, [ask(text)])[0].json()["choices"][0]["message"]["content"]
    return reply, " " + reply.split()[1]


def test_a_stop_string_ends_the_reply_before_it_with_finish_reason_stop(handler, serving_chatbot):
    reply, stop = first_words(handler, "what is your name ?")
    cut, listed, absent = run_batch(handler, [ask("what is your name ?", stop=stop),
                                              ask("what is your name ?", stop=["zzz", stop]),
                                              ask("what is your name ?", stop="zzz")])
    expected = reply[:reply.find(stop)]
    for response in (cut, listed):
        [choice] = response.json()["choices"]
        assert (choice["message"]["content"], choice["finish_reason"]) == (expected, "stop")
        assert response.json()["usage"]["completion_tokens"] == 2  # the first word, then the one that completed stop
    assert absent.json()["choices"][0]["message"]["content"] == reply


def test_a_streamed_stop_never_sends_what_it_removes(handler):
    reply, stop = first_words(handler, "what is your name ?")
    for fields in ({}, {"n": 2}, {"temperature": 0.9, "seed": 3}):
        streamed, plain = run_batch(handler, [ask("what is your name ?", stream=True, stop=[stop, stop[:2] + "zz"],
                                                  **fields),
                                              ask("what is your name ?", stop=[stop, stop[:2] + "zz"], **fields)])
        found = events(streamed.streamed)
        for choice in plain.json()["choices"]:
            mine = [e["choices"][0] for e in found[:-1] if e["choices"][0]["index"] == choice["index"]]
            assert "".join(c["delta"].get("content", "") for c in mine) == choice["message"]["content"]
            assert mine[-1]["finish_reason"] == choice["finish_reason"]
        assert stop not in "".join(streamed.pieces)


def test_every_completion_says_which_turn_the_model_read(handler):
    history = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
               {"role": "user", "content": "how are you ?"}]
    plain, streamed = run_batch(handler, [chat({"model": MODEL_NAME, "messages": history}),
                                          ask("how are you ?", stream=True)])
    assert plain.headers["X-Context-Used"] == streamed.sent_headers["X-Context-Used"] == "last-user-message"


def test_an_unknown_field_is_accepted_and_logged_once_by_name_never_value(handler, caplog):
    from serving import openai_api
    openai_api._logged_unknown.clear()
    with caplog.at_level("WARNING", logger="serving.openai_api"):
        first, second = run_batch(handler, [ask("how are you ?", future_knob="secret-value-1"),
                                            ask("how are you ?", future_knob="secret-value-2",
                                                stream=True, stream_options={"include_usage": True, "later": 1})])
    assert first.status == second.status == 200
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert sum("future_knob" in w for w in warnings) == 1 and sum("later" in w for w in warnings) == 1
    assert not any("secret-value" in w for w in warnings)


@given(text=st.text("ab .", max_size=24), cuts=st.lists(st.integers(0, 24), max_size=8),
       stops=st.lists(st.text("ab .", min_size=1, max_size=4), max_size=4))
def test_a_stop_filter_sends_the_text_cut_at_the_first_stop_and_never_more(text, cuts, stops):
    """Fed any text in any pieces, what the filter sends is always a beginning of the reply generation would have
    given: after the first piece whose text so far holds a stop string, that text cut before the first one it holds
    (str.find is the reference); and all of it once finished."""
    from serving import openai_api
    bounds = sorted({0, len(text), *(c for c in cuts if c <= len(text))})
    final = text
    for b in bounds[1:]:
        at = [i for i in (text[:b].find(s) for s in stops) if i >= 0]
        if at:
            final = text[:min(at)]
            break
    stop, sent = openai_api.StopFilter(tuple(stops)), ""
    for a, b in zip(bounds, bounds[1:]):
        sent += stop.push(text[a:b])
        assert final.startswith(sent)
    assert sent + stop.finish(final) == final


@pytest.mark.parametrize("fields, status, param, code", [
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, 400, "tools", "InvalidOption"),
    ({"logit_bias": {"5": 10}}, 400, "logit_bias", "InvalidOption"),
    ({"response_format": {"type": "json_object"}}, 400, "response_format", "InvalidOption"),
    ({"stop": ["a", "b", "c", "d", "e"]}, 400, "stop", "InvalidOption"),
    ({"stop": 5}, 400, "stop", "InvalidOption"),
    ({"presence_penalty": 2.5}, 400, "presence_penalty", "InvalidOption"),
    ({"frequency_penalty": "high"}, 400, "frequency_penalty", "InvalidOption"),
    ({"logprobs": True}, 400, "logprobs", "InvalidOption"),
    ({"modalities": ["text", "audio"]}, 400, "modalities", "InvalidOption"),
    ({"n": 0}, 400, "n", "InvalidOption"),
    ({"max_tokens": 0}, 400, "max_tokens", "InvalidOption"),  # named as the client sent it
    ({"max_completion_tokens": 0}, 400, "max_completion_tokens", "InvalidOption"),
    ({"temperature": -1}, 400, "temperature", "InvalidOption"),
    ({"stream_options": {"include_usage": True}}, 400, "stream_options", "InvalidOption"),
    ({"model": "gpt-4o"}, 404, "model", "NotFound"),
    ({"model": None}, 400, "model", "InvalidOption"),
    ({"messages": []}, 400, "messages", "MissingText"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, 400,
     "messages[0].content[0]", "InvalidOption"),
    ({"messages": [{"role": "assistant", "content": "hi"}]}, 400, "messages[0]", "MissingText"),
    ({"messages": [{"role": "user", "content": "zorblax"}]}, 422, None, "NoKnownWords"),
    ({"messages": [{"role": "user", "content": "  "}]}, 400, None, "EmptyInput"),
    ({"frequency_penalty": 0, "logprobs": False, "user": "u1", "store": False}, 200, None, None),  # ask for nothing
    ({"safety_identifier": "u1", "prompt_cache_key": "k", "prompt_cache_retention": "24h", "verbosity": "low",
      "metadata": {"a": "b"}, "store": True, "service_tier": "flex", "reasoning_effort": "low",
      "parallel_tool_calls": True, "modalities": ["text"], "tool_choice": "none",
      "stream": True, "stream_options": {"include_usage": True, "include_obfuscation": False}}, 200, None, None),
    ({"frobnicate": 1, "max_tokens": 4096, "stop": ["\n"], "presence_penalty": 1.5}, 200, None, None),
])
def test_what_the_route_cannot_honour_is_an_openai_error_and_costs_the_batch_nothing(handler, fields, status, param,
                                                                                     code):
    body = {"model": MODEL_NAME, "messages": [{"role": "user", "content": "how are you ?"}], **fields}
    refused, other = run_batch(handler, [chat(body), ask("how are you ?")])
    assert other.status == 200 and refused.status == status, refused.body
    assert refused.headers["X-Context-Used"] == "last-user-message"  # on every response of the route, errors too
    if code:
        error = refused.json()["error"]
        assert (error["param"], error["code"], error["type"]) == (param, code, "invalid_request_error")
        assert error["message"].startswith(f"{param}: ") if param else error["message"]


def test_top_p_0_is_accepted_as_greedy_search(handler, serving_chatbot):
    """OpenAI takes top_p in [0, 1]: 0 keeps the likeliest token alone, which is greedy search."""
    body = {"model": MODEL_NAME, "messages": [{"role": "user", "content": "how are you ?"}], "top_p": 0,
            "temperature": 0.9}
    [reply] = run_batch(handler, [chat(body)])
    assert reply.status == 200, reply.body
    assert reply.json()["choices"][0]["message"]["content"] == serving_chatbot.reply("how are you ?").text


def test_models_and_unknown_paths(handler):
    models, unknown, plain = run_batch(handler, [request(None, headers={"url_path": "v1/models"}),
                                                 request("hi", "text/plain", headers={"url_path": "v1/embeddings"}),
                                                 request("how are you ?", "text/plain", headers={"url_path": ""})])
    assert models.json()["data"][0]["id"] == MODEL_NAME and models.json()["object"] == "list"
    assert unknown.status == 404 and unknown.json()["error"]["code"] == "NotFound"
    assert plain.status == 200 and plain.content_type.startswith("text/plain")


def test_a_stream_whose_batch_decode_fails_still_ends_once_and_the_others_are_answered(handler, monkeypatch):
    """A batched decode that raises is retried request by request (nothing more is streamed then): a streamed greedy
    reply is the same, so its rest is sent; the poisoned request alone gets its error."""
    bad_ids = handler.core.chatbot.encode("what is your name ?").ids
    generate = handler.core.chatbot.generate

    def failing(batch, options, *listener):
        if bad_ids in batch:
            raise RuntimeError("boom")
        return generate(batch, options, *listener)

    expected = run_batch(handler, [ask("how are you ?")])[0].json()["choices"][0]["message"]["content"]
    monkeypatch.setattr(handler.core.chatbot, "generate", failing)
    streamed, poisoned, plain = run_batch(handler, [ask("how are you ?", stream=True), ask("what is your name ?"),
                                                    request("good night !", "text/plain")])
    found = events(streamed.streamed)
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in found[:-1]) == expected
    assert found[-2]["choices"][0]["finish_reason"] in ("stop", "length") and found[-1] == "[DONE]"
    assert poisoned.status == 500 and poisoned.json()["error"]["type"] == "server_error"
    assert plain.status == 200


def test_what_the_input_lost_is_in_the_headers_a_stream_sends_first(handler):
    streamed, plain = run_batch(handler, [ask("zorblax how are you ?", stream=True), ask("zorblax how are you ?")])
    assert streamed.sent_headers["X-Unknown-Words"] == plain.headers["X-Unknown-Words"] == "zorblax"


def test_a_chat_body_sent_as_a_form_is_told_to_send_json(handler):
    """curl -d '{...}' without -H sends a form, whose fields the frontend takes apart: no body reaches the handler."""
    [form] = run_batch(handler, [request(None, request_type="application/x-www-form-urlencoded", headers=CHAT)])
    assert form.status == 415 and "Content-Type: application/json" in form.json()["error"]["message"]


# ---------------------------------------------------------------- fuzzing the route: what any body gets

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 2**64) | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8)
KNOWN = ["model", "messages", "max_completion_tokens", "max_tokens", "n", "temperature", "top_p", "seed", "stream",
         "stream_options", "user", "beam_size", "top_k", "no_repeat_ngram_size", "min_length", "tools", "logit_bias",
         "stop", "response_format", "logprobs", "presence_penalty", "frequency_penalty", "safety_identifier",
         "modalities", "frobnicate"]
PLAUSIBLE = {"stream": st.booleans(), "n": st.integers(1, 3), "temperature": st.floats(0, 2),
             "top_p": st.floats(0.1, 1), "seed": st.integers(0, 2**32), "max_completion_tokens": st.integers(1, 20),
             "beam_size": st.integers(1, 4), "top_k": st.integers(1, 5), "no_repeat_ngram_size": st.integers(0, 3),
             "min_length": st.integers(1, 4), "stream_options": st.just({"include_usage": True}),
             "stop": st.lists(st.sampled_from(["?", ".", "you", " a", "xyz"]), max_size=4),
             "presence_penalty": st.floats(-2, 2), "frequency_penalty": st.floats(-2, 2),
             "max_tokens": st.integers(1, 5000)}
MESSAGES = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant", "tool", "x"]),
                                           "content": st.text(max_size=60) | JSON_VALUES}), max_size=3)
LAST = st.fixed_dictionaries({"role": st.just("user"),
                              "content": st.sampled_from(["how are you ?", "hello there .", "good night !"])})
CHAT_BODIES = st.builds(lambda fields, plausible, messages, model: {"model": model, "messages": messages,
                                                                   **fields, **plausible},
                        st.just({}) | st.dictionaries(st.sampled_from(KNOWN), JSON_VALUES, max_size=2),
                        st.fixed_dictionaries({}, optional=PLAUSIBLE),
                        st.builds(lambda head, last: head + [last], MESSAGES, LAST) | MESSAGES,
                        st.sampled_from([MODEL_NAME, MODEL_NAME, MODEL_NAME, "gpt-4o", None]))
PATHS = st.sampled_from(["v1/chat/completions", "v1/chat/completions", "/v1/chat/completions/", "v1/models",
                         "v1/completions", "", "v1"]) | st.text(max_size=12)


@pytest.fixture(scope="module")
def fuzz_handler(serving_checkpoint, tmp_path_factory):
    """float32 weights: the fuzzing is about parsing; unquantised decoding keeps thousands of batches fast."""
    model_dir = tmp_path_factory.mktemp("route-fuzz")
    shutil.copy(serving_checkpoint, model_dir / "1_checkpoint.tar")
    return start_handler(model_dir, quantize=False)


def assert_answered(response, path: str) -> None:
    """200 (a completion, a stream ending in [DONE], the model list or a JSON API reply) or a 4xx in the shape of
    its route; never a 500, which would mean our code failed on a request."""
    assert response.status == 200 or 400 <= response.status < 500, (path, response)
    if response.content_type.startswith("text/event-stream"):
        assert events(response.streamed)[-1] == "[DONE]" and "error" not in response.streamed
    elif response.status != 200 and path.strip("/").startswith("v1/"):
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}


@given(body=CHAT_BODIES | JSON_VALUES, path=PATHS)
@settings(max_examples=600, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
def test_fuzz_any_body_on_any_path_is_answered_and_costs_the_batch_nothing(fuzz_handler, body, path):
    good = ask("how are you ?", stream=True)
    alone = run_batch(fuzz_handler, [ask("how are you ?")])[0].json()["choices"][0]["message"]["content"]
    fuzzed = request(json.dumps(body), "application/json", headers={"url_path": path})
    first, second, plain = run_batch(fuzz_handler, [fuzzed, good, request("how are you ?", "text/plain")])
    assert_answered(first, path)
    joined = "".join(e["choices"][0]["delta"].get("content", "") for e in events(second.streamed)[:-1])
    assert joined == alone and plain.status == 200


def test_the_readmes_field_table_is_the_routes():
    """Every field of openai_api.FIELDS is listed under its policy in the README's table, and nothing else is."""
    import re

    from harness.launcher import REPO
    from serving import openai_api
    listed = {}
    for line in (REPO / "README.md").read_text().splitlines():
        row = re.match(r"\| (honoured|ignored|refused) \| ([^|]+) \|", line)
        if row:
            for name in re.findall(r"`(\w+)`", row.group(2)):
                listed[name] = row.group(1)
    assert listed == {name: field.policy for name, field in openai_api.FIELDS.items()}


def test_a_streamed_request_leaves_the_others_of_its_batch_on_the_compiled_greedy_loop(handler, monkeypatch):
    """Only the streamed row needs a per-token hook: the greedy rows beside it keep the compiled loop (a search
    called without a listener), and every reply is what it is alone."""
    from model import decoding

    entries = [ask("how are you ?", stream=True), json_request({"text": "how are you ?"}),
               json_request({"text": "what is your name ?"})]
    alone = [run_batch(handler, [entry])[0].body for entry in entries]
    calls = []
    search = decoding.SEARCHES["greedy"]
    monkeypatch.setitem(decoding.SEARCHES, "greedy", lambda *a, **k: calls.append(
        (len(a[4]), a[7] is not None)) or search(*a, **k))
    together = run_batch(handler, entries)
    assert sorted(calls) == [(1, True), (2, False)]  # the streamed row alone with its listener; two compiled rows
    assert [r.json() for r in together[1:]] == [json.loads(body) for body in alone[1:]]
    assert [e["choices"][0]["delta"].get("content") for e in events(together[0].streamed)[1:-1]
            if e["choices"]] == [e["choices"][0]["delta"].get("content") for e in events(
                run_batch(handler, [entries[0]])[0].streamed)[1:-1] if e["choices"]]
