"""Load-test the chatbot under native TorchServe against an echo handler (TorchServe's own ceiling).

    python -m bench.serve_bench                    # what `make bench-serve` runs
    python -m bench.serve_bench --scenarios batched --concurrency 1 16 --max-batch-delay 2

Scenarios, each on its own native TorchServe (serving.launcher: free loopback ports, always
stopped) with the same config.properties, worker count and batching settings:
  echo     bench/echo_handler.py answers with the body: what TorchServe and this client cost alone
  batch1   the chatbot with batchSize 1
  batched  the chatbot with dynamic batching (handler/model-config.yaml's batchSize, maxBatchDelay)
  greedy   the batched server, every request JSON with no decoding field (greedy)
  beam5    the batched server, every request JSON with {"beam_size": 5}
  sample   the batched server, every request JSON with {"temperature": 0.8, "top_p": 0.9, "seed": 1}
The decoding scenarios (greedy, beam5, sample) send the same prompts as the same JSON, so their ratios
compare decoding alone, not JSON against raw text. Each server first serves --server-warmup-seconds of
all its scenarios' requests, uncounted: the frontend's JVM compiles its hot paths in the first seconds,
which would otherwise count against whichever scenario comes first.
For each number of concurrent clients, every client thread posts prompts back to back over its
own keep-alive requests.Session (serving.load.run_load) for --warmup-seconds (not counted), then
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
"""
from __future__ import annotations

import argparse
import io
import itertools
import logging
import os
import platform
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import numpy as np
import psutil
import torch
import yaml

from model import FORMAT, Chatbot, Voc, build_model, default_config, from_checkpoint, normalize, read_checkpoint
from model.checkpoint import serving_subset
from model.decoding import parse_options
from model.int8 import GateTable
from model.tokenizer import vocabulary_size
from model.voc import EOS_token
from serving.launcher import MODEL_NAME, REPO, TorchServe, build_mar, start_torchserve, wait_until_ready
from serving.load import Case, run_load
from train.runs import add_checkpoint_flags, add_data_path_flag, default_checkpoint

logger = logging.getLogger("serve_bench")

SCENARIOS = ("echo", "batch1", "batched", "greedy", "beam5", "sample")
# The decoding scenarios: JSON fields each request sends to the batched server (README's request table)
DECODING_FIELDS = {"greedy": {}, "beam5": {"beam_size": 5}, "sample": {"temperature": 0.8, "top_p": 0.9, "seed": 1}}
TUTORIAL_HIDDEN = 500
CORNELL_WORDS = 7826  # the tutorial's Cornell vocabulary: 7,823 words kept + PAD, SOS, EOS
HANDLER_CONFIG = REPO / "handler" / "model-config.yaml"
ECHO_CONFIG = REPO / "bench" / "echo-config.yaml"
ECHO_HANDLER = REPO / "bench" / "echo_handler.py"
TEXT_HEADERS = {"Content-Type": "text/plain; charset=utf-8"}
REQUEST_TIMEOUT_S = 60
# Cornell-like lines for a machine without the corpus (normalised as the tutorial does).
FALLBACK_PROMPTS = [
    "hello .", "how are you ?", "where are you going ?", "what do you mean ?", "i don t know .",
    "who are you ?", "what s your name ?", "are you okay ?", "what happened ?", "where is he ?",
    "i love you .", "get out of here !", "what are you doing here ?", "do you want to dance ?",
    "you re kidding .", "why not ?", "what time is it ?", "how old are you ?", "can you help me ?",
    "i m sorry .", "what s wrong with you ?", "where have you been ?", "do you know him ?",
    "let s go .", "i ll call you tomorrow .", "what did she say ?", "is that a threat ?",
    "you look tired .", "come on !", "thank you very much .", "how did you find me ?", "shut up !",
]


# ---------------------------------------------------------------- checkpoint and prompts

@dataclass
class Workload:
    """What is served and sent: the checkpoint file, how it was chosen, the prompts and their replies."""

    checkpoint: Path
    source: str
    prompts: list[str]
    expected: dict[str, str] = field(default_factory=dict)  # prompt -> Chatbot.reply(prompt).text
    expected_by_scenario: dict[str, dict[str, str]] = field(default_factory=dict)  # greedy, beam5, sample: theirs


def newest_tutorial_checkpoint(runs: Path) -> Path | None:
    """train.runs.default_checkpoint if its hidden size is the tutorial's, else None."""
    found = default_checkpoint(runs)
    if found is None:
        return None
    with open(found, "rb") as f:
        ckpt = read_checkpoint(f)
    return found if ckpt["config"]["hidden_size"] == TUTORIAL_HIDDEN else None


def random_checkpoint(voc: Voc, seed: int, **config_overrides) -> dict:
    """Random weights at the tutorial's sizes (or config_overrides') over `voc`; EOS never wins, so
    replies are max_length long."""
    config = default_config(**config_overrides)
    torch.manual_seed(seed)
    encoder, decoder = build_model(config, voc.num_words)
    with torch.no_grad():  # untrained logits would stop replies at arbitrary lengths
        decoder.out.bias[EOS_token] = -1e4
    return {"format": FORMAT, "config": config, "voc": voc.to_dict(), "encoder": encoder.state_dict(),
            "decoder": decoder.state_dict(), "iteration": 0, "loss": 0.0}


def synthetic_voc(prompts: Sequence[str]) -> Voc:
    """The prompts' words plus made-up ones, CORNELL_WORDS in all (no corpus on this machine)."""
    voc = Voc("synthetic")
    for prompt in prompts:
        voc.add_sentence(normalize(prompt))
    filler = ("".join(letters) for letters in itertools.product(string.ascii_lowercase, repeat=4))
    while voc.num_words < CORNELL_WORDS:
        voc.add_word(next(filler))
    return voc


def held_out_prompts(ckpt: dict | None, data_path: str | None) -> tuple[Voc | None, list[str], str]:
    """(vocabulary, held-out queries in corpus order without repeats, where they come from): the checkpoint's own
    run's (train.data.run_data), else Cornell's as the tutorial's recipe splits it, else FALLBACK_PROMPTS when
    that corpus is not there."""
    from train.config import DEFAULT_CORNELL_PATH, stored_settings
    from train.data import load_data, run_data

    try:
        if ckpt is not None and ckpt.get("args"):
            voc, _, heldout = run_data(ckpt, data_path)
            where = f"held-out queries of its {ckpt['args'].get('corpus')} run"
        else:
            voc, _, heldout = load_data(stored_settings({"corpus": "cornell",
                                                         "data_path": data_path or DEFAULT_CORNELL_PATH}))
            where = "Cornell held-out queries"
    except OSError:  # the corpus is not on this machine
        return None, list(FALLBACK_PROMPTS), "fixed Cornell-like list (no corpus found)"
    return voc, list(dict.fromkeys(query for query, _ in heldout)), where


def prepare_workload(args: argparse.Namespace, workdir: Path) -> Workload:
    """Choose the checkpoint (a serving-only copy in workdir) and the prompts."""
    path = args.checkpoint or newest_tutorial_checkpoint(args.runs)
    ckpt = None
    if path is not None:
        with open(path, "rb") as f:
            ckpt = read_checkpoint(f)
    voc, prompts, where = held_out_prompts(ckpt, args.data_path)
    if ckpt is None:
        ckpt = random_checkpoint(voc or synthetic_voc(prompts), args.seed)
        source = (f"random weights at the tutorial's sizes (hidden 500, 2+2 layers, {ckpt['config']['attn_model']} "
                  f"attention, {vocabulary_size(ckpt['voc'])} words, seed {args.seed}; EOS disabled)")
    else:
        source = f"{path} (iteration {ckpt.get('iteration', '?')}, hidden {ckpt['config']['hidden_size']}, " \
                 f"{vocabulary_size(ckpt['voc'])} {ckpt['voc'].get('kind', 'word')} tokens)"
    source += f"; prompts: {where}"
    served = workdir / "served_checkpoint.tar"  # weights only: smaller, faster-to-build archives
    torch.save({**serving_subset(ckpt), "args": ckpt.get("args")}, served)  # args: the data split of its prompts
    return Workload(served, source, prompts)


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


def weights_megabytes(bot: Chatbot) -> float:
    """Size of the encoder and decoder state_dicts as torch.save writes them (the shared embedding once)."""
    buf = io.BytesIO()
    torch.save({"encoder": bot.encoder.state_dict(), "decoder": bot.decoder.state_dict()}, buf)
    return buf.tell() / 1e6


def tables_megabytes(bot: Chatbot) -> float:
    """Memory of the int8 model's first-layer gate tables, built at load and never saved (model/int8.py)."""
    tables = [m.table for part in (bot.encoder, bot.decoder) for m in part.modules() if isinstance(m, GateTable)]
    return sum(t.numel() * t.element_size() for t in tables) / 1e6


# ---------------------------------------------------------------- archives and servers

def scenario_config(scenario: str, args: argparse.Namespace, workdir: Path) -> Path:
    """The scenario's model-config: its base file with the shared worker, batching and handler settings."""
    config = yaml.safe_load((ECHO_CONFIG if scenario == "echo" else HANDLER_CONFIG).read_text())
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
    """Resident memory of each Python worker of the server (MB)."""
    sizes = []
    for pid in server.pids:
        try:
            process = psutil.Process(pid)
            if any("model_service_worker" in part for part in process.cmdline()):
                sizes.append(process.memory_info().rss / 1e6)
        except psutil.NoSuchProcess:
            pass
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


def measure(scenario: str, url: str, cases: Sequence[Case], clients: int, args: argparse.Namespace) -> Level:
    """serving.load.run_load of `cases` with `clients` clients; count the requests started after the warm-up and
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
    with start_torchserve(workdir / "server", store, config_overrides=overrides) as server:
        wait_until_ready(server, args.workers)  # the launcher waits for one
        cases = {name: scenario_cases(workload.expected_by_scenario.get(name, expected), DECODING_FIELDS.get(name))
                 for name in (scenario, *decoding)}
        warm_up(server.predictions_url, list(cases.values()), max(args.concurrency), args.server_warmup_seconds)
        levels = []
        for turn in range(args.rounds):  # rounds interleave the scenarios: a warming server favours none of them
            for name in cases:
                for clients in args.concurrency:
                    levels.append(measure(name, server.predictions_url, cases[name], clients, args))
                    levels[-1].round = turn
                    logger.info("%s", row(levels[-1]))
        return levels, worker_rss_mb(server)


def warm_up(url: str, cases: Sequence[Sequence[Case]], clients: int, seconds: float) -> None:
    """Send every scenario's requests (cases: one list per scenario) in turn for `seconds` in all, uncounted (the
    JVM's JIT warm-up)."""
    for one_scenario in cases:
        run_load(url, one_scenario, clients, seconds / len(cases))


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
            f"torch {torch.__version__}, torchserve {version('torchserve')}")


# ---------------------------------------------------------------- CLI

def handler_defaults() -> dict:
    """Batching, worker and handler defaults from handler/model-config.yaml."""
    config = yaml.safe_load(HANDLER_CONFIG.read_text())
    quantize = config["handler"].get("quantize", False)
    return {"batch_size": config["batchSize"], "max_batch_delay": config["maxBatchDelay"],
            "workers": config["minWorkers"], "threads": config["handler"].get("threads", 0),
            "threads_alone": config["handler"].get("threads_alone", 0),
            "quantize": {True: "int8", False: "false"}.get(quantize, quantize)}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    d = handler_defaults()
    p = argparse.ArgumentParser(prog="python -m bench.serve_bench", description=__doc__.splitlines()[0])
    add_checkpoint_flags(p, "checkpoint to serve", default="the newest runs/**/best_checkpoint.tar if its hidden "
                                                           "size is 500, else random tutorial-size weights")
    add_data_path_flag(p)
    p.add_argument("--prompts", type=int, default=300, help="distinct prompts to cycle through (default: 300)")
    p.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS),
                   help="what to serve (default: all; greedy, beam5 and sample need batched)")
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
    p.add_argument("--quantize", choices=("false", "int8", "fp16"), default=d["quantize"],
                   help=f"handler option quantize; the in-process reference uses the same "
                        f"(default: model-config's, {d['quantize']})")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights (default: 0)")
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
    print("\nper round (the headline is the median): " + "; ".join(
        f"{name} {' '.join(f'{x:.2f}' for x in round_ratios(levels, *rest))}" for name, *rest in serving + decoding))
    print()
    for name, *rest in serving:
        print(f"{name}: {ratio(levels, *rest)}")
    print(f"p50_ms_c1: {c1.percentile(50):.1f}" if c1 else "p50_ms_c1: n/a")
    for name, *rest in decoding:
        print(f"{name}: {ratio(levels, *rest)}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if set(DECODING_FIELDS) & set(args.scenarios) and "batched" not in args.scenarios:
        print("error: the greedy, beam5 and sample scenarios run on the batched server: add batched", file=sys.stderr)
        return 2
    args.quantize = False if args.quantize == "false" else args.quantize
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args.load_before = ", ".join(f"{x:.2f}" for x in os.getloadavg())  # this run's own load comes after
    logger.info("load average before: %s", args.load_before)
    with tempfile.TemporaryDirectory(prefix="serve_bench_") as tmp:
        workload = prepare_workload(args, Path(tmp))
        with open(workload.checkpoint, "rb") as f:
            ckpt = read_checkpoint(f)
        bot = from_checkpoint(ckpt, quantize=args.quantize)
        reference_replies(workload, bot, args.prompts, args.scenarios)
        sizes = f"float32 {weights_megabytes(from_checkpoint(ckpt)):.1f} MB"
        if args.quantize:
            sizes += f", {args.quantize} {weights_megabytes(bot):.1f} MB"
            tables = tables_megabytes(bot)
            if tables:
                sizes += f" (+ {tables:.1f} MB of gate tables, built at load)"
        levels, rss = [], {}
        decoding = [s for s in args.scenarios if s in DECODING_FIELDS]
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
