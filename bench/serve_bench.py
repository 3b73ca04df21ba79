"""Load-test the chatbot under native TorchServe against an echo handler (TorchServe's own ceiling).

    python -m bench.serve_bench                    # what `make bench-serve` runs
    python -m bench.serve_bench --scenarios batched --concurrency 1 16 --max-batch-delay 2

Scenarios, each on its own native TorchServe (harness.launcher: free loopback ports, always
stopped) with the same config.properties, worker count and batching settings:
  echo     bench/echo_handler.py answers with the body: what TorchServe and this client cost alone
  batch1   the chatbot with batchSize 1
  batched  the chatbot with dynamic batching (handler/model-config.yaml's batchSize, maxBatchDelay)
  greedy   the batched server, every request JSON with no decoding field (greedy)
  beam5    the batched server, every request JSON with {"beam_size": 5}
  sample   the batched server, every request JSON with {"temperature": 0.8, "top_p": 0.9, "seed": 1}
  openai   the batched server, every request a Chat Completions body on the OpenAI route (greedy, as greedy's);
           then, one client at a time, streamed requests timed to their first token (TTFT)
  kserve   the same archive on the KServe runtime (kserve_runtime/, harness.kserve), started beside the batched
           TorchServe and measured in turn with it: greedy's requests as KServe v1 instances, one per request
  before   a second TorchServe beside the batched one, its archive built as before issue 30 (handler options
           compiled_decode: false, Python's greedy loop; metrics_interval_s: 0, every metric update at once;
           glibc's malloc, no tcmalloc preloaded), measured in turn with it: batched's requests
  litserve the peer: LitServe serving the PyTorch Chatbot Tutorial's own evaluate loop with torch.ao int8 on the
           same weights (bench/litserve_tutorial.py), beside the batched TorchServe and measured in turn with it:
           batched's prompts whose every word the tutorial knows, as JSON, each reply checked against the tutorial's
The decoding scenarios (greedy, beam5, sample) send the same prompts as the same JSON, so their ratios
compare decoding alone, not JSON against raw text; openai against greedy compares the routes alone.
Each server first serves --server-warmup-seconds of all its scenarios' requests, uncounted: the frontend's JVM
compiles its hot paths in the first seconds, which would otherwise count against whichever scenario comes first.
For each number of concurrent clients, every client thread posts prompts back to back over its
own keep-alive requests.Session (harness.load.run_load) for --warmup-seconds (not counted), then
--seconds (counted).
Every reply is checked: a non-200 status or a failed request is an error; a 200 whose text is
not Chatbot.reply's for the same input (same weights and quantisation, in this process) a mismatch.

Checkpoint: --checkpoint, else the newest runs/**/*_checkpoint.tar if it has the tutorial's
sizes (hidden 500), else random weights at the tutorial's sizes over the Cornell vocabulary
(7,826 words), whose EOS can never win so that every reply costs the full max_length steps.
Prompts: the checkpoint's own held-out queries (its run's corpus, at --data-path if it moved), Cornell's
held-out queries for random weights, else a fixed list when the corpus is not on this machine.

Each server measures its scenarios --rounds times, in turn; the table pools the rounds. A headline ratio is
the median of its per-round ratios (printed above them): scenarios of one round ran minutes apart at most,
so this shared 2-core guest's slow and fast minutes cancel within a round instead of moving the ratio.
The last lines are the headline ratios, all from this one run:
  serve_ratio_vs_echo_c16  batched / echo requests per second at 16 clients
  batching_gain_c16        batched / batch1 requests per second at 16 clients
  p50_ms_c1                batched median latency with one client (ms)
  beam5_vs_greedy_c16      beam5 / greedy requests per second at 16 clients
  beam5_p50_vs_greedy_c1   beam5 / greedy median latency with one client
  sample_vs_greedy_c16     sample / greedy requests per second at 16 clients
  openai_vs_json_c16       openai / greedy requests per second at 16 clients (the OpenAI route / the JSON API)
  openai_p50_ms_c1         the OpenAI route's median latency with one client, non-streamed (ms)
  openai_ttft_p50_ms_c1    median time to the first token of a streamed request, one client (ms)
  kserve_vs_torchserve_c16 kserve / greedy requests per second at 16 clients (the same workload on each engine)
  kserve_p50_vs_torchserve_c1  kserve / greedy median latency with one client
  torchserve_p50_ms_c1, kserve_p50_ms_c1  those medians (ms)
  before_p50_ms_c1, p50_vs_before_c1, rps_vs_before_c16  the decode before issue 30: its median latency with one
                           client (ms), batched / before median latency at 1 client and requests per second at 16
  batched_rps_c1, batched_rps_c16, litserve_rps_c1, litserve_rps_c16, litserve_p50_ms_c1  the peer row and ours
  rps_vs_litserve_c1, rps_vs_litserve_c16  batched / litserve requests per second
"""
from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import numpy as np
import psutil
import requests
import torch
import yaml

from bench import profile
from bench.litserve_tutorial import knows_every_word, serve_tutorial, tutorial_answer, tutorial_bot
from bench.workload import (
    DECODING_FIELDS,
    add_quantize_flag,
    handler_defaults,
    held_out_prompts,
    newest_tutorial_bot,
    random_checkpoint,
    synthetic_voc,
    tables_megabytes,
    weights_megabytes,
)
from harness.kserve import start_kserve
from harness.launcher import MODEL_NAME, REPO, TorchServe, build_mar, start_torchserve, wait_until_ready
from harness.load import Case, run_load
from model import Chatbot, load_chatbot
from model.checkpoint import serving_subset
from model.schema import parse_options
from tools.server_config import ARCHIVE_NAME, malloc_library, model_config
from train.runs import add_checkpoint_flags, add_data_path_flag

logger = logging.getLogger("serve_bench")

SCENARIOS = ("echo", "batch1", "batched", "greedy", "beam5", "sample", "openai", "kserve", "before", "litserve")
ON_BATCHED = (*DECODING_FIELDS, "openai", "kserve", "before", "litserve")  # on or beside the batched server, in turn
ECHO_CONFIG = REPO / "bench" / "echo-config.yaml"
ECHO_HANDLER = REPO / "bench" / "echo_handler.py"
TEXT_HEADERS = {"Content-Type": "text/plain; charset=utf-8"}
REQUEST_TIMEOUT_S = 60


# ---------------------------------------------------------------- checkpoint and prompts

@dataclass
class Workload:
    """What is served and sent: the checkpoint file, how it was chosen, the prompts and their replies."""

    checkpoint: Path
    source: str
    prompts: list[str]
    expected: dict[str, str] = field(default_factory=dict)  # prompt -> Chatbot.reply(prompt).text
    expected_by_scenario: dict[str, dict[str, str]] = field(default_factory=dict)  # greedy, beam5, sample: theirs


def prepare_workload(args: argparse.Namespace, workdir: Path) -> tuple[Workload, Chatbot]:
    """Choose the checkpoint (a serving-only copy in workdir) and the prompts; the float32 chatbot it serves."""
    bot = load_chatbot(args.checkpoint) if args.checkpoint else newest_tutorial_bot(args.runs)
    voc, prompts, where = held_out_prompts(bot, args.data_path)
    if bot is None:
        bot = load_chatbot(random_checkpoint(voc or synthetic_voc(prompts), args.seed))
        source = (f"random weights at the tutorial's sizes (hidden 500, 2+2 layers, "
                  f"{bot.checkpoint['config']['attn_model']} attention, {bot.voc.num_words} words, seed {args.seed}; "
                  "EOS disabled)")
    else:
        ckpt = bot.checkpoint
        source = f"{args.checkpoint or 'the newest checkpoint'} (iteration {ckpt.get('iteration', '?')}, hidden " \
                 f"{ckpt['config']['hidden_size']}, {bot.voc.num_words} {bot.voc.kind} tokens)"
    source += f"; prompts: {where}"
    served = workdir / "served_checkpoint.tar"  # weights only: smaller, faster-to-build archives
    torch.save(serving_subset(bot.checkpoint), served)
    return Workload(served, source, prompts), bot


def reference_replies(workload: Workload, bot: Chatbot, limit: int, scenarios: Sequence[str]) -> None:
    """Keep the first `limit` prompts the bot can answer and record Chatbot.reply for each (with each
    decoding scenario's options too)."""
    for prompt in workload.prompts:
        reply = bot.reply(prompt)
        if reply.error is None:
            workload.expected[prompt] = reply.text
        if len(workload.expected) == limit:
            break
    workload.prompts = list(workload.expected)
    for scenario in scenarios:
        if scenario in DECODING_FIELDS and DECODING_FIELDS[scenario]:
            options = parse_options(DECODING_FIELDS[scenario], bot.default_options, {})
            workload.expected_by_scenario[scenario] = {p: bot.reply(p, options).text for p in workload.prompts}


# ---------------------------------------------------------------- archives and servers

def scenario_config(scenario: str, args: argparse.Namespace, workdir: Path) -> Path:
    """The scenario's model-config: its base file with the shared worker, batching and handler settings."""
    config = yaml.safe_load(ECHO_CONFIG.read_text()) if scenario == "echo" else model_config()
    config.update(minWorkers=args.workers, maxWorkers=args.workers, maxBatchDelay=args.max_batch_delay,
                  batchSize=1 if scenario == "batch1" else args.batch_size)
    if scenario != "echo":
        config["handler"].update(quantize=args.quantize, threads=args.threads, threads_alone=args.threads_alone)
    path = workdir / f"{scenario}-config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def build_echo_mar(config_file: Path, store: Path) -> Path:
    """bench/echo_handler.py as store/echo.mar (no weights)."""
    archiver = Path(sys.executable).with_name("torch-model-archiver")
    command = [str(archiver), "--model-name", "echo", "--version", "1.0", "--handler", str(ECHO_HANDLER),
               "--config-file", str(config_file), "--export-path", str(store), "--force"]
    with tempfile.TemporaryDirectory(prefix="echo_mar_") as tmp:  # the archiver works in $TMPDIR/echo
        subprocess.run(command, check=True, capture_output=True, env={**os.environ, "TMPDIR": tmp})
    return store / "echo.mar"


def worker_rss_mb(server: TorchServe) -> list[float]:
    """Resident memory of each Python worker of the server alive now (MB)."""
    sizes = []
    for worker in server.worker_processes():
        with suppress(psutil.NoSuchProcess):
            sizes.append(worker.memory_info().rss / 1e6)
    return sizes


# ---------------------------------------------------------------- load

@dataclass
class Level:
    """The counted requests of one scenario at one concurrency."""

    scenario: str
    clients: int
    latencies_ms: list[float]  # of 200 replies
    errors: int
    mismatches: int
    seconds: float
    round: int = 0  # which of the --rounds (pooled levels: 0)

    @property
    def throughput(self) -> float:
        """200 replies per second."""
        return len(self.latencies_ms) / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")


def scenario_cases(expected: dict[str, str], fields: dict | None) -> list[Case]:
    """One Case per prompt whose reply must be expected[prompt]: raw text for fields None, else JSON with them."""
    return [Case(prompt, {"data": prompt.encode(), "headers": TEXT_HEADERS} if fields is None else
                 {"json": {"text": prompt, **fields}}, reply=reply) for prompt, reply in expected.items()]


def chat_cases(expected: dict[str, str], stream: bool = False) -> list[Case]:
    """One Chat Completions Case per prompt (the OpenAI route), whose reply must be expected[prompt]."""
    return [Case(prompt, {"json": {"model": MODEL_NAME, "messages": [{"role": "user", "content": prompt}],
                                   "stream": stream}}, reply=reply) for prompt, reply in expected.items()]


def kserve_cases(expected: dict[str, str]) -> list[Case]:
    """greedy's requests as KServe v1 bodies of one instance each, whose reply must be expected[prompt]."""
    return [Case(prompt, {"json": {"instances": [{"text": prompt}]}}, reply=reply)
            for prompt, reply in expected.items()]


def scenario_url(server: TorchServe, name: str) -> str:
    """Where a scenario's requests go: the OpenAI route for openai, else the JSON and text API."""
    return f"{server.openai_url}/chat/completions" if name == "openai" else server.predictions_url


def first_token(session: requests.Session, url: str, case: Case) -> tuple[float, bool]:
    """(ms to the first chunk with content, whether the deltas joined are case.reply) of one streamed request."""
    start, first, deltas = time.monotonic(), None, []
    with session.post(url, stream=True, timeout=REQUEST_TIMEOUT_S, **case.request) as response:
        for line in response.iter_lines():
            if line.startswith(b"data: {"):
                choices = json.loads(line[6:])["choices"]  # [] in a usage chunk
                delta = choices[0]["delta"].get("content") if choices else ""
                if delta and first is None:
                    first = time.monotonic()
                deltas.append(delta or "")
    return 1000 * ((first or time.monotonic()) - start), "".join(deltas) == case.reply


def time_to_first_token(url: str, cases: Sequence[Case], seconds: float) -> tuple[list[float], int]:
    """(ms to the first token of each streamed request, mismatches): one client, back to back, for `seconds`."""
    times, mismatches, deadline = [], 0, time.monotonic() + seconds
    with requests.Session() as session:
        for case in itertools.cycle(cases):
            if time.monotonic() > deadline:
                break
            ms, right = first_token(session, url, case)
            times.append(ms)
            mismatches += not right
    return times, mismatches


def measure(scenario: str, url: str, cases: Sequence[Case], clients: int, args: argparse.Namespace) -> Level:
    """harness.load.run_load of `cases` with `clients` clients; count the requests started after the warm-up and
    finished in time: 200 replies (right or wrong), errors (any other status, or no answer), mismatches (a wrong
    200 reply)."""
    start = time.monotonic()
    results = run_load(url, cases, clients, args.warmup_seconds + args.seconds, args.max_requests)
    counted_from = start + args.warmup_seconds
    counted = [r for r in results if r.start >= counted_from and r.end <= counted_from + args.seconds]
    end = max((r.end for r in counted), default=counted_from)
    return Level(scenario, clients, [1000 * r.seconds for r in counted if r.status == 200],
                 sum(r.status != 200 for r in counted), sum(r.status == 200 and not r.correct for r in counted),
                 end - counted_from)


@contextmanager
def profiling(out: Path | None, pid: Callable[[], int], args: argparse.Namespace):
    """py-spy the process pid() gives through the block into `out` and log the summary (nothing when out is None)."""
    if out is None:
        yield
        return
    recorder = profile.record(pid(), args.warmup_seconds + args.seconds, out)
    try:
        yield
    finally:
        recorder.wait()
        logger.info("%s", profile.report(out))


def run_scenario(scenario: str, workload: Workload, args: argparse.Namespace, workdir: Path,
                 decoding: Sequence[str] = ()) -> tuple[list, list]:
    """Serve one scenario and measure every concurrency: (levels, workers' resident memory in MB).

    decoding: the decoding scenarios (greedy, beam5, sample) measured on the same server after it, in turn.
    """
    workdir = workdir / scenario
    store = workdir / "model-store"
    store.mkdir(parents=True)
    config = scenario_config(scenario, args, workdir)
    if scenario == "echo":
        build_echo_mar(config, store)
        # the echo answers the body itself: a prompt sent as a line comes back as the chatbot's line would
        overrides, expected = {"load_models": f"{MODEL_NAME}=echo.mar"}, {f"{p}\n": p for p in workload.prompts}
    else:
        build_mar(workload.checkpoint, store, config)
        overrides, expected = {}, workload.expected
    overrides["default_workers_per_model"] = str(args.workers)
    with ExitStack() as stack:
        server = stack.enter_context(start_torchserve(workdir / "server", store, config_overrides=overrides))
        wait_until_ready(server, args.workers)  # the launcher waits for one
        cases = {name: chat_cases(expected) if name == "openai" else kserve_cases(expected) if name == "kserve" else
                 scenario_cases(workload.expected_by_scenario.get(name, expected), DECODING_FIELDS.get(name))
                 for name in (scenario, *decoding)}
        urls = {name: scenario_url(server, name) for name in cases}
        pids = {name: lambda: server.worker_processes()[0].pid for name in cases}  # a worker: its process decodes
        if "kserve" in cases:  # the same archive on the other engine, beside this one
            kserve = stack.enter_context(start_kserve(workdir / "kserve", store / f"{ARCHIVE_NAME}.mar"))
            urls["kserve"] = kserve.predict_url
            pids["kserve"] = lambda: kserve.process.pid
        if "before" in cases:  # the decode before issue 30, on a TorchServe of its own beside this one
            urls["before"] = stack.enter_context(serve_before(workload, args, workdir / "before")).predictions_url
        if "litserve" in cases:  # the peer: the tutorial's own loop under LitServe
            urls["litserve"] = stack.enter_context(serve_tutorial(workdir / "litserve", workload.checkpoint))
            cases["litserve"] = tutorial_cases(workload)
        warm_up([(urls[name], cases[name]) for name in cases], max(args.concurrency), args.server_warmup_seconds)
        levels = []
        for turn in range(args.rounds):  # rounds interleave the scenarios: a warming server favours none of them
            for name in cases:
                for clients in args.concurrency:
                    profiled = args.profile and turn == 0 and clients == max(args.concurrency) and \
                        name in ("batched", *DECODING_FIELDS, "openai", "kserve")
                    with profiling(args.profile / f"{name}-c{clients}.txt" if profiled else None, pids[name], args):
                        levels.append(measure(name, urls[name], cases[name], clients, args))
                    levels[-1].round = turn
                    logger.info("%s", row(levels[-1]))
        if "openai" in cases:
            args.ttft = time_to_first_token(urls["openai"], chat_cases(expected, stream=True), args.seconds)
        return levels, worker_rss_mb(server)


@contextmanager
def serve_before(workload: Workload, args: argparse.Namespace, workdir: Path):
    """A TorchServe serving the workload's archive as before issue 30 (compiled_decode: false, metrics_interval_s: 0,
    glibc's malloc), batched's settings otherwise."""
    store = workdir / "model-store"
    store.mkdir(parents=True)
    config = yaml.safe_load(scenario_config("batched", args, workdir).read_text())
    config["handler"].update(compiled_decode=False, metrics_interval_s=0)
    path = workdir / "before-config.yaml"
    path.write_text(yaml.safe_dump(config))
    build_mar(workload.checkpoint, store, path)
    with start_torchserve(workdir / "server", store, config_overrides={"default_workers_per_model": str(args.workers)},
                          malloc=False) as server:
        wait_until_ready(server, args.workers)
        yield server


def tutorial_cases(workload: Workload) -> list[Case]:
    """The litserve peer's cases: the workload's prompts the tutorial knows every word of, as JSON, each with the
    tutorial's own reply (bench.litserve_tutorial computes it the same way in this process)."""
    searcher, voc = tutorial_bot(workload.checkpoint)
    known = [p for p in workload.prompts if knows_every_word(voc, p)]
    if not known:
        raise RuntimeError("the litserve peer needs prompts whose every word the checkpoint's vocabulary holds")
    return [Case(p, {"json": {"text": p}}, reply=tutorial_answer(searcher, voc, p)) for p in known]


def warm_up(targets: Sequence[tuple[str, Sequence[Case]]], clients: int, seconds: float) -> None:
    """Send every scenario's requests (targets: its URL and cases) in turn for `seconds` in all, uncounted (the
    frontend's JVM compiles its hot paths in the first seconds)."""
    for url, cases in targets:
        run_load(url, cases, clients, seconds / len(targets))


def pooled(levels: Sequence[Level]) -> list[Level]:
    """One Level per (scenario, clients): the rounds' replies, errors, mismatches and seconds together."""
    merged: dict[tuple, Level] = {}
    for lv in levels:
        key = (lv.scenario, lv.clients)
        if key not in merged:
            merged[key] = Level(lv.scenario, lv.clients, [], 0, 0, 0.0)
        m = merged[key]
        m.latencies_ms += lv.latencies_ms
        m.errors, m.mismatches, m.seconds = m.errors + lv.errors, m.mismatches + lv.mismatches, m.seconds + lv.seconds
    return list(merged.values())


# ---------------------------------------------------------------- report

TABLE_HEADER = ("| scenario | clients | requests/s | p50 ms | p99 ms | replies | errors | mismatches |\n"
                "|---|---:|---:|---:|---:|---:|---:|---:|")


def row(level: Level) -> str:
    """One markdown table row."""
    return (f"| {level.scenario} | {level.clients} | {level.throughput:.1f} | {level.percentile(50):.1f} | "
            f"{level.percentile(99):.1f} | {len(level.latencies_ms)} | {level.errors} | {level.mismatches} |")


def find(levels: Sequence[Level], scenario: str, clients: int) -> Level | None:
    return next((lv for lv in levels if lv.scenario == scenario and lv.clients == clients), None)


def throughput(level: Level) -> float:
    return level.throughput


def median_ms(level: Level) -> float:
    return level.percentile(50)


def round_ratios(levels: Sequence[Level], top: str, bottom: str, clients: int,
                 figure: Callable[[Level], float] = throughput) -> list[float]:
    """figure(top) / figure(bottom) at `clients` in each round that measured both (default: requests per second)."""
    found = []
    for turn in sorted({lv.round for lv in levels}):
        mine = [lv for lv in levels if lv.round == turn]
        a, b = find(mine, top, clients), find(mine, bottom, clients)
        if a and b and figure(b) > 0:
            found.append(figure(a) / figure(b))
    return found


def ratio(levels: Sequence[Level], top: str, bottom: str, clients: int,
          figure: Callable[[Level], float] = throughput) -> str:
    """The median over rounds of round_ratios, or n/a when either was not run. The scenarios of a round ran
    within minutes (on one server, back to back for the decoding ones), so a ratio within a round is not moved
    by how fast this shared machine was that minute, as a ratio of figures pooled over rounds is."""
    found = round_ratios(levels, top, bottom, clients, figure)
    return f"{float(np.median(found)):.2f}" if found else "n/a"


def plot(levels: Sequence[Level], path: Path, title: str) -> None:
    """Throughput and p99 latency against concurrent clients, one line per scenario."""
    from matplotlib.figure import Figure  # Agg through Figure alone: no display, no pyplot state

    fig = Figure(figsize=(10, 4))
    ax_rate, ax_p99 = fig.subplots(1, 2)
    for scenario in SCENARIOS:
        mine = [lv for lv in levels if lv.scenario == scenario]
        if mine:
            clients = [lv.clients for lv in mine]
            ax_rate.plot(clients, [lv.throughput for lv in mine], marker="o", label=scenario)
            ax_p99.plot(clients, [lv.percentile(99) for lv in mine], marker="o", label=scenario)
    ticks = sorted({lv.clients for lv in levels})
    for ax, label in ((ax_rate, "requests/s"), (ax_p99, "p99 latency (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(ticks, [str(c) for c in ticks], minor=False)
        ax.set_xticks([], minor=True)
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def machine() -> str:
    """CPU model, cores, load average now and the versions that matter."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() \
        else platform.processor()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{cpu}, {os.cpu_count()} cores, load average now {load}; Python {platform.python_version()}, "
            f"torch {torch.__version__}, torchserve {version('torchserve')}; servers preload "
            f"{malloc_library() or 'nothing'}")


# ---------------------------------------------------------------- CLI

def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    d = handler_defaults()
    p = argparse.ArgumentParser(prog="python -m bench.serve_bench", description=__doc__.splitlines()[0])
    add_checkpoint_flags(p, "checkpoint to serve", default="the newest runs/**/best_checkpoint.tar if its hidden "
                                                           "size is 500, else random tutorial-size weights")
    add_data_path_flag(p)
    p.add_argument("--prompts", type=int, default=300, help="distinct prompts to cycle through (default: 300)")
    p.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS),
                   help="what to serve (default: all; greedy, beam5, sample and openai need batched)")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 64],
                   help="numbers of concurrent clients (default: 1 4 16 64)")
    p.add_argument("--seconds", type=float, default=5.0, help="counted seconds per concurrency (default: 5)")
    p.add_argument("--warmup-seconds", type=float, default=1.5,
                   help="uncounted seconds before each measurement (default: 1.5)")
    p.add_argument("--server-warmup-seconds", type=float, default=6.0,
                   help="uncounted seconds of every scenario's requests when a server is ready (default: 6)")
    p.add_argument("--rounds", type=int, default=4,
                   help="times each scenario is measured on its server, in turn with the others; the table pools "
                        "them, a headline ratio is the median of the rounds' (default: 4)")
    p.add_argument("--max-requests", type=int, default=50_000,
                   help="end a measurement after this many requests (default: 50000)")
    p.add_argument("--batch-size", type=int, default=d["batch_size"],
                   help=f"batchSize of the echo and batched scenarios (default: model-config's, {d['batch_size']})")
    p.add_argument("--max-batch-delay", type=int, default=d["max_batch_delay"],
                   help=f"maxBatchDelay in ms, every scenario (default: model-config's, {d['max_batch_delay']})")
    p.add_argument("--workers", type=int, default=d["workers"],
                   help=f"workers per model, every scenario (default: model-config's minWorkers, {d['workers']})")
    p.add_argument("--threads", type=int, default=d["threads"],
                   help=f"handler option threads: torch threads per worker, 0 for one per core "
                        f"(default: model-config's, {d['threads']})")
    p.add_argument("--threads-alone", type=int, default=d["threads_alone"],
                   help=f"handler option threads_alone: torch threads for a batch of one request, 0 for as "
                        f"--threads (default: model-config's, {d['threads_alone']})")
    add_quantize_flag(p, d["quantize"])
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights (default: 0)")
    p.add_argument("--profile", type=Path, default=None,
                   help="py-spy each scenario's serving process (a worker, the KServe runtime) through its first "
                        "measurement at the highest concurrency, into this folder, and print where its time goes "
                        "(bench/profile.py)")
    p.add_argument("--plot", type=Path, default=REPO / "docs" / "serve_bench.png",
                   help="PNG to write, '' for none (default: docs/serve_bench.png)")
    return p.parse_args(argv)


def report(levels: Sequence[Level], rss: dict[str, list[float]], workload: Workload, sizes: str,
           args: argparse.Namespace) -> None:
    """The table, memory and sizes, then the three headline ratios as the last lines."""
    print(f"\nmachine: {machine()}; load average before the run {args.load_before}")
    print(f"checkpoint: {workload.source}")
    lengths = [len(reply.split()) for reply in workload.expected.values()]
    print(f"prompts: {len(workload.prompts)}; mean reply length {np.mean(lengths):.1f} words "
          f"(+ EOS when shorter than max_length)")
    print(f"settings: workers {args.workers}, threads {args.threads or 'default'} "
          f"({args.threads_alone or args.threads or 'default'} for a lone request), quantize {args.quantize}, "
          f"batchSize {args.batch_size} (batch1: 1), maxBatchDelay {args.max_batch_delay} ms, "
          f"{args.seconds:g} s per level after {args.warmup_seconds:g} s warm-up")
    print(f"weights on disk (torch.save of the state_dicts): {sizes}")
    print("worker resident memory: " + ", ".join(f"{s} {' + '.join(f'{m:.0f} MB' for m in v)}"
                                                 for s, v in rss.items()))
    print("\n" + TABLE_HEADER)
    for level in pooled(levels):
        print(row(level))
    c1 = find(pooled(levels), "batched", 1)
    serving = [("serve_ratio_vs_echo_c16", "batched", "echo", 16, throughput),
               ("batching_gain_c16", "batched", "batch1", 16, throughput)]
    decoding = [("beam5_vs_greedy_c16", "beam5", "greedy", 16, throughput),
                ("beam5_p50_vs_greedy_c1", "beam5", "greedy", 1, median_ms),
                ("sample_vs_greedy_c16", "sample", "greedy", 16, throughput)]
    if not any(lv.scenario in ("beam5", "sample") for lv in levels):
        decoding = []
    if any(lv.scenario == "openai" for lv in levels):
        decoding.append(("openai_vs_json_c16", "openai", "greedy", 16, throughput))
    if any(lv.scenario == "kserve" for lv in levels):
        decoding += [("kserve_vs_torchserve_c16", "kserve", "greedy", 16, throughput),
                     ("kserve_p50_vs_torchserve_c1", "kserve", "greedy", 1, median_ms)]
    print("\nper round (the headline is the median): " + "; ".join(
        f"{name} {' '.join(f'{x:.2f}' for x in round_ratios(levels, *rest))}" for name, *rest in serving + decoding))
    print()
    for name, *rest in serving:
        print(f"{name}: {ratio(levels, *rest)}")
    print(f"p50_ms_c1: {c1.percentile(50):.1f}" if c1 else "p50_ms_c1: n/a")
    for name, *rest in decoding:
        print(f"{name}: {ratio(levels, *rest)}")
    openai_c1 = find(pooled(levels), "openai", 1)
    if openai_c1 and getattr(args, "ttft", None):
        times, mismatches = args.ttft
        print(f"openai_streamed_requests_c1: {len(times)} ({mismatches} whose deltas did not join to the reply)")
        print(f"openai_p50_ms_c1: {openai_c1.percentile(50):.1f}")
        print(f"openai_ttft_p50_ms_c1: {np.percentile(times, 50):.1f}")
    for name, scenario in (("torchserve_p50_ms_c1", "greedy"), ("kserve_p50_ms_c1", "kserve")):
        level = find(pooled(levels), scenario, 1)
        if level and any(lv.scenario == "kserve" for lv in levels):
            print(f"{name}: {level.percentile(50):.1f}")
    report_issue30(levels)


def report_issue30(levels: Sequence[Level]) -> None:
    """The last lines for issue 30: today's decode against the decode before it, and the LitServe peer."""
    measured = {lv.scenario for lv in levels}
    lines = []
    if "before" in measured:
        lines += [("before_p50_ms_c1", pooled_figure(levels, "before", 1, median_ms)),
                  ("p50_vs_before_c1", ratio(levels, "batched", "before", 1, median_ms)),
                  ("rps_vs_before_c16", ratio(levels, "batched", "before", 16))]
    if "litserve" in measured:
        lines += [("batched_rps_c1", pooled_figure(levels, "batched", 1, throughput)),
                  ("batched_rps_c16", pooled_figure(levels, "batched", 16, throughput)),
                  ("litserve_rps_c1", pooled_figure(levels, "litserve", 1, throughput)),
                  ("litserve_rps_c16", pooled_figure(levels, "litserve", 16, throughput)),
                  ("litserve_p50_ms_c1", pooled_figure(levels, "litserve", 1, median_ms)),
                  ("rps_vs_litserve_c1", ratio(levels, "batched", "litserve", 1)),
                  ("rps_vs_litserve_c16", ratio(levels, "batched", "litserve", 16))]
    for name, value in lines:
        print(f"{name}: {value}")


def pooled_figure(levels: Sequence[Level], scenario: str, clients: int, figure: Callable[[Level], float]) -> str:
    """figure of a scenario's pooled rounds at `clients`, or n/a when it was not run."""
    level = find(pooled(levels), scenario, clients)
    return f"{figure(level):.1f}" if level else "n/a"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if set(ON_BATCHED) & set(args.scenarios) and "batched" not in args.scenarios:
        print("error: the greedy, beam5, sample, openai, kserve, before and litserve scenarios run on or beside the "
              "batched server: add batched",
              file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args.load_before = ", ".join(f"{x:.2f}" for x in os.getloadavg())  # this run's own load comes after
    logger.info("load average before: %s", args.load_before)
    with tempfile.TemporaryDirectory(prefix="serve_bench_") as tmp:
        workload, float_bot = prepare_workload(args, Path(tmp))
        if "litserve" in args.scenarios and float_bot.voc.kind != "word":
            logger.warning("no litserve scenario: the tutorial's evaluate reads words, this checkpoint has %s tokens",
                           float_bot.voc.kind)
            args.scenarios = [s for s in args.scenarios if s != "litserve"]
        bot = load_chatbot(float_bot.checkpoint, quantize=args.quantize)
        reference_replies(workload, bot, args.prompts, args.scenarios)
        sizes = f"float32 {weights_megabytes(float_bot):.1f} MB"
        if args.quantize != "false":
            sizes += f", {args.quantize} {weights_megabytes(bot):.1f} MB"
            tables = tables_megabytes(bot)
            if tables:
                sizes += f" (+ {tables:.1f} MB of gate tables, built at load)"
        levels, rss = [], {}
        decoding = [s for s in args.scenarios if s in ON_BATCHED]
        for scenario in [s for s in args.scenarios if s not in decoding]:
            logger.info("scenario %s", scenario)
            scenario_levels, rss[scenario] = run_scenario(scenario, workload, args, Path(tmp),
                                                          decoding if scenario == "batched" else ())
            levels += scenario_levels
    if args.plot and str(args.plot) != ".":
        plot(pooled(levels), args.plot, f"{machine()}\nquantize {args.quantize}, threads {args.threads} "
                                f"({args.threads_alone} alone), batchSize "
                                f"{args.batch_size}, maxBatchDelay {args.max_batch_delay} ms, workers {args.workers}")
    report(levels, rss, workload, sizes, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
