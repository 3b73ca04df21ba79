"""One golden suite, two engines: the same .mar on TorchServe and on the KServe runtime (kserve_runtime/) gives the
same replies and the same error kinds and statuses, and OpenAI streaming works the same with the official SDK.
Replies are also checked against the Chatbot the checkpoint rebuilds in this process (the independent reference).
KServe's own protocols (v1 instances, v2 BYTES tensors), batching, its queue bound and /metrics are tested here too.
"""
from __future__ import annotations

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model.schema import DecodeOptions
from tools.server_config import MODEL_NAME, model_config

pytestmark = pytest.mark.server
REPLIES = [{"text": "how are you ?"}, {"text": "hello there .", "beam_size": 3, "num_replies": 2},
           {"text": "what is your name ?", "temperature": 0.8, "seed": 3, "num_replies": 2},
           {"text": "where are you going ?", "presence_penalty": 1.0, "frequency_penalty": 0.5},
           {"text": "zorblax how are you ?", "max_length": 4}, {"text": "good night !", "top_k": 3, "seed": 8}]
ERRORS = [({"text": "   "}, "EmptyInput"), ({"text": "zorblax"}, "NoKnownWords"),
          ({"text": "hello " * 300}, "InputTooLong"), ({"text": "hi", "beam_size": 99}, "InvalidOption"),
          ({"text": "hi", "temperature": 0.5, "beam_size": 2}, "InvalidOption"), ({"txt": "hello"}, "MissingText"),
          ({"text": 5}, "MissingText"), ({"text": "hi", "colour": "blue"}, "InvalidOption")]
ENGINES = ["torchserve", "kserve"]


def on_torchserve(server, body: dict) -> tuple[int, dict]:
    """(status, body) of a JSON API request on TorchServe."""
    response = requests.post(server.predictions_url, json=body, timeout=60)
    return response.status_code, response.json()


def on_kserve(server, body: dict) -> tuple[int, dict]:
    """(status, body) of the same request as one v1 instance on the KServe runtime."""
    response = requests.post(server.predict_url, json={"instances": [body]}, timeout=60)
    found = response.json()
    return response.status_code, found["predictions"][0] if response.ok else found


@pytest.fixture(scope="module")
def servers(torchserve, kserve) -> dict:
    return {"torchserve": torchserve, "kserve": kserve}


@pytest.mark.parametrize("body", REPLIES)
def test_the_same_request_gets_the_same_reply_on_both_engines(servers, serving_chatbot, body):
    ours, theirs = on_torchserve(servers["torchserve"], body), on_kserve(servers["kserve"], body)
    assert ours == theirs and ours[0] == 200
    options = DecodeOptions(**{"max_length": serving_chatbot.max_length,
                               **{k: v for k, v in body.items() if k != "text"}})
    assert ours[1]["reply"] == serving_chatbot.reply(body["text"], options).text


@pytest.mark.parametrize("body, kind", ERRORS)
def test_the_same_bad_request_gets_the_same_error_on_both_engines(servers, body, kind):
    ours, theirs = on_torchserve(servers["torchserve"], body), on_kserve(servers["kserve"], body)
    assert ours == theirs and ours[1]["type"] == kind and ours[0] == ours[1]["code"] >= 400


def test_a_v1_request_of_many_instances_answers_each_and_a_bad_one_fails_alone(servers):
    bodies = [*REPLIES, *(body for body, _ in ERRORS)]
    response = requests.post(servers["kserve"].predict_url, json={"instances": bodies + ["how are you ?"]},
                             timeout=60)
    assert response.status_code == 200
    expected = [on_torchserve(servers["torchserve"], b)[1] for b in bodies + [{"text": "how are you ?"}]]
    assert response.json()["predictions"] == expected  # a bare text instance is {"text": ...}


def test_v2_infer_takes_bytes_texts_and_parameters(servers, serving_chatbot):
    texts = ["how are you ?", "zorblax", "hello there ."]
    body = {"inputs": [{"name": "text", "shape": [3], "datatype": "BYTES", "data": texts}],
            "parameters": {"max_length": 6, "no_repeat_ngram_size": 2}}
    response = requests.post(servers["kserve"].infer_url, json=body, timeout=60)
    assert response.status_code == 200
    outputs = {o["name"]: o["data"] for o in response.json()["outputs"]}
    options = DecodeOptions(max_length=6, no_repeat_ngram_size=2)
    assert outputs["reply"] == [serving_chatbot.reply(texts[0], options).text, "",
                                serving_chatbot.reply(texts[2], options).text]
    assert outputs["error"][0] == outputs["error"][2] == ""
    assert json.loads(outputs["error"][1])["type"] == "NoKnownWords"
    alone = {**body, "inputs": [{**body["inputs"][0], "shape": [1], "data": ["zorblax"]}]}
    refused = requests.post(servers["kserve"].infer_url, json=alone, timeout=60)
    assert refused.status_code == 422 and refused.json()["type"] == "NoKnownWords"


@pytest.mark.parametrize("engine", ENGINES)
def test_the_openai_sdk_streams_and_completes_the_same_on_both_engines(servers, serving_chatbot, engine):
    client = openai.OpenAI(base_url=servers[engine].openai_url, api_key="unused", max_retries=0, timeout=60)
    assert [m.id for m in client.models.list()] == [MODEL_NAME]
    cases = [({}, DecodeOptions(max_length=10)), ({"temperature": 0.7, "seed": 2, "max_tokens": 2048},
                                                  DecodeOptions(max_length=20, temperature=0.7, seed=2))]
    for fields, options in cases:
        messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "what is your name ?"}]
        chunks = list(client.chat.completions.create(model=MODEL_NAME, messages=messages, stream=True,
                                                     stream_options={"include_usage": True}, **fields))
        reply = serving_chatbot.reply("what is your name ?", options)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == reply.text
        assert chunks[-1].usage.completion_tokens == len(reply.token_ids[0])
        whole = client.chat.completions.create(model=MODEL_NAME, messages=messages, **fields)
        assert whole.choices[0].message.content == reply.text
    stop = " " + serving_chatbot.reply("what is your name ?").text.split()[1]
    cut = client.chat.completions.create(model=MODEL_NAME, stop=[stop], messages=[
        {"role": "user", "content": "what is your name ?"}])
    assert cut.choices[0].finish_reason == "stop" and stop not in cut.choices[0].message.content


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("fields, error, code", [({"model": "gpt-4o"}, openai.NotFoundError, "NotFound"),
                                                 ({"tools": [{"type": "function", "function": {"name": "f"}}]},
                                                  openai.BadRequestError, "InvalidOption"),
                                                 ({"messages": [{"role": "user", "content": "zorblax"}]},
                                                  openai.UnprocessableEntityError, "NoKnownWords")])
def test_the_openai_errors_are_the_same_on_both_engines(servers, engine, fields, error, code):
    client = openai.OpenAI(base_url=servers[engine].openai_url, api_key="unused", max_retries=0, timeout=60)
    body = {"model": MODEL_NAME, "messages": [{"role": "user", "content": "how are you ?"}], **fields}
    with pytest.raises(error) as raised:
        client.chat.completions.create(**body)
    assert raised.value.code == code


def test_a_seeded_reply_is_the_same_alone_and_in_a_full_batch_on_kserve(kserve):
    seeded = {"text": "what is your name ?", "temperature": 1.1, "seed": 21, "num_replies": 2}
    alone = on_kserve(kserve, seeded)
    batches_before = batch_count(kserve)
    with ThreadPoolExecutor(16) as pool:
        found = list(pool.map(lambda i: on_kserve(kserve, seeded if i % 4 == 0 else REPLIES[i % len(REPLIES)]),
                              range(64)))
    assert all(found[i] == alone for i in range(0, 64, 4))
    assert batch_count(kserve) - batches_before < 64  # requests did share batches


def batch_count(kserve) -> float:
    """Batches decoded so far: the count of the seq2seq_batch_size histogram on /metrics."""
    text = requests.get(kserve.url("/metrics"), timeout=10).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("seq2seq_batch_size_count"))


def test_kserves_metrics_carry_ours_beside_its_own(kserve):
    on_kserve(kserve, {"text": "zorblax"})
    text = requests.get(kserve.url("/metrics"), timeout=10).text
    assert f'seq2seq_bad_requests_total{{ModelName="{MODEL_NAME}",Reason="NoKnownWords"}}' in text
    assert "seq2seq_requests_decoded_total" in text and "seq2seq_decode_seconds_bucket" in text
    assert "request_predict_seconds" in text  # KServe's own
    assert requests.get(kserve.url("/v2/health/ready"), timeout=10).ok


def test_a_full_queue_answers_503_and_every_other_request_its_reply(kserve_factory, serving_chatbot):
    server = kserve_factory({"jobQueueSize": 1, "batchSize": 1, "maxBatchDelay": 0})
    expected = serving_chatbot.reply("how are you ?").text
    with ThreadPoolExecutor(32) as pool:
        found = list(pool.map(lambda _: on_kserve(server, {"text": "how are you ?"}), range(96)))
    busy = [body for status, body in found if status == 503]
    assert busy and all(b["type"] == "ServiceUnavailable" for b in busy)
    assert all(body["reply"] == expected for status, body in found if status == 200)
    assert len(busy) < len(found)


def test_a_body_over_the_request_size_limit_gets_413_on_kserve(kserve, serving_chatbot):
    big = {"instances": [{"text": "how are you ?", "pad": "x" * 70_000}]}
    refused = requests.post(kserve.predict_url, json=big, timeout=60)
    assert refused.status_code == 413 and refused.json()["type"] == "InputTooLong"
    text = json.dumps(big).encode()
    for url in (kserve.predict_url, f"{kserve.openai_url}/chat/completions"):
        chunked = (text[i:i + 8192] for i in range(0, len(text), 8192))  # a generator: no Content-Length
        cut = requests.post(url, data=chunked, headers={"Content-Type": "application/json"}, timeout=60)
        error = cut.json()["error"]["code"] if "openai" in url else cut.json()["type"]  # each route's own shape
        assert cut.status_code == 413 and error == "InputTooLong"
    assert on_kserve(kserve, {"text": "how are you ?"}) == (200, on_kserve(kserve, {"text": "how are you ?"})[1])


QUEUE = int(model_config().get("jobQueueSize", 100))  # the archive's jobQueueSize, as the KServe runtime reads it


def test_a_request_of_more_texts_than_the_queue_holds_gets_413_naming_it_and_one_that_fits_is_answered(
        kserve, serving_chatbot):
    """A request's texts are admitted together: more than jobQueueSize can never fit (413, even on an idle server),
    and exactly jobQueueSize fit an idle one."""
    expected = serving_chatbot.reply("how are you ?").text
    too_many = requests.post(kserve.predict_url, json={"instances": ["how are you ?"] * (QUEUE + 1)}, timeout=60)
    assert too_many.status_code == 413 and too_many.json()["type"] == "InputTooLong"
    assert "jobQueueSize" in too_many.json()["message"] and str(QUEUE) in too_many.json()["message"]
    v2 = {"inputs": [{"name": "text", "shape": [QUEUE + 1], "datatype": "BYTES", "data": ["hi"] * (QUEUE + 1)}]}
    assert requests.post(kserve.infer_url, json=v2, timeout=60).status_code == 413
    fits = requests.post(kserve.predict_url, json={"instances": ["how are you ?"] * QUEUE}, timeout=120)
    assert fits.status_code == 200 and {p["reply"] for p in fits.json()["predictions"]} == {expected}


def test_the_adapters_own_errors_come_in_the_openai_shape_on_the_openai_route(kserve_factory, serving_chatbot):
    """413 (a history over the body limit) and 503 (a full queue) from the KServe adapter itself, on the OpenAI
    route: OpenAI's error object, which the SDK reads, and X-Context-Used, as on every response of the route."""
    server = kserve_factory({"jobQueueSize": 1, "batchSize": 1, "maxBatchDelay": 0})
    history = [{"role": "user", "content": "x" * 900}] * 80 + [{"role": "user", "content": "how are you ?"}]
    url = f"{server.openai_url}/chat/completions"
    long = requests.post(url, json={"model": MODEL_NAME, "messages": history}, timeout=60)
    assert long.status_code == 413 and long.json()["error"]["code"] == "InputTooLong"
    assert long.headers["X-Context-Used"] == "last-user-message"
    body = {"model": MODEL_NAME, "messages": [{"role": "user", "content": "how are you ?"}]}
    with ThreadPoolExecutor(32) as pool:
        found = list(pool.map(lambda _: requests.post(url, json=body, timeout=60), range(96)))
    busy = [r for r in found if r.status_code == 503]
    assert busy and all(r.json()["error"]["code"] == "ServiceUnavailable" and r.json()["error"]["type"] ==
                        "server_error" and r.headers["X-Context-Used"] for r in busy)
    client = openai.OpenAI(base_url=server.openai_url, api_key="unused", max_retries=0, timeout=60)
    with pytest.raises(openai.APIStatusError) as raised:  # the SDK keeps code and param
        client.chat.completions.create(model=MODEL_NAME, messages=history)
    assert raised.value.status_code == 413 and raised.value.code == "InputTooLong"


def test_a_v1_or_v2_client_that_hangs_up_leaves_the_queue_undecoded(kserve_factory, serving_chatbot):
    """Its texts leave the queue (and any batch not started) when it goes away: they are not decoded."""
    server = kserve_factory({"batchSize": 1, "maxBatchDelay": 0})
    slow = {"text": "how are you ?", "beam_size": 10, "max_length": 20}
    decoded = lambda: sum(float(line.split()[-1]) for line in requests.get(  # noqa: E731
        server.url("/metrics"), timeout=10).text.splitlines() if line.startswith("seq2seq_requests_decoded_total{"))
    before = decoded()
    for path, body in ((server.predict_url, {"instances": [slow] * QUEUE}), (server.infer_url, {
            "inputs": [{"name": "text", "shape": [QUEUE], "datatype": "BYTES", "data": ["how are you ?"] * QUEUE}],
            "parameters": {"beam_size": 10, "max_length": 20}})):
        data = json.dumps(body).encode()
        with socket.create_connection(("127.0.0.1", server.port)) as client:  # sends, then hangs up
            client.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d"
                           b"\r\n\r\n%s" % (path.split(str(server.port))[1].encode(), len(data), data))
            time.sleep(0.05)
        time.sleep(1)
        assert decoded() - before < QUEUE / 2  # all QUEUE were decoded before (~0.4 s on an idle machine)
        before = decoded()
    assert on_kserve(server, {"text": "how are you ?"}) == (200, on_kserve(server, {"text": "how are you ?"})[1])


def test_a_streamed_client_that_hangs_up_costs_the_others_nothing_on_kserve(kserve, serving_chatbot):
    body = {"model": MODEL_NAME, "messages": [{"role": "user", "content": "how are you ?"}], "stream": True}
    expected = serving_chatbot.reply("how are you ?").text

    def hang_up(_):
        with requests.post(f"{kserve.openai_url}/chat/completions", json=body, stream=True, timeout=60) as r:
            return next(r.iter_lines())  # then close

    with ThreadPoolExecutor(16) as pool:
        gone = [pool.submit(hang_up, i) for i in range(32)]
        kept = [pool.submit(on_kserve, kserve, {"text": "how are you ?"}) for _ in range(32)]
    assert all(g.result().startswith(b"data: ") for g in gone)
    assert all(k.result() == (200, {**k.result()[1], "reply": expected}) for k in kept)
    assert requests.get(kserve.url("/v2/health/ready"), timeout=10).ok


def test_make_serve_kserve_returns_once_ready_and_the_pid_file_stops_it(seq2seq_mar, tmp_path, serving_chatbot):
    import os
    import signal
    import subprocess

    from harness.launcher import free_ports
    from tools.server_config import REPO
    port, pid_file = free_ports(1)[0], tmp_path / "kserve.pid"
    made = subprocess.run(["make", "--no-print-directory", "serve-kserve", f"KSERVE_PORT={port}", f"MAR={seq2seq_mar}",
                           f"KSERVE_PID={pid_file}"], cwd=REPO, capture_output=True, text=True, timeout=180)
    try:
        assert made.returncode == 0, made.stdout + made.stderr
        assert f"http://127.0.0.1:{port}/v1/models/{MODEL_NAME}:predict" in made.stdout
        reply = requests.post(f"http://127.0.0.1:{port}/v1/models/{MODEL_NAME}:predict",
                              json={"instances": [{"text": "hello there ."}]}, timeout=30)
        assert reply.json()["predictions"][0]["reply"] == serving_chatbot.reply("hello there .").text
    finally:
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), signal.SIGTERM)


def test_the_kserve_runtime_listens_on_loopback_only(kserve):
    """KServe binds 0.0.0.0 by itself; the runtime's --host (127.0.0.1 by default) must win, gRPC staying off."""
    import psutil

    listening = [c.laddr for c in psutil.Process(kserve.process.pid).net_connections("inet")
                 if c.status == psutil.CONN_LISTEN]
    assert listening and all(address.ip == "127.0.0.1" for address in listening), listening
    assert {address.port for address in listening} == {kserve.port}


# ---------------------------------------------------------------- fuzzing the KServe runtime: what any body gets


JSON = st.recursive(st.none() | st.booleans() | st.integers(-3, 2**64) | st.floats(allow_nan=False) |
                    st.text(max_size=20), lambda inner: st.lists(inner, max_size=3) |
                    st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=10)
INSTANCE = st.fixed_dictionaries({"text": st.sampled_from(["how are you ?", "zorblax", "", "hello there ."]) | JSON},
                                  optional={"beam_size": JSON | st.integers(0, 12), "temperature": JSON,
                                            "seed": JSON, "max_length": JSON | st.integers(-1, 30)})
BODIES = st.fixed_dictionaries({"instances": st.lists(INSTANCE | JSON, max_size=4)}) | st.fixed_dictionaries(
    {"inputs": st.lists(st.fixed_dictionaries({"name": st.sampled_from(["text", "x"]), "shape": JSON,
                                               "datatype": st.sampled_from(["BYTES", "FP32"]),
                                               "data": st.lists(st.text(max_size=20), max_size=3) | JSON}),
                        max_size=2), "parameters": JSON}) | st.fixed_dictionaries(
    {"model": st.sampled_from([MODEL_NAME, "x"]), "messages": JSON | st.just(
        [{"role": "user", "content": "how are you ?"}])}, optional={"stream": JSON, "stop": JSON, "n": JSON}) | JSON
ROUTES = ["/v1/models/{m}:predict", "/v2/models/{m}/infer", "/openai/v1/chat/completions"]


@pytest.mark.parametrize("shape", ["Infinity", "NaN", "null", '"x"', "[1.5]"])
def test_a_v2_body_outside_kserves_schema_gets_422_even_with_non_finite_numbers(kserve, shape):
    body = f'{{"inputs": [{{"name": "text", "shape": {shape}, "datatype": "BYTES", "data": ["hi"]}}]}}'
    response = requests.post(kserve.infer_url, data=body, headers={"Content-Type": "application/json"}, timeout=60)
    assert response.status_code == 422 and response.json()["detail"]


@given(body=BODIES, route=st.sampled_from(ROUTES), raw=st.booleans())
@settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_fuzz_any_body_on_any_kserve_route_is_answered_without_a_5xx(kserve, serving_chatbot, body, route, raw):
    url = kserve.url(route.format(m=MODEL_NAME))
    data = json.dumps(body).encode() if not raw else json.dumps(body).encode()[:-1]  # raw: broken JSON
    with ThreadPoolExecutor(2) as pool:
        fuzzed = pool.submit(requests.post, url, data=data, headers={"Content-Type": "application/json"}, timeout=60)
        good = pool.submit(on_kserve, kserve, {"text": "how are you ?"})
        response = fuzzed.result()
    assert 200 <= response.status_code < 500, (response.status_code, response.text[:300])
    assert good.result() == (200, {**good.result()[1], "reply": serving_chatbot.reply("how are you ?").text})
