"""Reliability soak against a real native TorchServe: load, hostile requests mixed into good ones, a worker killed.

    python -m harness.soak                                  # make soak: 64 clients x 60 s, kill under 16 x 30 s
    python -m harness.soak --clients 16 --seconds 10 --kill-seconds 10
    python -m harness.soak --mixed-only --mixed-seconds 30  # one hostile request in four, 32 clients
    python -m harness.soak --bad-input-table                # docs/SECURITY.md's bad-input table, as served

The server serves the archive that tools/build_mar.py builds from --checkpoint, on free loopback
ports (harness/launcher.py), so it never clashes with a server of yours on 8080. Every answer is checked
against Chatbot.reply for its input (the chat CLI's reply, with the model-config's `quantize` option): a
request counts as an error when its status is wrong or no answer came, and as a mismatch when the status
is right but the body is not.
Exit status 0 when the load phase had no error or mismatch and the worker-kill phase recovered in time.

The tests (tests/test_reliability.py) run the same functions for a few seconds.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import requests

from harness.launcher import TorchServe, build_mar, start_torchserve
from harness.load import ANY_ANSWER, CLIENT_TIMEOUT_S, JSON_TYPE, Case, Result, run_load, send, summarize
from model import Chatbot, load_chatbot
from model.voc import SPECIAL_WORDS
from tools.server_config import model_config, read_properties
from train.runs import add_checkpoint_flags, parse_with_checkpoint

RECOVERY_LIMIT_S = 30  # the service must answer correctly again this soon after a worker is killed
MAX_REQUEST_SIZE = int(read_properties()["max_request_size"])
TEXT = {"Content-Type": "text/plain"}
UNKNOWN_WORD = "zorblax"


def vocabulary_texts(chatbot: Chatbot, count: int, seed: int = 0) -> list[str]:
    """`count` different texts of 1-6 known words; every third one has an unknown word too."""
    # every token as text (a word, or a BPE piece): the tokenizer interface, whichever kind the model has
    words = [w for w in (chatbot.voc.decode([i]).strip() for i in range(len(SPECIAL_WORDS), chatbot.voc.num_words))
             if w]
    rng = random.Random(seed)
    texts: list[str] = []
    while len(texts) < count:
        text = " ".join(rng.choice(words) for _ in range(rng.randint(1, 6)))
        if len(texts) % 3 == 2:
            text += f" {UNKNOWN_WORD}"
        if text not in texts:
            texts.append(text)
    return texts


def answer_case(name: str, request: dict, chatbot: Chatbot, text: str) -> Case:
    """The case of a text whose answer depends on the model's tokens: its reply, or 422 NoKnownWords where a word
    vocabulary knows none of its words (a BPE model answers everything)."""
    reply = chatbot.reply(text)
    return Case(name, request, reply=reply.text) if reply.error is None else \
        Case(name, request, 422, kind="NoKnownWords")


def load_cases(chatbot: Chatbot, count: int = 24) -> list[Case]:
    """The load mix: raw-text and JSON requests with their reference replies, and a few bad requests."""
    cases = []
    for i, text in enumerate(vocabulary_texts(chatbot, count)):
        request = {"json": {"text": text}} if i % 2 else {"data": text.encode(), "headers": TEXT}
        cases.append(Case(f"text {i}", request, reply=chatbot.reply(text).text))
    cases += [
        answer_case("unknown words only", {"data": f"{UNKNOWN_WORD} quuxly".encode(), "headers": TEXT}, chatbot,
                    f"{UNKNOWN_WORD} quuxly"),
        Case("empty JSON text", {"json": {"text": " "}}, 400, kind="EmptyInput"),
        Case("too long", {"data": b"a " * 600, "headers": TEXT}, 413, kind="InputTooLong"),
    ]
    return cases


def one_bad_in(every: int, good: list[Case], bad: list[Case]) -> list[Case]:
    """A cycle of cases where every `every`-th one is bad (each good and bad case used in turn)."""
    count = max(len(bad) * every, len(good) * every // (every - 1))
    return [bad[(i // every) % len(bad)] if i % every == every - 1 else good[(i - i // every) % len(good)]
            for i in range(count)]


def mixed_summary(results: list[Result], good: list[Case]) -> dict:
    """Mixed-load figures: good requests sent and how many did not get their reply; the bad ones' statuses."""
    names = {c.name for c in good}
    good_results = [r for r in results if r.case.name in names]
    bad_results = [r for r in results if r.case.name not in names]
    return {
        "good_sent": len(good_results),
        "good_not_200": sum(r.status != 200 for r in good_results),
        "good_wrong_reply": sum(r.status == 200 and not r.correct for r in good_results),
        "bad_sent": len(bad_results),
        "bad_statuses": dict(sorted(Counter(str(r.status) for r in bad_results).items())),
        "bad_unexpected": sorted({f"{r.case.name}: {r.status}" for r in bad_results if not r.correct}),
    }


@dataclass
class KillReport:
    """What a worker SIGKILL in the middle of a load did."""

    killed_pids: list[int] = field(default_factory=list)
    killed_at: float = 0.0  # time.monotonic()
    results: list[Result] = field(default_factory=list)

    @property
    def failed(self) -> list[Result]:
        return [r for r in self.results if not r.correct]

    @property
    def recovery_s(self) -> float | None:
        """From the kill to the first correct answer to a request sent after it (None: never)."""
        ends = [r.end for r in self.results if r.correct and r.start > self.killed_at]
        return min(ends) - self.killed_at if ends else None

    def summary(self) -> dict:
        failed = self.failed
        return {
            "requests": len(self.results),
            "failed": len(failed),
            "failed_statuses": dict(Counter(str(r.status) for r in failed)),
            "failed_bodies": sorted({r.body.replace("\n", " ")[:80] for r in failed}),
            "unanswered": sum(not isinstance(r.status, int) for r in failed),
            "recovery_s": None if self.recovery_s is None else round(self.recovery_s, 2),
            "max_latency_s": round(max(r.seconds for r in self.results), 2) if self.results else None,
        }


def kill_worker_during_load(server: TorchServe, cases: list[Case], clients: int, seconds: float,
                            kill_after: float) -> KillReport:
    """Run a load and SIGKILL every model worker `kill_after` seconds into it."""
    report = KillReport()

    def kill() -> None:
        workers = server.worker_processes()
        report.killed_at = time.monotonic()
        for worker in workers:
            with suppress(psutil.NoSuchProcess):  # exited by itself meanwhile: nothing to kill
                worker.kill()
        report.killed_pids = [w.pid for w in workers]

    timer = threading.Timer(kill_after, kill)
    timer.start()
    try:
        report.results = run_load(server.predictions_url, cases, clients, seconds)
    finally:
        timer.cancel()
    return report


def bad_input_cases(chatbot: Chatbot) -> list[Case]:
    """docs/SECURITY.md's bad-input table: each bad input, raw and as JSON, with the answer it must get."""
    over_limit = b"a" * (MAX_REQUEST_SIZE + 1)
    emoji = "hello 😀 你好 there !"
    form = "application/x-www-form-urlencoded"
    return [
        Case("raw: empty body", {"data": b""}, 400, kind="EmptyInput"),
        Case("JSON: empty body", {"data": b"", "headers": {"Content-Type": JSON_TYPE}}, 400, kind="MalformedJSON"),
        Case("raw: whitespace only", {"data": b" \t\n ", "headers": TEXT}, 400, kind="EmptyInput"),
        Case("JSON: whitespace-only text", {"json": {"text": " \t\n "}}, 400, kind="EmptyInput"),
        answer_case("raw: 64 NUL bytes", {"data": b"\0" * 64, "headers": TEXT}, chatbot, "\0" * 64),
        answer_case("JSON: text of NUL characters", {"json": {"text": "\0" * 64}}, chatbot, "\0" * 64),
        Case("raw: not UTF-8", {"data": b"hello \xff\xfe there", "headers": TEXT}, 400, kind="InvalidEncoding"),
        Case("JSON: not UTF-8", {"data": b'{"text": "hello \xff"}', "headers": {"Content-Type": JSON_TYPE}},
             400, kind="InvalidEncoding"),
        Case("raw: emoji and Chinese", {"data": emoji.encode(), "headers": TEXT}, reply=chatbot.reply(emoji).text),
        Case("JSON: emoji and Chinese", {"json": {"text": emoji}}, reply=chatbot.reply(emoji).text),
        Case("raw: a 10,000-word line", {"data": b"hello " * 10_000, "headers": TEXT}, 413, kind="InputTooLong"),
        Case("JSON: a 10,000-word text", {"json": {"text": "hello " * 10_000}}, 413, kind="InputTooLong"),
        Case(f"raw: {len(over_limit):,} bytes (max_request_size + 1)", {"data": over_limit, "headers": TEXT},
             413, kind=None),
        Case(f"JSON: over {MAX_REQUEST_SIZE:,} bytes", {"json": {"text": over_limit.decode()}}, 413, kind=None),
        Case("JSON: malformed", {"data": b'{"text": "hello', "headers": {"Content-Type": JSON_TYPE}},
             400, kind="MalformedJSON"),
        Case("JSON: no text field", {"json": {"message": "hello"}}, 400, kind="MissingText"),
        Case("JSON: text null", {"json": {"text": None}}, 400, kind="MissingText"),
        Case("JSON: text a number", {"json": {"text": 42}}, 400, kind="MissingText"),
        Case("JSON: text a list", {"json": {"text": ["hello"]}}, 400, kind="MissingText"),
        Case("JSON: a string, not an object", {"json": "hello there"}, 400, kind="MissingText"),
        answer_case("raw: only unknown words", {"data": b"zorblax quuxly", "headers": TEXT}, chatbot, "zorblax quuxly"),
        answer_case("JSON: only unknown words", {"json": {"text": "zorblax quuxly"}}, chatbot, "zorblax quuxly"),
        Case("multipart: file field data", {"files": {"data": ("q.txt", b"hello there !", "text/plain")}},
             reply=chatbot.reply("hello there !").text),
        Case("multipart: field text", {"files": {"text": (None, b"hello there !")}},
             reply=chatbot.reply("hello there !").text),
        Case("multipart: another field only", {"files": {"upload": ("q.txt", b"hello", "text/plain")}},
             415, kind="UnsupportedMediaType"),
        Case("form: text=...", {"data": {"text": "hello there !"}}, reply=chatbot.reply("hello there !").text),
        Case("form: curl -d without text=", {"data": b"hello there", "headers": {"Content-Type": form}},
             415, kind="UnsupportedMediaType"),
    ]


def hostile_cases(chatbot: Chatbot) -> list[Case]:
    """Requests built to break the parsers rather than to pass them: each must get its own 4xx (or a
    reply), and must never cost a request batched with it its reply (docs/SECURITY.md)."""
    json_ct = {"Content-Type": JSON_TYPE}
    deep = b"[" * 50_000  # past Python's recursion limit: json.loads raises RecursionError, not ValueError
    latin1 = "hello caf\xe9 there !"
    multipart = "multipart/form-data; boundary=xyz"
    return [
        Case("JSON: nested 50,000 deep", {"data": deep, "headers": json_ct}, 400, kind="MalformedJSON"),
        Case("JSON; charset=utf-8: nested 50,000 deep", {"data": b'{"text": ' + deep,
             "headers": {"Content-Type": "application/json; charset=utf-8"}}, 400, kind="MalformedJSON"),
        Case("multipart: JSON part nested 50,000 deep", {"files": {"data": ("q.json", deep, JSON_TYPE)}},
             400, kind="MalformedJSON"),
        Case("header describe: True", {"data": b"hello there !", "headers": {**TEXT, "describe": "True"}},
             kind=ANY_ANSWER),
        Case("header explain: True", {"data": b"hello there !", "headers": {**TEXT, "explain": "True"}},
             kind=ANY_ANSWER),
        Case("JSON: a 5,000-digit number", {"data": b'{"text": "hi", "n": ' + b"9" * 5000 + b"}",
             "headers": json_ct}, kind=ANY_ANSWER),  # 400 where Python limits int digits (3.11), 200 on 3.9
        Case("JSON: an unpaired surrogate", {"data": b'{"text": "hello \\ud800 there"}', "headers": json_ct},
             400, kind="InvalidEncoding"),
        Case("JSON: duplicate text keys", {"data": b'{"text": 1, "text": "hello there !"}', "headers": json_ct},
             kind=ANY_ANSWER),
        Case("raw: charset=latin-1", {"data": latin1.encode("latin-1"),
             "headers": {"Content-Type": "text/plain; charset=latin-1"}}, reply=chatbot.reply(latin1).text),
        Case("raw: charset=utf-16 with BOM", {"data": "hello there !".encode("utf-16"),
             "headers": {"Content-Type": "text/plain; charset=utf-16"}}, reply=chatbot.reply("hello there !").text),
        Case("raw: unknown charset", {"data": b"hello", "headers": {"Content-Type": "text/plain; charset=x-nope"}},
             415, kind="UnsupportedMediaType"),
        Case("raw: combining marks, ligatures, controls", {"data": "he\u0301llo\u0300 \ufb01ne \x1b[31m\x07 !".encode(),
             "headers": TEXT}, kind=ANY_ANSWER),
        Case("multipart: no closing boundary", {"data": b"--xyz\r\nContent-Disposition: form-data; name=text"
             b"\r\n\r\nhello", "headers": {"Content-Type": multipart}}, kind=ANY_ANSWER),
        Case("multipart: boundary missing", {"data": b"hello", "headers": {"Content-Type": "multipart/form-data"}},
             kind=ANY_ANSWER),
    ]


def answer_summary(result: Result) -> str:
    """One line for a table: the error type and message, the reply, or an empty body."""
    if not result.body:
        return "(empty body: refused by TorchServe's frontend)"
    try:
        body = json.loads(result.body)
    except ValueError:
        return f"reply: {result.body.strip()}"
    if "type" in body:
        return f"{body['type']}: {body['message']}"
    return f"reply (JSON): {body.get('reply')}"


def markdown_table(results: list[Result]) -> str:
    """| input | status | answer | rows."""
    rows = ["| input | status | answer |", "|---|---|---|"]
    rows += [f"| {r.case.name} | {r.status} | {answer_summary(r).replace('|', '/')} |" for r in results]
    return "\n".join(rows)


def served_quantize() -> bool | str:
    """The handler's `quantize` option in the model-config packed into the archive: the reference
    chatbot must use the same weights as the server."""
    return model_config()["handler"].get("quantize", False)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m harness.soak", description=__doc__.split("\n")[0])
    add_checkpoint_flags(parser, "the checkpoint to serve")
    parser.add_argument("--clients", type=int, default=64, help="concurrent clients in the load phase")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the load phase")
    parser.add_argument("--kill-clients", type=int, default=16, help="concurrent clients in the worker-kill phase")
    parser.add_argument("--kill-seconds", type=float, default=30.0, help="length of the worker-kill phase")
    parser.add_argument("--kill-after", type=float, default=5.0, help="seconds into that phase to SIGKILL the worker")
    parser.add_argument("--mixed-clients", type=int, default=32,
                        help="concurrent clients in the mixed phase (one hostile request in four)")
    parser.add_argument("--mixed-seconds", type=float, default=30.0, help="length of the mixed phase")
    parser.add_argument("--mixed-only", action="store_true", help="run only the mixed phase")
    parser.add_argument("--bad-input-table", action="store_true",
                        help="only send the bad-input cases and print their markdown table")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="a new folder to keep the server's files and logs in (default: a temporary one, removed)")
    return parse_with_checkpoint(parser, argv)


def mixed_phase(server: TorchServe, chatbot: Chatbot, clients: int, seconds: float) -> dict:
    """Load with one hostile request in four; the figures, and whether the worker kept its pid."""
    good = [c for c in load_cases(chatbot) if c.status == 200]
    pids = sorted(p.pid for p in server.worker_processes())
    results = run_load(server.predictions_url, one_bad_in(4, good, hostile_cases(chatbot) + bad_input_cases(chatbot)),
                       clients, seconds)
    return {**mixed_summary(results, good), "worker_pid_kept": sorted(p.pid for p in server.worker_processes()) == pids}


def mixed_ok(mixed: dict) -> bool:
    return mixed["good_not_200"] == mixed["good_wrong_reply"] == 0 and not mixed["bad_unexpected"] and \
        mixed["worker_pid_kept"]


def print_mixed(mixed: dict, clients: int, seconds: float) -> None:
    """The mixed phase's figures, ending in `name: value` lines."""
    print(f"mixed: {clients} clients x {seconds:g} s, one hostile request in four: {json.dumps(mixed)}")
    for name in ("good_sent", "good_not_200", "good_wrong_reply", "bad_sent", "worker_pid_kept"):
        print(f"mixed_{name}: {mixed[name]}")


def soak(server: TorchServe, chatbot: Chatbot, args: argparse.Namespace) -> bool:
    """Run the phases, print their figures; True when every check passed."""
    mixed = mixed_phase(server, chatbot, args.mixed_clients, args.mixed_seconds)
    print_mixed(mixed, args.mixed_clients, args.mixed_seconds)
    if args.mixed_only:
        return mixed_ok(mixed)
    cases = load_cases(chatbot)
    load = summarize(run_load(server.predictions_url, cases, args.clients, args.seconds))
    print(f"load: {args.clients} clients x {args.seconds:g} s: {json.dumps(load)}")
    report = kill_worker_during_load(server, cases, args.kill_clients, args.kill_seconds, args.kill_after)
    kill = report.summary()
    print(f"worker kill: {args.kill_clients} clients x {args.kill_seconds:g} s, SIGKILL pid(s) "
          f"{report.killed_pids} at {args.kill_after:g} s: {json.dumps(kill)}")
    ok = load["errors"] == 0 and load["mismatches"] == 0 and mixed_ok(mixed)
    ok &= kill["unanswered"] == 0 and kill["recovery_s"] is not None and kill["recovery_s"] < RECOVERY_LIMIT_S
    ok &= kill["max_latency_s"] < CLIENT_TIMEOUT_S and bool(report.killed_pids)
    return ok


def main(argv=None) -> int:
    args = parse_args(argv)
    chatbot = load_chatbot(args.checkpoint, quantize=served_quantize())
    with tempfile.TemporaryDirectory(prefix="soak_") as tmp:
        workdir = args.workdir or Path(tmp)
        mar = build_mar(args.checkpoint, workdir / "model-store")
        print(f"serving {args.checkpoint} ({chatbot.voc.num_words} words, quantize: {served_quantize()}) "
              f"from {workdir}")
        with start_torchserve(workdir / "torchserve", mar.parent) as server:
            if args.bad_input_table:
                session = requests.Session()
                cases = bad_input_cases(chatbot) + hostile_cases(chatbot)
                print(markdown_table([send(session, server.predictions_url, c) for c in cases]))
                return 0
            ok = soak(server, chatbot, args)
    print("soak: ok" if ok else "soak: FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
