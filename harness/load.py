"""The one load generator of the benchmarks, the soak and the failover run: cases, clients, checked answers.

A Case is a request (requests.post keyword arguments) and the answer it must get; `run_load` has
client threads, each with its own keep-alive session, post cases back to back and judge every answer
(`is_correct`). serve_bench counts throughput and latency from the Results, the soak errors and
mismatches, the failover run what failed when.
"""
from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import requests

from tools.server_config import model_config

RESPONSE_TIMEOUT_S = model_config()["responseTimeout"]  # TorchServe restarts a worker stuck longer
CLIENT_TIMEOUT_S = RESPONSE_TIMEOUT_S + 5  # a request that waits longer than this counts as hung
JSON_TYPE = "application/json"
ANY_ANSWER = "*"  # Case.kind: a reply, or the handler's JSON error with a 4xx status: both are fine


@dataclass(frozen=True)
class Case:
    """One request and the answer it must get.

    status 200: `reply` is the reply text (Chatbot.reply of the input). 4xx: `kind` is the error type in
    the handler's JSON body, or None for a rejection by TorchServe's frontend, which has no body;
    ANY_ANSWER accepts a reply or any 4xx JSON error (inputs whose right answer depends on the runtime).
    """

    name: str
    request: dict  # requests.post keyword arguments: data/json/files/headers
    status: int = 200
    reply: str = ""
    kind: str | None = ""


@dataclass(frozen=True)
class Result:
    """What one request got."""

    case: Case
    start: float  # time.monotonic()
    end: float
    status: int | str  # the HTTP status, or the exception's name when no response came
    body: str
    correct: bool  # status and body are what the case expects

    @property
    def seconds(self) -> float:
        return self.end - self.start


def is_correct(case: Case, response: requests.Response) -> bool:
    """Whether `response` is the answer `case` must get."""
    if case.kind == ANY_ANSWER:
        return response.status_code == 200 or (400 <= response.status_code < 500 and is_error_body(response))
    if response.status_code != case.status:
        return False
    if case.status == 200:
        if response.headers.get("Content-Type", "").startswith(JSON_TYPE):
            body = response.json()
            if "choices" in body:  # the OpenAI route's chat.completion
                return body["choices"][0]["message"]["content"] == case.reply
            if "predictions" in body:  # KServe's v1 protocol, one instance
                return body["predictions"][0].get("reply") == case.reply
            return body.get("reply") == case.reply
        # the bytes as UTF-8, not .text: without a charset requests guesses one (UTF-16 for some short ASCII)
        return response.content.decode("utf-8", "replace") == case.reply + "\n"
    if case.kind is None:  # refused by the frontend before any handler saw it
        return response.content == b""
    try:
        return response.json().get("type") == case.kind
    except ValueError:
        return False


def is_error_body(response: requests.Response) -> bool:
    """Whether the body is the handler's JSON error for the response's status."""
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("code") == response.status_code and bool(body.get("type"))


def send(session: requests.Session, url: str, case: Case, timeout: float = CLIENT_TIMEOUT_S) -> Result:
    """POST one case and judge the answer; a connection error or timeout is a Result too."""
    start = time.monotonic()
    try:
        response = session.post(url, timeout=timeout, **case.request)
    except requests.RequestException as e:
        return Result(case, start, time.monotonic(), type(e).__name__, str(e)[:200], False)
    return Result(case, start, time.monotonic(), response.status_code, response.text[:1000],
                  is_correct(case, response))


def run_load(url: str, cases: Sequence[Case], clients: int, seconds: float,
             max_requests: int | None = None) -> list[Result]:
    """`clients` threads with keep-alive sessions cycle through `cases` (client k from case 7k) for `seconds`, or
    until max_requests requests were sent; every Result, in the order they ended."""
    deadline = time.monotonic() + seconds
    results: list[Result] = []  # list.append is atomic under the GIL
    sent = itertools.count()
    lock = threading.Lock()

    def more() -> bool:
        with lock:
            return time.monotonic() < deadline and (max_requests is None or next(sent) < max_requests)

    def client(k: int) -> None:
        with requests.Session() as session:
            for i in itertools.count(7 * k):
                if not more():
                    return
                results.append(send(session, url, cases[i % len(cases)]))

    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client, k) for k in range(clients)]:
            future.result()  # a bug in the client raises here instead of vanishing
    return results


def summarize(results: list[Result]) -> dict:
    """Counts of a load run: requests, errors (wrong status, or no answer), mismatches (right status, wrong body)."""
    if not results:
        return {"requests": 0, "errors": 0, "mismatches": 0}
    errors = [r for r in results if r.status != r.case.status]
    mismatches = [r for r in results if r.status == r.case.status and not r.correct]
    seconds = sorted(r.seconds for r in results)
    span = max(r.end for r in results) - min(r.start for r in results)
    return {
        "requests": len(results),
        "errors": len(errors),
        "mismatches": len(mismatches),
        "error_statuses": dict(Counter(str(r.status) for r in errors)),
        "p50_ms": round(1000 * seconds[len(seconds) // 2], 1),
        "max_ms": round(1000 * seconds[-1], 1),
        "requests_per_s": round(len(results) / span, 1),
    }
