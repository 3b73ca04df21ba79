"""The serving benchmark's own logic: echo handler, workload, reply checking and ratios (no TorchServe)."""
from __future__ import annotations

import threading
from argparse import Namespace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from bench.echo_handler import handle
from bench.serve_bench import Level, find, measure, ratio, scenario_cases
from bench.workload import CORNELL_WORDS, DECODING_FIELDS, FALLBACK_PROMPTS, random_checkpoint, synthetic_voc
from model import load_chatbot


def test_echo_handler_answers_each_request_with_its_body():
    rows = [{"body": "hello there"}, {"data": b"raw bytes"}, {"body": ""}]
    assert handle(rows, context=None) == ["hello there", b"raw bytes", ""]
    assert handle(None, context=None) is None  # TorchServe's probe when it loads the handler


def test_random_checkpoint_has_tutorial_sizes_and_replies_use_every_step():
    ckpt = random_checkpoint(synthetic_voc(FALLBACK_PROMPTS), seed=0)
    assert len(ckpt["voc"]["words"]) + 3 == CORNELL_WORDS
    assert (ckpt["config"]["hidden_size"], ckpt["config"]["encoder_n_layers"], ckpt["config"]["decoder_n_layers"]) \
        == (500, 2, 2)
    bot = load_chatbot(ckpt)
    replies = bot.reply_batch(FALLBACK_PROMPTS[:4])
    assert all(r.error is None and len(r.text.split()) == ckpt["config"]["max_length"] for r in replies)


class FlakyEcho(BaseHTTPRequestHandler):
    """Echoes the body, except the line 'bad' (HTTP 500) and the line 'odd' (a wrong reply)."""

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        status, reply = (500, "boom") if body == "bad\n" else (200, "not it" if body == "odd\n" else body)
        self.send_response(status)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply.encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def flaky_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FlakyEcho)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    server.server_close()


def test_measure_counts_errors_and_mismatches(flaky_server):
    expected = {f"{text}\n": text for text in ("good", "bad", "odd", "fine")}  # as run_scenario asks the echo
    args = Namespace(seconds=1.0, warmup_seconds=0.2, max_requests=400)
    level = measure("echo", flaky_server, scenario_cases(expected, None), clients=2, args=args)
    answered = len(level.latencies_ms)  # 200 replies, right or wrong
    assert answered > 0 and level.errors > 0 and level.mismatches > 0
    assert level.errors == pytest.approx(answered / 3, rel=0.5)  # 1 prompt in 4 fails
    assert level.mismatches == pytest.approx(answered / 3, rel=0.5)
    assert 0 < level.seconds <= 1.0 and level.throughput == answered / level.seconds


def test_ratios_compare_throughput_at_one_concurrency():
    levels = [Level("echo", 16, [1.0] * 100, 0, 0, 1.0), Level("batched", 16, [5.0] * 40, 0, 0, 1.0),
              Level("batch1", 16, [9.0] * 10, 0, 0, 1.0)]
    assert ratio(levels, "batched", "echo", 16) == "0.40"
    assert ratio(levels, "batched", "batch1", 16) == "4.00"
    assert ratio(levels, "batched", "echo", 64) == "n/a"
    assert find(levels, "batched", 16).percentile(50) == 5.0


def test_rounds_pool_into_one_level_per_scenario_and_concurrency():
    from bench.serve_bench import pooled

    levels = pooled([Level("batched", 16, [1.0] * 30, 1, 0, 1.0), Level("sample", 16, [2.0] * 10, 0, 1, 1.0),
                     Level("batched", 16, [3.0] * 10, 0, 2, 1.0)])
    assert [(lv.scenario, lv.clients) for lv in levels] == [("batched", 16), ("sample", 16)]
    assert (levels[0].throughput, levels[0].errors, levels[0].mismatches) == (20.0, 1, 2)
    assert levels[0].percentile(50) == 1.0


def test_every_decoding_scenario_sends_the_same_json_and_batched_sends_raw_text():
    """The decoding ratios compare decoding alone: greedy, beam5 and sample differ only in their option fields."""
    expected = {"hello there": "hi"}
    raw = scenario_cases(expected, None)[0].request
    assert raw["data"] == b"hello there" and raw["headers"]["Content-Type"].startswith("text/plain")
    bodies = {name: scenario_cases(expected, fields)[0].request["json"] for name, fields in DECODING_FIELDS.items()}
    assert bodies["greedy"] == {"text": "hello there"}
    assert all({k: v for k, v in body.items() if k not in DECODING_FIELDS[name]} == bodies["greedy"]
               for name, body in bodies.items())


def test_decoding_cost_counts_every_decoder_row(tmp_path):
    """Greedy decodes each row once per token it emits (EOS included) and stops with its longest reply: the
    counted rows and steps must equal those, counted from the replies themselves."""
    from bench.decoding_cost import measure as measure_cost
    from harness.tiny import TINY_SENTENCES, make_tiny_checkpoint
    from model.schema import DecodeOptions

    bot = load_chatbot(torch.load(make_tiny_checkpoint(tmp_path / "tiny.tar"), weights_only=True))
    batches = [[bot.encode(t).ids for t in TINY_SENTENCES[i:i + 4]] for i in range(0, len(TINY_SENTENCES), 4)]
    cost = measure_cost(bot, batches, {"greedy": DecodeOptions(max_length=bot.max_length)}, reps=1)["greedy"]
    lengths = [[len(found[0].ids) for found in bot.generate(batch, [bot.default_options] * len(batch))]
               for batch in batches]
    assert cost.rows == cost.tokens == sum(map(sum, lengths))
    assert cost.steps == sum(map(max, lengths)) and len(cost.milliseconds) == 1


def test_a_headline_ratio_is_the_median_of_its_rounds():
    """Round 1 ran on a slow minute for both scenarios: pooled figures give 0.63, most rounds say 0.5."""
    from bench.serve_bench import median_ms, round_ratios

    levels = [Level("greedy", 16, [1.0] * 100, 0, 0, 1.0, round=0), Level("sample", 16, [1.0] * 50, 0, 0, 1.0, round=0),
              Level("greedy", 16, [2.0] * 10, 0, 0, 1.0, round=1), Level("sample", 16, [2.0] * 5, 0, 0, 1.0, round=1),
              Level("greedy", 16, [1.0] * 90, 0, 0, 1.0, round=2), Level("sample", 16, [3.0] * 72, 0, 0, 1.0, round=2)]
    assert round_ratios(levels, "sample", "greedy", 16) == [0.5, 0.5, 0.8]
    assert ratio(levels, "sample", "greedy", 16) == "0.50"
    assert round_ratios(levels, "sample", "greedy", 16, median_ms) == [1.0, 1.0, 3.0]
    assert ratio(levels, "sample", "greedy", 64) == "n/a"


def test_decode_floor_times_the_tutorials_loop_on_our_weights():
    """bench.decode_floor compares like with like: in float32 its tutorial searcher, built from the checkpoint our
    chatbot loads, chooses our greedy tokens (wherever the tutorial's are text: it may pick PAD or SOS, ours never)."""
    from bench.decode_floor import tutorial_searcher
    from model.voc import PAD_token, SOS_token, Voc

    voc = Voc("bench")
    for prompt in FALLBACK_PROMPTS:
        voc.add_sentence(prompt.lower())
    ckpt = random_checkpoint(voc, seed=1, hidden_size=32, encoder_n_layers=2, decoder_n_layers=2)
    bot, searcher = load_chatbot(ckpt), tutorial_searcher(ckpt, int8=False)
    compared = 0
    for prompt in FALLBACK_PROMPTS:
        ids = bot.encode(prompt.lower()).ids
        with torch.no_grad():
            tokens = searcher(torch.tensor(ids).unsqueeze(1), torch.tensor([len(ids)]), 10)
        if {PAD_token, SOS_token} & set(tokens.tolist()):
            continue
        compared += 1
        assert tokens.tolist() == bot.generate([ids], [bot.default_options])[0][0].ids
    assert compared >= len(FALLBACK_PROMPTS) // 2


def test_the_litserve_peer_serves_the_tutorials_own_replies(tmp_path):
    """bench.serve_bench's litserve peer: the tutorial's evaluate loop, int8, behind LitServe; every reply the one the
    tutorial's own classes give in this process, a text with an unknown word refused as the tutorial refuses it."""
    import requests

    from bench.litserve_tutorial import knows_every_word, serve_tutorial, tutorial_answer, tutorial_bot
    from model.voc import Voc

    voc = Voc("bench")
    for prompt in FALLBACK_PROMPTS:
        voc.add_sentence(prompt.lower())
    torch.save(random_checkpoint(voc, seed=1, hidden_size=32), tmp_path / "peer.tar")
    searcher, peer_voc = tutorial_bot(tmp_path / "peer.tar")
    prompts = [p for p in FALLBACK_PROMPTS if knows_every_word(peer_voc, p)]
    assert len(prompts) > len(FALLBACK_PROMPTS) // 2 and not knows_every_word(peer_voc, "zyxwv")
    with serve_tutorial(tmp_path / "litserve", tmp_path / "peer.tar") as url:
        for prompt in prompts[:5]:
            response = requests.post(url, json={"text": prompt}, timeout=30)
            assert response.json() == {"reply": tutorial_answer(searcher, peer_voc, prompt)}
            assert len(response.json()["reply"].split()) == 10  # random weights: EOS never wins
        assert requests.post(url, json={"text": "zyxwv"}, timeout=30).status_code == 500
