"""The request pipeline: a batch of requests in, one response each out, with one batched decode per batch.

    core = load_core(checkpoint_path, model_config["handler"], model_name)      # serving/loading.py
    responses = core.answer([Incoming("", b"how are you?", "text/plain")])    # [Response(200, "text/plain...", ...)]

The adapter contract (handler/seq2seq_handler.py for TorchServe, kserve_runtime/ for KServe). An adapter:
1. turns each request of a batch into an `Incoming` (wire.py): its route (the path after the model's base URL: ""
   for the JSON and text API, "v1/chat/completions", "v1/models"), its body and its Content-Type;
2. calls `core.answer(incoming, emit)` once per batch, from one thread at a time; it never raises;
3. sends each `Response` back as it is (status, Content-Type, headers, body), and each piece `emit(index, piece)`
   hands it while the batch decodes, at once (the first piece of a streamed response carries its status and
   headers);
4. answers what it refuses itself (a body over the size limit, a full queue, a client that went away, a server
   that is stopping) with `protocol_for(route).error(BadRequest(kind, message))`, so the body is in the route's
   shape. It parses no options and builds no body.

Which protocol a request speaks is decided once, by its route (`protocol_for`); the protocol objects own parsing,
replies, errors and streams (protocols.py, openai_api.py). Every stage runs per request behind a guard, and a
batched decode that fails is retried request by request, so whatever one request holds costs only that request an
error (a request-scoped 500 for our own bug).

Shipped inside the .mar (the archive's `serving` package): Python 3.9, torch 2.4, no TorchServe, no KServe.
"""
from __future__ import annotations

import logging
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Union

import torch

from model import NoKnownWordsError
from model.schema import InvalidOption, Reply

from .metrics import Metrics
from .openai_api import CHAT_PATH, MODELS_PATH, OPENAI, Streamed
from .protocols import JSON_TEXT, Protocol
from .wire import Answered, BadRequest, ChatRequest, ErrorKind, Incoming, Response, internal_error

logger = logging.getLogger(__name__)

# What each stage hands the next, per request: the request (with its Reply once decoded), why it has none, or a
# response known without decoding
Outcome = Union[ChatRequest, BadRequest, Answered]
PROTOCOLS = {"": JSON_TEXT, CHAT_PATH: OPENAI, MODELS_PATH: OPENAI}  # route -> the protocol that owns it
Emit = Callable[[int, Response], None]  # emit(request index, piece): send a piece of a streamed response now


def protocol_for(route: str) -> Protocol:
    """The protocol of a route: its own, or for a route that names none, OpenAI's under v1/ and else the JSON
    API's (whose error then says the route does not exist)."""
    route = route.strip("/") if isinstance(route, str) else ""
    return PROTOCOLS.get(route) or (OPENAI if route.startswith("v1/") else JSON_TEXT)


@dataclass
class Batch:
    """One batch on its way through the pipeline: each request's outcome and protocol, the streams of the streamed
    ones (index -> openai_api.Streamed), and where their pieces go."""

    outcomes: list
    protocols: list
    emit: Emit | None = None
    streams: dict = field(default_factory=dict)


def one_line(text: str) -> str:
    """`text` as one printable log line: torch's messages hold newlines and terminal escapes."""
    return "".join(c for c in " ".join(text.split()) if c.isprintable())


def log_failure(what: str, error: BaseException, level: int = logging.ERROR) -> None:
    """Log an exception of our own code in one line: its type and where it was raised, never its message
    (a KeyError's message, say, can be the user's words)."""
    frames = traceback.extract_tb(error.__traceback__)[-6:]
    where = " <- ".join(f"{os.path.basename(f.filename)}:{f.lineno} {f.name}" for f in reversed(frames))
    logger.log(level, "%s: %s at %s", what, type(error).__name__, where)


def guarded(stage: str, idx: int, work: Callable[[], Any]) -> Any:
    """work(), or the BadRequest it raised, or a request-scoped 500 for any other exception."""
    try:
        return work()
    except BadRequest as e:
        return e
    except NoKnownWordsError as e:
        return BadRequest(ErrorKind.NO_KNOWN_WORDS, str(e), e.unknown_words)
    except InvalidOption as e:
        return BadRequest(ErrorKind.INVALID_OPTION, str(e))
    except Exception as e:  # our bug
        log_failure(f"request {idx} failed while {stage}", e)
        return internal_error(stage)


class Core:
    """A chatbot behind its protocols: Incoming requests of a batch -> one Response each."""

    def __init__(self, chatbot: Any, model_name: str, metrics: Metrics | None, max_chars: int, defaults: Any,
                 limits: dict, threads_alone: int):
        """defaults, limits: the decoding defaults and limits of the model-config (model.schema)."""
        self.chatbot = chatbot
        self.model_name = model_name
        self.metrics = metrics or Metrics()
        self.max_chars = max_chars
        self.defaults, self.limits = defaults, limits
        self.threads = torch.get_num_threads()
        self.threads_alone = threads_alone

    def answer(self, incoming: list[Incoming], emit: Emit | None = None) -> list[Response]:
        """One Response per request, decoded together: read, decode, respond. Never raises."""
        batch = self.read(incoming, emit)
        self.decode(batch)
        return self.respond(batch)

    # ------------------------------------------------------------------ reading

    def read(self, incoming: list[Incoming], emit: Emit | None = None) -> Batch:
        """Each request parsed by its protocol, its options checked and its text encoded (or the BadRequest that
        rejects it)."""
        outcomes = [internal_error(r.failed) if r.failed else
                    guarded("reading the request", idx, lambda r=r: self.read_request(r))
                    for idx, r in enumerate(incoming)]
        return Batch(outcomes, [protocol_for(r.route) for r in incoming], emit)

    def read_request(self, request: Incoming) -> ChatRequest | Answered:
        """Parse, check the options of and encode one request, by its protocol; raises BadRequest, InvalidOption or
        NoKnownWordsError."""
        route = request.route.strip("/") if isinstance(request.route, str) else request.route
        if route not in PROTOCOLS:
            raise BadRequest(ErrorKind.NOT_FOUND, f"no route {str(route)[:80]!r}: this model answers its JSON and "
                             f"text API and {CHAT_PATH}, {MODELS_PATH} (OpenAI's API)")
        chat = PROTOCOLS[route].parse(Incoming(route, request.body, request.content_type), self)
        if isinstance(chat, ChatRequest):
            logger.debug("request (%s): %r", route or ("json" if chat.as_json else "raw"), chat.text)
            chat.encoded = self.chatbot.encode(chat.text, chat.earlier_turns)
        return chat

    # ------------------------------------------------------------------ decoding

    def decode(self, batch: Batch) -> None:
        """Decode every usable request of the batch in ONE batched call: each gets its Reply, or the error that
        replaces it. Streamed requests' streams are opened first and get their tokens as they are chosen."""
        self.start_streams(batch)
        good = [idx for idx, r in enumerate(batch.outcomes) if isinstance(r, ChatRequest)]
        if not good:
            return
        if self.chatbot.device.type == "cpu":  # a lone request means an idle server: lend it the other cores
            torch.set_num_threads(self.threads_alone if len(good) == 1 else self.threads)
        start = time.perf_counter()
        found = self.decode_together(batch, good)
        seconds = time.perf_counter() - start
        replies = [f for f in found if isinstance(f, Reply)]
        self.metrics.observe("seq2seq_decode_seconds", seconds)
        self.metrics.observe_counts("seq2seq_batch_size", [len(good)])
        self.metrics.observe_counts("seq2seq_reply_words", [len(r.text.split()) for r in replies])
        self.metrics.observe("seq2seq_requests_decoded_total", len(replies))
        # DEBUG: at INFO this line would cost as much as the metrics, every batch
        logger.debug("batch of %d: %d decoded together in %.1f ms", len(batch.outcomes), len(good), seconds * 1000)
        for idx, reply in zip(good, found):
            if isinstance(reply, Reply):
                batch.outcomes[idx].reply = reply
            else:
                batch.outcomes[idx] = reply

    def decode_requests(self, batch: Batch, indices: list[int], stream: bool = True) -> list[Reply]:
        """The Replies of the requests at `indices`: one batched search per decoding mode, streaming the tokens of
        streamed requests as they are chosen (unless stream is False). Only streamed rows get a token callback, so
        the others of a mixed batch keep the compiled greedy loop (model/greedy_loop.py)."""
        requests = [batch.outcomes[idx] for idx in indices]
        streamed = [i for i, idx in enumerate(indices) if idx in batch.streams] if stream else []
        on_token = {i: (lambda token, idx=indices[i]: self.stream_token(batch, idx, token)) for i in streamed}
        return self.chatbot.answer([r.encoded for r in requests], [r.options for r in requests], on_token or None)

    def decode_together(self, batch: Batch, indices: list[int]) -> list[Reply | BadRequest]:
        """Replies in one call; if that call raises, each request alone, so only a bad one fails (streaming nothing
        more: a streamed reply's rest is sent when it is known, or its error)."""
        try:
            return self.decode_requests(batch, indices)
        except Exception as e:
            # WARNING: the request that fails alone is logged at ERROR below; the others get their replies
            log_failure(f"batched decode of {len(indices)} requests failed, decoding them one by one", e,
                        logging.WARNING)
            self.metrics.observe("seq2seq_decode_fallbacks_total", 1)
        return [guarded("decoding the reply", idx, lambda idx=idx: self.decode_requests(batch, [idx], False)[0])
                for idx in indices]

    # ------------------------------------------------------------------ streams

    def start_streams(self, batch: Batch) -> None:
        """Open the stream of every usable request its protocol streams, and send its first piece (one that cannot
        be opened gets its error instead). Without an emit function nothing is sent early: the whole stream is
        the last piece."""
        for idx, (request, protocol) in enumerate(zip(batch.outcomes, batch.protocols)):
            if isinstance(request, ChatRequest) and protocol.streams(request):
                started = guarded("starting its stream", idx,
                                  lambda idx=idx, r=request, p=protocol: self.start_stream(batch, idx, r, p))
                if not isinstance(started, Streamed):
                    batch.streams.pop(idx, None)
                    batch.outcomes[idx] = started

    def start_stream(self, batch: Batch, idx: int, request: ChatRequest, protocol: Any) -> Streamed:
        streamed, first = protocol.start_stream(request, self)
        batch.streams[idx] = streamed
        self.send(batch, idx, first)
        return streamed

    def send(self, batch: Batch, idx: int, piece: Response) -> None:
        """One piece of request idx's streamed response, now (kept for its last piece when nothing is emitted)."""
        if batch.emit is not None:
            batch.emit(idx, piece)
        else:
            batch.streams[idx].unsent += piece.body

    def stream_token(self, batch: Batch, idx: int, token: int) -> None:
        """Send the piece one more token of request idx adds, if any. Never raises: a stream that cannot be sent to
        stops streaming, and its request alone gets an error at the end."""
        streamed = batch.streams.get(idx)
        if not isinstance(streamed, Streamed) or streamed.failed:
            return
        try:
            piece = batch.protocols[idx].token(streamed, token)
            if piece is not None:
                self.send(batch, idx, piece)
        except Exception as e:
            log_failure(f"request {idx} failed while streaming a token", e)
            streamed.failed = True

    # ------------------------------------------------------------------ responding

    def respond(self, batch: Batch) -> list[Response]:
        """One Response per request (for a streamed one, its last piece)."""
        return [self.response(batch, idx, outcome) for idx, outcome in enumerate(batch.outcomes)]

    def response(self, batch: Batch, idx: int, outcome: Outcome) -> Response:
        """Request idx's response by its protocol, its body always encodable as UTF-8 (an engine encodes it; a lone
        surrogate there could kill a worker)."""
        try:
            if isinstance(outcome, ChatRequest) and outcome.reply is not None:
                response = self.reply_response(batch, idx, outcome, outcome.reply)
                response.body = response.body.encode("utf-8", "replace").decode("utf-8")
                return response
            if isinstance(outcome, Answered):
                return Response(outcome.status, outcome.content_type, outcome.body)
        except Exception as e:
            log_failure(f"request {idx} failed while writing its reply", e)
            outcome = internal_error("writing the reply")
        if not isinstance(outcome, BadRequest):  # a stage returned nothing usable: our bug
            logger.error("request %d reached the response without a reply or an error", idx)
            outcome = internal_error("answering")
        return self.error_response(batch, idx, outcome)

    def reply_response(self, batch: Batch, idx: int, request: ChatRequest, reply: Reply) -> Response:
        """Status 200 and the reply, in the request's protocol."""
        self.metrics.observe("seq2seq_unknown_words_total", len(reply.unknown_words))
        return batch.protocols[idx].reply(request, self, batch.streams.get(idx))

    def error_response(self, batch: Batch, idx: int, error: BadRequest) -> Response:
        """The error's status and body in the request's protocol (a stream already begun ends with an error
        event)."""
        self.metrics.observe("seq2seq_bad_requests_total", 1, error.kind.type_name)
        self.metrics.observe("seq2seq_unknown_words_total", len(error.unknown_words))
        return batch.protocols[idx].error(error, batch.streams.get(idx))
