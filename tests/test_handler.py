"""The TorchServe handler in-process: TorchServe's own Context, request decoding and batching code, no server
(tests/worker.py frames and batches the requests as the frontend and worker do).
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import pytest
import torch
from torch.ao.nn.quantized.dynamic import GRU as QuantizedGRU
from ts.protocol.otf_message_handler import create_predict_response
from ts.service import Service
from ts.utils.util import list_classes_from_module
from worker import FORM, flush_started_metrics, json_request, make_context, request, run_batch, start_handler

from handler import seq2seq_handler
from model import load_chatbot
from model.int8 import Int8GRU


@pytest.fixture
def model_dir(tmp_path, serving_checkpoint) -> Path:
    shutil.copy(serving_checkpoint, tmp_path / "1_checkpoint.tar")
    return tmp_path


@pytest.fixture
def handler(model_dir):
    return start_handler(model_dir)


def test_module_defines_exactly_one_class_as_torchserve_requires():
    assert list_classes_from_module(seq2seq_handler) == [seq2seq_handler.Seq2seqHandler]


GOOD = ["hello there !", "how are you ?", "What is your NAME?", "where do you live ?"]


def test_mixed_batch_answers_each_request_on_its_own(handler, serving_chatbot):
    too_long = "hello " * 200  # 1,200 characters
    entries = [
        request(GOOD[0]),                                                    # curl -T: no content type
        request(GOOD[1], "text/plain"),
        json_request({"text": GOOD[2]}),
        request(json.dumps({"text": GOOD[3]}), "application/json; charset=utf-8"),
        request(""),
        request(" \n\t ", "text/plain"),
        request(b"\xff\xfehello", "text/plain"),
        request(b"hello \xc3", ""),
        request('{"text": "hello', "application/json"),
        json_request({"txt": "hello"}),
        json_request({"text": 42}),
        json_request(["hello"]),
        request(too_long),
        request("zorblax quuxly", "text/plain"),
        request(None, request_type=FORM),                                    # curl --data-binary "hi"
        request(GOOD[1], field="text"),                                      # curl -d "text=how are you ?"
    ]
    responses = run_batch(handler, entries)

    expected_errors = {4: (400, "EmptyInput"), 5: (400, "EmptyInput"), 6: (400, "InvalidEncoding"),
                       7: (400, "InvalidEncoding"), 8: (400, "MalformedJSON"), 9: (400, "MissingText"),
                       10: (400, "MissingText"), 11: (400, "MissingText"), 12: (413, "InputTooLong"),
                       13: (422, "NoKnownWords"), 14: (415, "UnsupportedMediaType")}
    for idx, (status, kind) in expected_errors.items():
        response = responses[idx]
        assert (response.status, response.content_type) == (status, "application/json"), idx
        error = response.json()
        assert (error["code"], error["type"]) == (status, kind)
        assert error["message"]
    assert responses[13].json()["unknown_words"] == ["zorblax", "quuxly"]

    for idx, text in ((0, GOOD[0]), (1, GOOD[1]), (15, GOOD[1])):
        assert (responses[idx].status, responses[idx].content_type) == (200, "text/plain; charset=utf-8")
        assert responses[idx].body == serving_chatbot.reply(text).text + "\n"
    for idx, text in ((2, GOOD[2]), (3, GOOD[3])):
        assert (responses[idx].status, responses[idx].content_type) == (200, "application/json")
        reference = serving_chatbot.reply(text)
        assert responses[idx].json() == {"reply": reference.text, "score": round(reference.score, 4),
                                         "unknown_words": [], "truncated": False}


def test_the_good_requests_of_a_batch_are_decoded_in_one_call(handler, monkeypatch):
    calls = []
    generate = handler.core.chatbot.generate
    monkeypatch.setattr(handler.core.chatbot, "generate", lambda batch, options, *listener: calls.append(batch) or
                        generate(batch, options, *listener))
    run_batch(handler, [request(GOOD[0]), request(""), json_request({"text": GOOD[1]}), request("zorblax")])
    assert calls == [[handler.core.chatbot.encode(GOOD[0]).ids, handler.core.chatbot.encode(GOOD[1]).ids]]


def test_a_reply_in_a_batch_equals_the_reply_alone(handler):
    texts = [f"{a} {b}" for a in ("hello", "i am", "do you") for b in ("there !", "live ?", "like music ?")]
    batched = [r.body for r in run_batch(handler, [request(t) for t in texts])]
    alone = [run_batch(handler, [request(t)])[0].body for t in texts]
    assert batched == alone
    assert len(set(batched)) > 1, "the tiny model should not answer everything alike"


def test_unknown_words_are_reported_and_dropped(handler, serving_chatbot):
    raw, as_json = run_batch(handler, [request("hello zorblax there !"), json_request({"text": "hello zorblax"})])
    assert raw.headers["X-Unknown-Words"] == "zorblax"
    assert raw.body == serving_chatbot.reply("hello there !").text + "\n" != "\n"
    assert as_json.json()["unknown_words"] == ["zorblax"]
    assert "X-Unknown-Words" not in run_batch(handler, [request("hello there !")])[0].headers


@pytest.mark.parametrize("length, status", [(1000, 200), (1001, 413)])
def test_the_length_limit_is_1000_characters(handler, length, status):
    text = ("hello " * 200)[: length - 1] + "!"
    assert run_batch(handler, [request(text)])[0].status == status


def test_the_length_limit_comes_from_the_model_config(model_dir):
    handler = start_handler(model_dir, max_chars=12)
    assert [r.status for r in run_batch(handler, [request("hello there"), request("hello there !!")])] == [200, 413]


def test_user_text_is_never_logged_above_debug(handler, caplog):
    with caplog.at_level(logging.DEBUG):
        run_batch(handler, [request("hello zorblax"), json_request({"text": "qwertzuiop"}), request("hello " * 300)])
    assert any("zorblax" in r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)
    for record in caplog.records:
        if record.levelno >= logging.INFO:
            assert "zorblax" not in record.getMessage() and "qwertzuiop" not in record.getMessage()


def test_custom_metrics_are_emitted_with_declared_dimensions(handler, caplog):
    flush_started_metrics()  # earlier tests' handlers: on a busy machine their timers fired inside this capture
    with caplog.at_level(logging.INFO, logger="ts.metrics.caching_metric"):
        run_batch(handler, [request("hello zorblax"), request(""), request(""), request("zorblax")])
        handler.core.metrics.flush()  # counters are summed and handed over within metrics_interval_s
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("[METRICS]")]

    def value(prefix: str) -> float:
        return sum(float(line.split(":", 1)[1].split("|")[0]) for line in lines if line.startswith(prefix))

    assert value("[METRICS]seq2seq_requests_decoded_total.Count:") == 1
    assert value("[METRICS]seq2seq_unknown_words_total.Count:") == 2
    assert any("seq2seq_bad_requests_total" in ln and "Reason:EmptyInput" in ln for ln in lines)
    assert value("[METRICS]seq2seq_bad_requests_total.Count:") == 3
    assert value("[METRICS]seq2seq_batch_size_sum.Requests:") == 1  # empty or all-unknown texts never reach the decoder
    buckets = {line.split("le:")[1].split(",")[0].split("|")[0]: float(line.split(":", 1)[1].split("|")[0])
               for line in lines if line.startswith("[METRICS]seq2seq_batch_size_bucket.Count:")}
    assert buckets == {"1": 1, "2": 1, "4": 1, "8": 1, "16": 1, "32": 1, "+Inf": 1}  # a batch of 1: cumulative
    assert value("[METRICS]seq2seq_reply_words_sum.Words:") == len(handler.core.chatbot.reply("hello").text.split())
    assert not [r for r in caplog.records if "Failed to update metric" in r.getMessage()]


def test_uses_the_cpu_when_cuda_is_unavailable_even_with_a_gpu_id(model_dir, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    handler = seq2seq_handler.Seq2seqHandler()
    handler.initialize(make_context(model_dir, gpu=0))
    assert handler.device == torch.device("cpu")


@pytest.mark.parametrize("quantize, gru_type", [(True, Int8GRU), ("int8", Int8GRU), ("fp16", QuantizedGRU)])
def test_quantize_option_serves_the_quantized_model(model_dir, serving_checkpoint, quantize, gru_type):
    plain = start_handler(model_dir, quantize=False)
    quantized = start_handler(model_dir, quantize=quantize)
    assert isinstance(plain.core.chatbot.encoder.gru, torch.nn.GRU)
    assert isinstance(quantized.core.chatbot.encoder.gru, gru_type)
    reference = load_chatbot(torch.load(serving_checkpoint, weights_only=True), quantize=quantize)
    texts = ["hello there", "how are you ?", "do you like music ?"]
    assert [r.body for r in run_batch(quantized, [request(t) for t in texts])] == \
        [r.text + "\n" for r in reference.reply_batch(texts)]


@pytest.mark.parametrize("options, alone, batched", [({}, 1, 1), ({"threads": 1, "threads_alone": 2}, 2, 1)])
def test_a_lone_request_gets_threads_alone_and_a_batch_gets_threads(model_dir, monkeypatch, options, alone, batched):
    """The shipped default gives a lone request no extra threads (see threads_alone in model-config.yaml)."""
    handler = start_handler(model_dir, **options)
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    run_batch(handler, [request(GOOD[0])])
    run_batch(handler, [request(GOOD[0]), request(GOOD[1])])
    assert calls == [alone, batched]


# ---------------------------------------------------------------- request isolation


@pytest.mark.parametrize("name, entry, status, kind", [
    ("JSON nested past the recursion limit", request("[" * 50_000, "application/json"), 400, "MalformedJSON"),
    ("the same, with a charset", request('{"text": ' + "[" * 50_000, "application/json; charset=utf-8"), 400,
     "MalformedJSON"),
    ("a multipart part of deep JSON", request("[" * 50_000, "application/json", field="data"), 400, "MalformedJSON"),
    ("an unpaired surrogate", request('{"text": "hello \\ud800"}', "application/json"), 400, "InvalidEncoding"),
    ("an unknown charset", request("hello", "text/plain; charset=x-nope"), 415, "UnsupportedMediaType"),
    ("a describe: True header", request("hello there !", "text/plain", headers={"describe": "True"}), 200, None),
    ("an explain: True header", request("hello there !", "text/plain", headers={"explain": "True"}), 200, None),
])
def test_a_hostile_request_first_in_its_batch_costs_the_others_nothing(handler, name, entry, status, kind):
    """TorchServe fails a whole batch with 503 when the handler raises or returns the wrong number of bodies."""
    alone = [run_batch(handler, [request(text)])[0].body for text in GOOD]
    responses = run_batch(handler, [entry, *[request(text) for text in GOOD]])
    assert [r.body for r in responses[1:]] == alone, name
    assert responses[0].status == status, name
    if kind:
        assert responses[0].json()["type"] == kind


@pytest.mark.parametrize("charset, encoding", [("latin-1", "latin-1"), ("utf-16", "utf-16"), ("cp1252", "cp1252"),
                                               ("utf-8", "utf-8-sig")])
def test_a_text_body_is_read_in_its_declared_charset(handler, charset, encoding):
    text = "Hello caf\u00e9, how are you ?"
    declared = run_batch(handler, [request(text.encode(encoding), f"text/plain; charset={charset}")])[0]
    assert (declared.status, declared.body) == (200, run_batch(handler, [request(text)])[0].body)
    assert declared.headers["X-Unknown-Words"] == "cafe"  # accents stripped as the tutorial does: decoded right


def fail(error: Exception):
    raise error


def poison(handler, monkeypatch, bad_text: str, where: str):
    """Make the chatbot's batched decode (where="decode") or encode (where="encode") raise on `bad_text`."""
    bad_ids = handler.core.chatbot.encode(bad_text).ids
    if where == "decode":
        bot = handler.core.chatbot
        generate = bot.generate
        monkeypatch.setattr(bot, "generate", lambda batch, options, *listener: fail(RuntimeError("boom"))
                            if bad_ids in batch else generate(batch, options, *listener))
    else:
        encode = handler.core.chatbot.encode
        monkeypatch.setattr(handler.core.chatbot, "encode", lambda text, *turns: fail(KeyError(text))
                            if text == bad_text else encode(text, *turns))


@pytest.mark.parametrize("where", ["encode", "decode"])
def test_an_exception_we_did_not_foresee_fails_only_its_own_request(handler, monkeypatch, caplog, where):
    alone = [run_batch(handler, [request(text)])[0].body for text in GOOD]
    poison(handler, monkeypatch, "what is your name", where)
    with caplog.at_level(logging.INFO, logger="ts.metrics.caching_metric"):
        responses = run_batch(handler, [request(GOOD[0]), request("what is your name"), *map(request, GOOD[1:])])
        handler.core.metrics.flush()
    assert [r.body for i, r in enumerate(responses) if i != 1] == alone
    error = responses[1].json()
    assert (responses[1].status, error["type"]) == (500, "InternalError") and "other requests" in error["message"]
    fallbacks = [r.getMessage() for r in caplog.records if "seq2seq_decode_fallbacks_total" in r.getMessage()]
    assert len(fallbacks) == (where == "decode")
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "what is your name" not in caplog.text  # once, tracebacks included, no user text


def test_a_reply_that_cannot_be_written_fails_only_its_own_request(handler, monkeypatch):
    reply_response = handler.core.reply_response
    monkeypatch.setattr(handler.core, "reply_response", lambda batch, idx, chat, reply: fail(UnicodeError("x"))
                        if idx == 1 else reply_response(batch, idx, chat, reply))
    responses = run_batch(handler, [request(GOOD[0]), json_request({"text": GOOD[1]}), request(GOOD[2])])
    assert [r.status for r in responses] == [200, 500, 200]
    assert responses[1].content_type == "application/json" and responses[1].json()["type"] == "InternalError"


# ---------------------------------------------------------------- decoding options


def test_a_batch_of_mixed_options_runs_one_search_per_mode_and_each_reply_is_its_own(handler, monkeypatch):
    from model import decoding
    options = [{}, {"beam_size": 4, "num_replies": 2}, {"temperature": 0.7, "seed": 3}, {}, {"beam_size": 3},
               {"top_k": 5, "seed": 9, "num_replies": 2}]
    entries = [json_request({"text": GOOD[i % len(GOOD)], **o}) for i, o in enumerate(options)]
    alone = [run_batch(handler, [json_request({"text": GOOD[i % len(GOOD)], **o})])[0].json()
             for i, o in enumerate(options)]
    calls = []
    for mode, search in list(decoding.SEARCHES.items()):
        monkeypatch.setitem(decoding.SEARCHES, mode, lambda *a, mode=mode, search=search, **k:
                            calls.append((mode, len(a[4]))) or search(*a, **k))
    assert [r.json() for r in run_batch(handler, entries)] == alone
    assert sorted(calls) == [("beam", 2), ("greedy", 2), ("sample", 2)]
    assert [len(a.get("replies", [1])) for a in alone] == [1, 2, 1, 1, 1, 2]


def test_raw_text_requests_decode_with_the_model_config_defaults(model_dir):
    handler = start_handler(model_dir, beam_size=3, num_replies=2)
    raw, as_json = run_batch(handler, [request(GOOD[1]), json_request({"text": GOOD[1]})])
    assert raw.body == as_json.json()["replies"][0]["reply"] + "\n"
    assert len(as_json.json()["replies"]) == 2


def test_an_invalid_option_in_the_model_config_fails_the_load_naming_it(model_dir):
    with pytest.raises(ValueError, match="beam_size"):
        start_handler(model_dir, beam_size=0)


def test_under_torchserves_kserve_envelope_each_instance_gets_its_reply_or_error(handler):
    """KServe's v1 protocol ({"instances": [...]}, service_envelope=kserve): the instances of one request are
    the handler's batch; each gets its reply, or its JSON error, among the predictions."""
    from ts.torch_handler.request_envelope.kserve import KServeEnvelope

    instances = [{"data": GOOD[0]}, {"data": " "}, {"data": GOOD[1]}]
    entry = json_request({"instances": instances})
    entry["requestId"] = b"req-0"
    headers, inputs, request_ids = Service.retrieve_data_for_inference([entry])
    handler.context.request_processor, handler.context.request_ids = headers, request_ids
    [response] = KServeEnvelope(handler.handle).handle(inputs, handler.context)
    create_predict_response([response], request_ids, "Prediction success", 200, handler.context)  # as the worker
    alone = [run_batch(handler, [request(text)])[0].body for text in (GOOD[0], GOOD[1])]
    predictions = response["predictions"]
    assert [predictions[0], predictions[2]] == alone
    assert json.loads(predictions[1])["type"] == "EmptyInput"


def test_counters_are_summed_and_handed_over_within_the_interval_histograms_at_once():
    """BufferedMetrics: ~15 metric lines a batch become one per counter and interval, none lost, none late."""
    from serving.metrics import BufferedMetrics

    seen = []

    def observe(name, value, *dimensions):
        seen.append((name, value, dimensions))

    def wait_for(count: int) -> None:
        deadline = time.monotonic() + 3
        while len(seen) < count and time.monotonic() < deadline:
            time.sleep(0.01)

    metrics = BufferedMetrics(observe, interval=0.5)
    metrics.observe("seq2seq_decode_seconds", 0.01)  # a histogram's observation: at once, in this thread
    assert seen == [("seq2seq_decode_seconds", 0.01, ())]
    seen.clear()
    start = time.monotonic()
    metrics.observe("seq2seq_requests_decoded_total", 1)  # the first count after a quiet interval: at once
    wait_for(1)
    assert seen == [("seq2seq_requests_decoded_total", 1, ())] and time.monotonic() - start < 0.3
    seen.clear()
    start = time.monotonic()
    for _ in range(3):  # a busy worker: summed, then handed over once, within the interval
        metrics.observe("seq2seq_requests_decoded_total", 2)
        metrics.observe("seq2seq_bad_requests_total", 1, "EmptyInput")
    assert seen == []
    wait_for(2)
    assert sorted(seen) == [("seq2seq_bad_requests_total", 3, ("EmptyInput",)),
                            ("seq2seq_requests_decoded_total", 6, ())]
    assert 0.3 < time.monotonic() - start < 1.5
    immediate = []
    BufferedMetrics(lambda *a: immediate.append(a), interval=0).observe("seq2seq_unknown_words_total", 2)
    assert immediate == [("seq2seq_unknown_words_total", 2)]


@pytest.mark.parametrize("value", [-1, "1s", True])
def test_metrics_interval_must_be_seconds(model_dir, value):
    with pytest.raises(ValueError, match="metrics_interval_s must be a number of seconds >= 0"):
        start_handler(model_dir, metrics_interval_s=value)
