"""TorchServe's model worker in-process: requests framed as the frontend sends them, decoded by TorchServe's own
`otf_message_handler`, batched by `Service.retrieve_data_for_inference`, and the responses encoded by
`create_predict_response`. Bodies reach the handler exactly as in production (JSON parsed, text/* decoded,
anything else bytes). Used by test_handler.py and the fuzzing in test_reliability.py.
"""
from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from ts.context import Context
from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl
from ts.protocol.otf_message_handler import _retrieve_input_data, create_predict_response
from ts.service import Service

from handler import seq2seq_handler
from harness.launcher import MODEL_NAME, REPO

FORM = "application/x-www-form-urlencoded"


class FakeSocket:
    """Just enough of a socket for TorchServe's frame decoder."""

    def __init__(self, data: bytes):
        self.stream = io.BytesIO(data)

    def recv(self, n: int) -> bytes:
        return self.stream.read(n)


def frame(*parts: bytes) -> bytes:
    return b"".join(struct.pack("!i", len(p)) + p for p in parts)


def request(body: bytes | str | None, content_type: str = "", field: str = "body", request_type: str = "",
            headers: dict | None = None) -> dict:
    """One batch entry as the worker builds it from the frontend's message.

    body None: no body parameter at all (what the frontend sends for a form without fields).
    request_type: the HTTP Content-Type header (defaults to content_type). headers: more HTTP headers.
    """
    if isinstance(body, str):
        body = body.encode("utf-8")
    parameters = []
    if body is not None:
        parameters.append(_retrieve_input_data(FakeSocket(frame(field.encode(), content_type.encode(), body))))
    headers = {"Content-Type": request_type or content_type, **(headers or {})}
    return {"requestId": b"", "parameters": parameters,
            "headers": [{"name": name.encode(), "value": value.encode()} for name, value in headers.items()]}


def json_request(payload: object) -> dict:
    return request(json.dumps(payload), "application/json")


@dataclass
class Response:
    status: int
    content_type: str
    headers: dict
    body: str
    pieces: list = field(default_factory=list)  # the intermediate (streamed) bodies sent before `body`, in order
    sent_headers: dict = field(default_factory=dict)  # a stream's headers: the first piece's (the client's)

    def json(self):
        return json.loads(self.body)

    @property
    def streamed(self) -> str:
        """The whole streamed body: its intermediate pieces, then the last one."""
        return "".join(self.pieces) + self.body


class WorkerSocket:
    """The worker's socket to the frontend: collects what send_intermediate_predict_response sends."""

    def __init__(self):
        self.sent = bytearray()

    def sendall(self, data: bytes) -> None:
        self.sent += data

    def pieces(self) -> dict[str, list[tuple[dict, str]]]:
        """{request id: [(its headers, body), ...]} of every intermediate response sent, decoded as the frontend
        decodes a worker's message."""
        stream, found = io.BytesIO(bytes(self.sent)), {}
        read_int = lambda: struct.unpack("!i", stream.read(4))[0]  # noqa: E731
        read_bytes = lambda: stream.read(read_int())  # noqa: E731
        while stream.tell() < len(self.sent):
            read_int(), read_bytes()  # the message's code and text
            while (length := read_int()) != -1:
                request_id = stream.read(length).decode()
                read_bytes(), read_int(), read_bytes()  # content type, status, phrase
                headers = {read_bytes().decode(): read_bytes().decode() for _ in range(read_int())}
                found.setdefault(request_id, []).append((headers, read_bytes().decode("utf-8")))
        return found


def make_context(model_dir: Path, handler_options: dict | None = None, gpu: int | None = None) -> Context:
    """TorchServe's Context as the worker builds it for a model from the archive in `model_dir`."""
    model_config = yaml.safe_load((REPO / "handler" / "model-config.yaml").read_text())
    model_config["handler"].update(handler_options or {})
    metrics = MetricsCacheYamlImpl(str(REPO / "handler" / "metrics.yaml"))
    metrics.initialize_cache()
    metrics.model_name = MODEL_NAME
    manifest = {"model": {"modelName": "seq2seq", "serializedFile": "1_checkpoint.tar",
                          "handler": "seq2seq_handler.py", "configFile": "model-config.yaml"}}
    return Context(MODEL_NAME, str(model_dir), manifest, model_config["batchSize"], gpu, "0.12.0",
                   metrics=metrics, model_yaml_config=model_config)


def run_batch(handler, entries: list[dict]) -> list[Response]:
    """Send one batch through handler.handle as TorchServe's Service.predict does, and encode the
    responses as the worker does (that must not raise: it would kill the worker)."""
    for i, entry in enumerate(entries):
        entry["requestId"] = f"req-{i}".encode()
    headers, inputs, request_ids = Service.retrieve_data_for_inference(entries)
    context = handler.context
    context.request_processor, context.request_ids = headers, request_ids
    context.metrics.set_request_ids(request_ids)
    context.cl_socket = WorkerSocket()
    bodies = handler.handle(inputs, context)
    assert len(bodies) == len(entries)
    create_predict_response(bodies, request_ids, "Prediction success", 200, context)  # what the worker sends
    pieces = context.cl_socket.pieces()
    for request_id, sent in pieces.items():  # a stream's pieces are marked as such; it is not answered twice
        assert all(headers.get("ts_stream_next") == "true" for headers, _ in sent), request_id
        assert context.get_response_headers(int(request_id.split("-")[1])).get("ts_stream_next") == "false"
    return [Response(context.get_response_status(i)[0], context.get_response_content_type(i),
                     dict(context.get_response_headers(i)), body.decode("utf-8") if isinstance(body, bytes) else body,
                     [body for _, body in pieces.get(f"req-{i}", [])], next(iter(pieces.get(f"req-{i}", [])),
                                                                            ({}, ""))[0])
            for i, body in enumerate(bodies)]


STARTED: list[seq2seq_handler.Seq2seqHandler] = []  # every handler start_handler made in this test process


def start_handler(model_dir: Path, **handler_options) -> seq2seq_handler.Seq2seqHandler:
    """A handler initialized as the worker does, on the archive in `model_dir`."""
    handler = seq2seq_handler.Seq2seqHandler()
    handler.initialize(make_context(model_dir, handler_options))
    STARTED.append(handler)
    return handler


def flush_started_metrics() -> None:
    """Hand over the counters every started handler still holds, so that none arrives later, from its timer, in
    another test's captured log (they all log as ts.metrics.caching_metric with the same model name)."""
    for handler in STARTED:
        handler.core.metrics.flush()
