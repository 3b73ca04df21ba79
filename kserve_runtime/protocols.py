"""KServe's own protocols, v1 and v2, as protocol objects around the JSON API's requests and replies.

A v1 or v2 request carries one or more texts (instances, or a BYTES input's elements); each becomes a JSON API
request of the serving core (serving/protocols.py's JsonTextApi), and the replies go back in KServe's envelope:
- v1 `{"instances": [{"text": "hello", <options>}, "or a bare text", ...]}` -> `{"predictions": [<the JSON API's
  reply body, or the error body of that instance>, ...]}`;
- v2 a BYTES input `text` (the options as request `parameters`) -> outputs `reply` (each text's reply, "" where it
  got an error) and `error` ("" or that text's error body as JSON).

A request whose one text is refused gets that error's own status and body, as from TorchServe; with several, each
refused one is an error body among the others' replies (200). Errors of the request as a whole (a malformed
envelope, too many texts, a full queue, a client that went away, a server stopping) are the JSON API's error
bodies, which `error` builds.
"""
from __future__ import annotations

import uuid
from typing import Any

from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from serving.pipeline import protocol_for
from serving.wire import JSON_TYPE, TEXT_TYPE, BadRequest, ErrorKind, Incoming, Response, load_json, to_text

V2_INPUT = "text"  # the v2 input that holds the texts
V2_PROTOCOL_PARAMETERS = ("binary_data_output", "content_type", "headers")  # KServe's own, not decoding options
OPENAI_PREFIX = "/openai"  # KServe's prefix of the OpenAI API (openai_routes.py)


class Rejected(Exception):
    """A request answered with an error: its Response (status and body in its route's shape) goes back as it is."""

    def __init__(self, response: Response):
        super().__init__(response.body)
        self.response = response


def route_of(path: str) -> str:
    """The serving core's route of an HTTP path on this server: the OpenAI API's under /openai, else "" (KServe's
    v1 and v2 carry JSON API requests)."""
    return path[len(OPENAI_PREFIX):].strip("/") if path.startswith(OPENAI_PREFIX + "/") else ""


def refused(route: str, kind: ErrorKind, message: str) -> Response:
    """The response of a request the adapter refuses as a whole, in the shape of its route's protocol."""
    return protocol_for(route).error(BadRequest(kind, message))


def client_gone(route: str) -> Response:
    """The 499 of a request whose client went away before its reply (nobody reads it; it is logged as such)."""
    return refused(route, ErrorKind.CLIENT_CLOSED_REQUEST, "the client closed the connection before its reply")


def one_failed(responses: list[Response]) -> None:
    """A lone request that was refused gets its own status and body (Rejected); several go back as they are."""
    if len(responses) == 1 and responses[0].status != 200:
        raise Rejected(responses[0])


class V1:
    """KServe's v1 protocol: instances in, predictions out."""

    @staticmethod
    def parse(payload: Any) -> list[Incoming]:
        """Each instance as a JSON API request ({"text", options} or a bare text); Rejected for a bad envelope."""
        if isinstance(payload, (bytes, bytearray)):  # sent without a JSON Content-Type: KServe left it unparsed
            try:
                payload = load_json(to_text(payload, {}))
            except BadRequest as e:
                raise Rejected(protocol_for("").error(e)) from None
        instances = payload.get("instances") if isinstance(payload, dict) else None
        if not isinstance(instances, list) or not instances:
            raise Rejected(protocol_for("").error(BadRequest(
                ErrorKind.MISSING_TEXT, 'the body must be {"instances": [{"text": ...}, ...]}')))
        return [Incoming("", {"text": i} if isinstance(i, str) else i, JSON_TYPE) for i in instances]

    @staticmethod
    def reply(responses: list[Response]) -> dict:
        one_failed(responses)
        return {"predictions": [r.json() for r in responses]}


class V2:
    """KServe's v2 protocol: a BYTES input of texts in, outputs `reply` and `error` out."""

    @staticmethod
    def parse(request: InferRequest) -> list[Incoming]:
        """Each text of the BYTES input `text` as a JSON API request with the request's parameters as options
        (bytes that are not UTF-8 get InvalidEncoding); Rejected when there is no text."""
        texts = v2_texts(request)
        options = {k: v for k, v in (request.parameters or {}).items() if k not in V2_PROTOCOL_PARAMETERS}
        return [Incoming("", {"text": t, **options}, JSON_TYPE) if isinstance(t, str) else Incoming("", t, TEXT_TYPE)
                for t in texts]

    @staticmethod
    def reply(request: InferRequest, responses: list[Response], model_name: str) -> InferResponse:
        one_failed(responses)
        replies = [r.json().get("reply", "") if r.status == 200 else "" for r in responses]
        errors = ["" if r.status == 200 else r.body.strip() for r in responses]
        outputs = [InferOutput("reply", [len(responses)], "BYTES", replies),
                   InferOutput("error", [len(responses)], "BYTES", errors)]
        return InferResponse(request.id or str(uuid.uuid4()), model_name, outputs)


def v2_texts(request: InferRequest) -> list:
    """The texts of the BYTES input `text`: str, or bytes where they are not UTF-8; Rejected when there is none."""
    found = next((i for i in request.inputs if i.name == V2_INPUT), None)
    if found is None or found.datatype != "BYTES":
        raise Rejected(protocol_for("").error(BadRequest(
            ErrorKind.MISSING_TEXT, f'the request needs a BYTES input named "{V2_INPUT}"')))
    texts = []
    for value in flatten(found.data):
        if isinstance(value, (bytes, bytearray)):
            try:
                value = bytes(value).decode("utf-8")
            except UnicodeDecodeError:
                value = bytes(value)
        texts.append(value)
    if not texts:
        raise Rejected(protocol_for("").error(BadRequest(ErrorKind.EMPTY_INPUT,
                                                         f'the input "{V2_INPUT}" holds no text')))
    return texts


def flatten(data: Any) -> list:
    """A tensor's nested lists (or numpy array) as one flat list."""
    if hasattr(data, "tolist"):
        data = data.tolist()
    if isinstance(data, (list, tuple)):
        return [v for item in data for v in flatten(item)]
    return [data]
