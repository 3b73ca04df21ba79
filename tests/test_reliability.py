"""Reliability and security against a real native TorchServe: bad input, load, worker failure, broken
checkpoints, secure defaults. docs/SECURITY.md maps every threat to the test that covers it.

Servers: the session `torchserve` (conftest.py) takes the bad inputs, the load burst and the security
checks; a server of its own (started and stopped here) for the full job queue, the worker kill, the
Makefile restart and the bad archive. The long versions: `make soak` (harness/soak.py), not part of CI.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import stat
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
import requests
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from worker import request, run_batch, start_handler

from harness.launcher import REPO, TorchServe, free_ports, start_torchserve, write_config
from harness.load import RESPONSE_TIMEOUT_S, Case, run_load, send, summarize
from harness.soak import (
    MAX_REQUEST_SIZE,
    RECOVERY_LIMIT_S,
    TEXT,
    bad_input_cases,
    hostile_cases,
    kill_worker_during_load,
    load_cases,
    mixed_phase,
    served_quantize,
)
from model import load_chatbot
from tools.build_mar import archiver_command, stage_model_package
from tools.build_mar import main as build_mar_main

GOOD_TEXT = "how are you ?"
LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}


@pytest.fixture(scope="module")
def served_chatbot(serving_checkpoint):
    """The reference for every reply: conftest's serving_chatbot, built with the archive's model-config
    options (its `quantize` changes the weights the server decodes with)."""
    return load_chatbot(serving_checkpoint, quantize=served_quantize())


def good_cases(chatbot, count: int) -> list[Case]:
    """`count` different good requests (raw text and JSON) with their reference replies."""
    return [c for c in load_cases(chatbot, count) if c.status == 200]


def failures(results) -> list[str]:
    return [f"{r.case.name}: {r.status} {r.body[:120]!r}" for r in results if not r.correct]


def send_all_at_once(url: str, cases: list[Case]) -> list:
    """Every case from its own thread at the same moment, so the good and the bad share batches."""
    with ThreadPoolExecutor(len(cases)) as pool:
        return list(pool.map(lambda c: send(requests.Session(), url, c), cases))


# ---------------------------------------------------------------- bad input on a real server


def test_each_bad_input_gets_its_documented_answer_and_good_ones_in_the_batch_their_reply(torchserve,
                                                                                           served_chatbot):
    worker = [p.pid for p in torchserve.worker_processes()]
    batched_before = torchserve.batches_of_more_than_one()
    cases = bad_input_cases(served_chatbot) + hostile_cases(served_chatbot)
    cases = [c for pair in zip(cases, good_cases(served_chatbot, len(cases))) for c in pair]  # bad, good, ...
    results = send_all_at_once(torchserve.predictions_url, cases)
    assert failures(results) == []
    assert torchserve.batches_of_more_than_one(above=batched_before) > batched_before, "the requests were never batched"
    assert [p.pid for p in torchserve.worker_processes()] == worker, "a bad input killed the worker"


def test_one_hostile_request_in_four_from_32_clients_fails_no_good_request(torchserve, served_chatbot):
    mixed = mixed_phase(torchserve, served_chatbot, clients=32, seconds=8)
    assert mixed["good_sent"] >= 200 and mixed["bad_sent"] >= 60, mixed
    assert (mixed["good_not_200"], mixed["good_wrong_reply"], mixed["bad_unexpected"]) == (0, 0, []), mixed
    assert mixed["worker_pid_kept"], mixed


def test_a_body_over_max_request_size_gets_413_and_the_server_goes_on(torchserve, served_chatbot):
    worker = [p.pid for p in torchserve.worker_processes()]
    too_big = b"hello " * (MAX_REQUEST_SIZE // 6 + 1)
    chunked = (too_big[i:i + 4096] for i in range(0, len(too_big), 4096))  # no Content-Length: streamed
    for body in (too_big, chunked):
        refused = requests.post(torchserve.predictions_url, data=body, headers=TEXT, timeout=30)
        assert (refused.status_code, refused.content) == (413, b"")
    [good] = good_cases(served_chatbot, 1)
    assert send(requests.Session(), torchserve.predictions_url, good).correct
    assert [p.pid for p in torchserve.worker_processes()] == worker


# ---------------------------------------------------------------- fuzzing the handler's request parsing

CONTENT_TYPES = st.sampled_from([
    "", "text/plain", "text/plain; charset=utf-8", "text/html", "application/json", "application/json; charset=utf-8",
    "application/octet-stream", "application/x-www-form-urlencoded", "multipart/form-data", "image/png",
]) | st.text(max_size=40)
FIELDS = st.sampled_from(["body", "data", "text", "file", ""])
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12)
JSON_BODIES = JSON_VALUES | st.builds(lambda v: {"text": v}, JSON_VALUES) | st.builds(lambda t: {"text": t}, st.text())
ODD_TEXT = st.text(st.characters(categories=["Cs", "Mn", "Cc", "Cf", "Zs", "So", "Lo"]) |
                   st.sampled_from("\ufb01\ufb02\u0301\u200d\ufeff\x00\x1b\u202e\U0001F600hello ?!"), max_size=40)


def raw_json(draw) -> bytes:
    """JSON as an attacker writes it: deep nesting, huge numbers, duplicate keys, escaped surrogates."""
    depth = draw(st.integers(1, 60_000))
    digits = draw(st.integers(1, 20_000))
    text = json.dumps(draw(ODD_TEXT))  # ASCII-escaped: lone surrogates arrive as \udXXX escapes
    return draw(st.sampled_from([
        "[" * depth + "]" * draw(st.sampled_from([0, depth])),
        '{"text": ' + "[" * depth,
        '{"text": "hello", "n": ' + "9" * digits + "}",
        '{"text": ' + "1" + "0" * digits + "}",
        '{"text": ' + text + ', "text": "hello"}',
        '{"text": "hello", "text": ' + text + "}",
        '{"text": ' + text + "}",
        "[" * depth + '{"text": "hello"}' + "]" * depth,
    ])).encode()


@st.composite
def hostile_entries(draw) -> dict:
    """One request built to break a parser rather than to pass it."""
    charset = draw(st.sampled_from(["", "; charset=utf-8", "; charset=latin-1", "; charset=utf-16",
                                    "; charset=x-unknown", "; charset=", '; charset="utf-8"']))
    kind = draw(st.sampled_from(["json", "text", "multipart", "header"]))
    if kind == "json":
        return request(raw_json(draw), "application/json" + draw(st.sampled_from(["", charset])),
                       field=draw(st.sampled_from(["body", "data", "text"])))
    if kind == "text":  # text in one encoding, labelled (rightly or not) with another
        encoding = draw(st.sampled_from(["utf-8", "latin-1", "utf-16", "utf-16-le", "cp1252", "utf-8-sig"]))
        body = draw(ODD_TEXT).encode(encoding, "surrogatepass" if encoding.startswith("utf") else "replace")
        return request(body, "text/plain" + charset)
    if kind == "multipart":  # odd field names and part types the frontend passes on as they came
        return request(draw(st.binary(max_size=200)), draw(CONTENT_TYPES), field=draw(st.text(max_size=10)),
                       request_type="multipart/form-data; boundary=" + draw(st.text(max_size=5)))
    name = draw(st.sampled_from(["describe", "explain", "body", "data", "text", "content-type", "Content-Type"]))
    return request("hello there !", "text/plain", headers={name: draw(st.sampled_from(["True", "true", "", "x"]))})


ENTRIES = st.one_of(
    st.builds(request, st.none() | st.binary(max_size=1500) | st.text(max_size=1200), CONTENT_TYPES, FIELDS,
              CONTENT_TYPES),
    st.builds(lambda v, ct: request(json.dumps(v), ct), JSON_BODIES,
              st.sampled_from(["application/json", "application/json; charset=utf-8"])),
    hostile_entries(),
)
FUZZ = {"deadline": None, "database": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}


@pytest.fixture(scope="module")
def fuzz_handler(serving_checkpoint, tmp_path_factory):
    """The handler with float32 weights whatever the model-config says: the fuzzing is about parsing,
    and unquantised decoding keeps thousands of batches fast."""
    model_dir = tmp_path_factory.mktemp("fuzz-model")
    shutil.copy(serving_checkpoint, model_dir / "1_checkpoint.tar")
    return start_handler(model_dir, quantize=False)


def assert_well_formed(responses) -> None:
    """Every status is 200 or 4xx; errors are the handler's JSON body with the same code."""
    for response in responses:
        assert response.status == 200 or 400 <= response.status < 500, response
        if response.status != 200:
            error = response.json()
            assert error["code"] == response.status and error["type"] and error["message"]


@given(entry=ENTRIES)
@settings(max_examples=2000, **FUZZ)
def test_fuzz_one_request_of_any_bytes_json_and_content_type(fuzz_handler, entry):
    assert_well_formed(run_batch(fuzz_handler, [entry]))  # run_batch checks one response per request


GOOD_TEXTS = ["how are you ?", "hello there !", "do you like music ?"]


@pytest.fixture(scope="module")
def replies_alone(fuzz_handler) -> dict:
    """Each good text's response body when it is the only request of its batch."""
    return {text: run_batch(fuzz_handler, [request(text, "text/plain")])[0].body for text in GOOD_TEXTS}


def assert_good_ones_unharmed(handler, replies_alone, entries, positions) -> None:
    """Insert the good requests at `positions` among `entries`: each must get its reply alone, the rest 200/4xx."""
    goods = {}
    for i, position in enumerate(positions):
        position = min(position, len(entries))
        entries.insert(position, request(GOOD_TEXTS[i % len(GOOD_TEXTS)], "text/plain"))
        goods = {(k + 1 if k >= position else k): t for k, t in goods.items()}
        goods[position] = GOOD_TEXTS[i % len(GOOD_TEXTS)]
    responses = run_batch(handler, entries)
    assert_well_formed(responses)
    assert {k: responses[k].body for k in goods} == {k: replies_alone[t] for k, t in goods.items()}


@given(entries=st.lists(ENTRIES, min_size=1, max_size=7), positions=st.lists(st.integers(0, 8), min_size=1, max_size=3))
@settings(max_examples=500, **FUZZ)
def test_fuzz_mixed_batches_keep_the_good_requests_right(fuzz_handler, replies_alone, entries, positions):
    assert_good_ones_unharmed(fuzz_handler, replies_alone, entries, positions)


@given(entries=st.lists(hostile_entries(), min_size=1, max_size=7),
       positions=st.lists(st.integers(0, 8), min_size=1, max_size=3))
@settings(max_examples=500, **FUZZ)
def test_fuzz_hostile_batches_keep_the_good_requests_right(fuzz_handler, replies_alone, entries, positions):
    assert_good_ones_unharmed(fuzz_handler, replies_alone, entries, positions)


# ---------------------------------------------------------------- load


def test_a_16_client_burst_loses_and_mixes_up_no_reply(torchserve, served_chatbot):
    summary = summarize(run_load(torchserve.predictions_url, load_cases(served_chatbot), clients=16, seconds=10))
    assert summary["requests"] >= 100, summary
    assert (summary["errors"], summary["mismatches"]) == (0, 0), summary


@pytest.fixture(scope="module")
def queue_server(seq2seq_mar, tmp_path_factory):
    """A server with a 2-job queue and the model API switched on (off by default)."""
    overrides = {"job_queue_size": "2", "enable_model_api": "true"}
    with start_torchserve(tmp_path_factory.mktemp("queue-server"), seq2seq_mar.parent,
                          config_overrides=overrides) as server:
        yield server


def test_a_full_job_queue_answers_503_at_once_instead_of_hanging(queue_server, served_chatbot):
    cases = good_cases(served_chatbot, 24)
    [worker] = queue_server.worker_processes()
    worker.suspend()  # a model that does not answer: the batch in flight waits, the queue fills up
    try:
        with ThreadPoolExecutor(len(cases)) as pool:
            futures = [pool.submit(send, requests.Session(), queue_server.predictions_url, c) for c in cases]
            time.sleep(3)
            early = [f.result() for f in futures if f.done()]
            worker.resume()
            results = [f.result() for f in futures]
    finally:
        worker.resume()
    # At most one batch (8) is with the worker and 2 jobs wait in the queue: all the others get 503 at once.
    assert len(early) >= len(cases) - 8 - 2
    assert all(r.status == 503 and "ServiceUnavailableException" in r.body and r.seconds < 1.5 for r in early)
    assert all(r.correct for r in results if r.status != 503), failures(results)


# ---------------------------------------------------------------- faults


@pytest.mark.server
def test_a_killed_worker_is_restarted_and_the_requests_it_had_fail_visibly(tmp_path, seq2seq_mar, served_chatbot):
    with start_torchserve(tmp_path / "kill-server", seq2seq_mar.parent) as server:
        report = kill_worker_during_load(server, load_cases(served_chatbot), clients=16, seconds=8, kill_after=2)
        summary = report.summary()
        print(f"worker kill: {summary}")  # pytest -s shows the figures
        assert report.killed_pids and not set(report.killed_pids) & {p.pid for p in server.worker_processes()}
        assert all(isinstance(r.status, int) and r.status >= 500 for r in report.failed), summary
        assert summary["max_latency_s"] < RESPONSE_TIMEOUT_S, summary
        assert summary["recovery_s"] is not None and summary["recovery_s"] < RECOVERY_LIMIT_S, summary
        recovered_at = report.killed_at + summary["recovery_s"]
        assert all(r.correct for r in report.results if r.start > recovered_at), failures(report.results)
        [good] = good_cases(served_chatbot, 1)
        assert send(requests.Session(), server.predictions_url, good).correct


def make(directory: Path, server: TorchServe, config: Path, *targets: str) -> subprocess.CompletedProcess:
    """The repo's Makefile run from `directory` (a user's checkout), pointed at `server`'s free ports."""
    command = ["make", "-f", str(REPO / "Makefile"), "-C", str(directory), *targets, f"TS_CONFIG={config}",
               f"INFERENCE_URL={server.url('inference')}", f"MANAGEMENT_URL={server.url('management')}"]
    return subprocess.run(command, capture_output=True, text=True, timeout=180)


def gone(pid: int) -> bool:
    """No such process, or only a zombie nobody reaped (Java's parent, `torchserve --start`, has exited)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def kill_tree(pid: int) -> None:
    with_children = [psutil.Process(pid)]
    with_children += with_children[0].children(recursive=True)
    for p in with_children:
        p.kill()
    psutil.wait_procs(with_children, timeout=10)


@pytest.mark.server
def test_make_serve_local_starts_again_after_java_was_killed(tmp_path, seq2seq_mar, served_chatbot):
    checkout = tmp_path / "checkout"  # model-store/ and .venv/ where the Makefile expects them; logs/ inside
    checkout.mkdir()
    (checkout / "model-store").symlink_to(seq2seq_mar.parent)
    (checkout / ".venv").symlink_to(Path(sys.executable).parent.parent)
    apis = ("inference", "management", "metrics", "grpc_inference", "grpc_management")
    server = TorchServe(checkout, dict(zip(apis, free_ports(len(apis)))), token_auth=False)
    config = write_config(server, checkout / "model-store", {})
    pid_file = checkout / "logs" / "tmp" / ".model_server.pid"
    [good] = good_cases(served_chatbot, 1)
    try:
        first = make(checkout, server, config, "serve-local")
        assert first.returncode == 0, first.stdout + first.stderr
        crashed = int(pid_file.read_text())
        kill_tree(crashed)  # kill -9 java and its workers: a crash leaves the pid file behind
        assert pid_file.exists() and gone(crashed)

        again = make(checkout, server, config, "serve-local")
        assert again.returncode == 0, again.stdout + again.stderr
        assert "Removing orphan pid file." in (checkout / "logs" / "torchserve.out").read_text()
        assert send(requests.Session(), server.predictions_url, good).correct

        restarted = int(pid_file.read_text())
        assert make(checkout, server, config, "stop").returncode == 0
        assert wait_for(lambda: gone(restarted), timeout=30) and not pid_file.exists()
    finally:
        if pid_file.exists() and not gone(int(pid_file.read_text())):
            kill_tree(int(pid_file.read_text()))


class Payload:
    """Pickles to a call that creates `marker`: a checkpoint that runs code when unpickled unsafely."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


def write_broken_checkpoint(kind: str, path: Path, good: Path, marker: Path) -> Path:
    checkpoint = torch.load(good, weights_only=True)
    if kind == "vocabulary larger than the embedding":
        checkpoint["voc"]["words"].append("extra")
        checkpoint["voc"]["counts"].append(1)
    elif kind == "hidden size differs from the weights":
        checkpoint["config"]["hidden_size"] *= 2
    elif kind == "arbitrary objects (torch.save)":
        checkpoint["config"] = Payload(marker)
    elif kind == "arbitrary objects (pickle.dump)":
        path.write_bytes(pickle.dumps({**checkpoint, "config": Payload(marker)}))
        return path
    torch.save(checkpoint, path)
    return path


def build_mar_on(checkpoint: Path, export_path: Path, capsys) -> tuple[int, str]:
    """(exit status, stderr) of `make mar CHECKPOINT=checkpoint`'s tools.build_mar, run in-process (faster)."""
    capsys.readouterr()
    status = build_mar_main(["--checkpoint", str(checkpoint), "--export-path", str(export_path)])
    return status, capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")  # torch's, for pickle.dump's protocol
@pytest.mark.parametrize("kind, message", [
    ("vocabulary larger than the embedding", "vocabulary/weights mismatch"),
    ("hidden size differs from the weights", "vocabulary/weights mismatch"),
    ("arbitrary objects (torch.save)", "refused to load: the file holds Python objects"),
    ("arbitrary objects (pickle.dump)", "refused to load: the file holds Python objects"),
])
def test_build_mar_refuses_a_broken_or_unsafe_checkpoint_clearly(tmp_path, serving_checkpoint, capsys, kind,
                                                                  message):
    marker = tmp_path / "payload-ran"
    checkpoint = write_broken_checkpoint(kind, tmp_path / "9_checkpoint.tar", serving_checkpoint, marker)
    status, stderr = build_mar_on(checkpoint, tmp_path / "out", capsys)
    assert status == 1
    [error] = [line for line in stderr.splitlines() if line.startswith("error: ")]  # after torch's warnings
    assert error.startswith(f"error: {checkpoint}: ") and message in error
    assert not (tmp_path / "out" / "seq2seq.mar").exists()
    assert not marker.exists(), "the checkpoint's code ran"


def test_build_mar_refusal_of_a_torch_saved_payload_is_one_line(tmp_path, serving_checkpoint, capsys):
    checkpoint = write_broken_checkpoint("arbitrary objects (torch.save)", tmp_path / "9_checkpoint.tar",
                                         serving_checkpoint, tmp_path / "payload-ran")
    _, stderr = build_mar_on(checkpoint, tmp_path / "out", capsys)
    assert stderr.count("\n") == 1 and "\x1b" not in stderr, stderr


def test_the_unsafe_checkpoint_would_run_code_if_loaded_without_weights_only(tmp_path, serving_checkpoint):
    marker = tmp_path / "payload-ran"
    checkpoint = write_broken_checkpoint("arbitrary objects (torch.save)", tmp_path / "evil.tar", serving_checkpoint,
                                         marker)
    torch.load(checkpoint, weights_only=False)  # what a plain torch.load did before torch 2.6
    assert marker.exists()


def build_mar_unchecked(checkpoint: Path, export_path: Path, model_config: dict) -> Path:
    """An archive made by torch-model-archiver directly, without build_mar.py's validation."""
    config = yaml.safe_load((REPO / "handler" / "model-config.yaml").read_text())
    config.update(model_config)
    config_file = export_path.parent / "model-config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    args = argparse.Namespace(model_name="seq2seq", version="1.0", checkpoint=checkpoint, config_file=config_file,
                              handler=REPO / "handler" / "seq2seq_handler.py", export_path=export_path)
    export_path.mkdir()
    command = archiver_command(args, stage_model_package(export_path.parent / "staging"))
    subprocess.run(command, check=True, capture_output=True, env={**os.environ, "TMPDIR": str(export_path.parent)})
    return export_path / "seq2seq.mar"


def wait_for(condition, timeout: float, interval: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


@pytest.mark.server
def test_a_bad_archive_fails_its_worker_with_a_clear_error_and_retries_stop(tmp_path, serving_checkpoint):
    marker = tmp_path / "payload-ran"
    checkpoint = write_broken_checkpoint("arbitrary objects (torch.save)", tmp_path / "1_checkpoint.tar",
                                         serving_checkpoint, marker)
    retry_window = 3  # model-config maxRetryTimeoutInSec (TorchServe's default: 300)
    mar = build_mar_unchecked(checkpoint, tmp_path / "store", {"maxRetryTimeoutInSec": retry_window})
    with start_torchserve(tmp_path / "bad-server", mar.parent, ready_workers=0) as server:
        logs = server.workdir / "logs"

        def log_lines(name: str, *needles: str) -> list[str]:
            path = logs / name
            lines = path.read_text().splitlines() if path.exists() else []
            return [line for line in lines if any(needle in line for needle in needles)]

        def gave_up() -> bool:  # the last failed try was not followed by "Retry worker: 9000 in N seconds."
            events = log_lines("ts_log.log", "Auto recovery", "Retry worker")
            return bool(events) and "Auto recovery failed again" in events[-1]

        ping = server.url("inference", "/ping")
        assert wait_for(lambda: requests.get(ping, timeout=5).status_code == 500 and gave_up(), timeout=90)
        tries = log_lines("model_log.log", "cannot load the chatbot from 1_checkpoint.tar")
        refused = "refused to load: the file holds Python objects"
        assert tries and all("CheckpointError: " in t and refused in t for t in tries)
        time.sleep(5)  # longer than any back-off step inside the window, plus a worker start
        assert len(log_lines("model_log.log", "cannot load the chatbot")) == len(tries) and gave_up()
        [model] = requests.get(server.url("management", "/models/my_s2s"), timeout=10).json()
        assert "READY" not in {w["status"] for w in model["workers"]} and not server.worker_processes()
    assert not marker.exists(), "the checkpoint's code ran in the worker"


# ---------------------------------------------------------------- secure defaults, proven on a running server


def test_every_listening_socket_is_on_loopback(torchserve):
    listening = [c for c in torchserve.java_process().net_connections("inet") if c.status == psutil.CONN_LISTEN]
    assert {c.laddr.port for c in listening} == set(torchserve.ports.values())
    assert {c.laddr.ip for c in listening} <= LOOPBACK


def test_worker_sockets_are_private_to_the_server(torchserve):
    workers = torchserve.worker_processes()
    assert workers
    for worker in workers:
        [socket_path] = {Path(c.laddr) for c in worker.net_connections("unix") if c.laddr}  # the one it listens on
        assert socket_path.parent == torchserve.workdir / "tmp"  # the server's own TMPDIR, not the shared /tmp
        mode = socket_path.stat().st_mode
        assert stat.S_ISSOCK(mode) and not mode & (stat.S_IWGRP | stat.S_IWOTH), oct(mode)


def test_registering_a_model_from_a_url_is_refused_even_with_the_model_api_on(queue_server):
    models = queue_server.url("management", "/models")
    for url in ("https://example.com/evil.mar", "http://127.0.0.1:9/evil.mar", "file:///etc/passwd",
                "../seq2seq.mar"):
        refused = requests.post(models, params={"url": url, "model_name": "evil"}, timeout=30)
        assert refused.status_code == 404 and refused.json()["type"] == "ModelNotFoundException", (url, refused.text)
    assert [m["modelName"] for m in requests.get(models, timeout=10).json()["models"]] == ["my_s2s"]


def test_user_text_never_reaches_the_logs(torchserve):
    secret = f"secret{uuid.uuid4().hex[:12]}"
    for kwargs in ({"data": f"hello {secret} there".encode(), "headers": TEXT},
                   {"json": {"text": f"how are you {secret} ?"}}, {"json": {"text": secret}},
                   {"data": f'{{"text": "{secret}'.encode(), "headers": {"Content-Type": "application/json"}},
                   {"data": f"{secret} " * 300, "headers": TEXT}, {"data": {"text": f"hello {secret}"}},
                   {"files": {"data": ("q.txt", f"hello {secret}".encode(), "text/plain")}}):
        assert requests.post(torchserve.predictions_url, timeout=30, **kwargs).status_code in (200, 400, 413, 422)
    # TorchServe's access log records URLs: a word in the query string shows that the logs are written.
    canary = f"canary{uuid.uuid4().hex[:12]}"
    requests.post(torchserve.predictions_url, params={"q": canary}, data=b"hello", headers=TEXT, timeout=30)

    def log_text() -> str:
        return "\n".join(p.read_text(errors="replace") for p in (torchserve.workdir / "logs").rglob("*") if p.is_file())

    assert wait_for(lambda: canary in log_text(), timeout=10), "the logs are not written where we look"
    assert secret not in log_text()
