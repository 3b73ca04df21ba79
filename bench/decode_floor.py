"""How far a batch-1 greedy reply can go: int8 product kernels at one row, and ours against the tutorial's loop.

    python -m bench.decode_floor                 # random tutorial-size weights (hidden 500, 7,826 words), one thread
    LD_PRELOAD=$(python -m tools.server_config --print malloc) python -m bench.decode_floor   # as the servers run

Two measurements for issue 30 (docs/benchmarks.md, "Faster single-reply decoding"):
- kernels: microseconds per call of the decoder's largest product (1 x 500 -> 7,826) and a GRU product
  (1 x 500 -> 1,500) through today's int8 path (model/int8.py: fbgemm's dynamic linear, each row quantised on its
  own), float32, torch's weight-only int8 kernel (`_weight_int8pack_mm`, float32 and float16 activations; bfloat16
  crashed the process on an AVX-512 AMD EPYC with torch 2.13, so it is not tried) and `torch._int_mm` at 32 rows;
  then fbgemm's dynamic linear called directly on the large product, whose weight bytes over its time are the
  speed one core reads int8 weights at;
- replies: our int8 Chatbot, with today's decode and with the decode of before (load_chatbot's
  compiled_decode=False: the Python greedy loop), against the PyTorch Chatbot Tutorial's GreedySearchDecoder with
  torch.ao dynamic int8 on the same weights (tests/test_tutorial_checkpoint.py holds the tutorial's classes): greedy
  at batch 1 and 16, beam 5 and sampling (temperature 0.8, top_p 0.9) at batch 1; ms per reply, medians of
  interleaved rounds (every reply is 10 tokens: the random weights never choose EOS).
Last lines: `name: value`.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from types import ModuleType

import numpy as np
import torch
from torch import nn

from bench.workload import FALLBACK_PROMPTS, random_checkpoint, synthetic_voc
from model import load_chatbot
from model.int8 import Int8Linear
from model.schema import DecodeOptions
from tools.server_config import REPO

SIZES = ((500, 7826), (500, 1500))  # (in, out): the vocabulary projection and a GRU's three gates


def per_call_us(work: Callable[[], object], calls: int) -> float:
    """Median microseconds per call over 5 timed blocks of `calls` calls, after a warm-up block."""
    blocks = []
    for block in range(6):
        start = time.perf_counter()
        for _ in range(calls):
            work()
        if block:
            blocks.append((time.perf_counter() - start) / calls * 1e6)
    return float(np.median(blocks))


def kernels(calls: int) -> dict[str, float]:
    """{name: µs per call} of each kernel on random weights at SIZES."""
    return {name: us for k, n in SIZES for name, us in size_kernels(k, n, calls).items()}


def size_kernels(k: int, n: int, calls: int) -> dict[str, float]:
    """{name: µs per call} of each kernel for one 1 x k -> n product (int8_mm: per row of 32)."""
    linear = nn.Linear(k, n)
    weight = linear.weight.detach()
    scale = weight.abs().amax(dim=1) / 127
    int8 = torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8).contiguous()
    x, rows, ours = torch.randn(1, k), torch.randint(-127, 127, (32, k), dtype=torch.int8), Int8Linear(linear)
    slow = max(calls // 20, 5)  # the weight-only kernels take milliseconds here
    return {f"ours_int8_us_{k}x{n}": per_call_us(lambda: ours(x), calls),
            f"float32_us_{k}x{n}": per_call_us(lambda: nn.functional.linear(x, weight, linear.bias), calls),
            f"weight_only_int8_f32_us_{k}x{n}": per_call_us(
                lambda: torch.ops.aten._weight_int8pack_mm(x, int8, scale), slow),
            f"weight_only_int8_f16_us_{k}x{n}": per_call_us(
                lambda: torch.ops.aten._weight_int8pack_mm(x.half(), int8, scale.half()), slow),
            f"int_mm_us_per_row_of_32_{k}x{n}": per_call_us(lambda: torch._int_mm(rows, int8.t()), calls) / 32}


def fbgemm_read_speed(calls: int) -> tuple[float, float]:
    """(µs per call, GB/s of int8 weights) of fbgemm's dynamic linear called directly on 1 x 500 -> 7,826."""
    k, n = SIZES[0]
    weight = torch.cat((torch.randn(n, k), torch.zeros(n, 2)), dim=1)  # model/int8.py's two range columns
    scale = (weight.abs().amax(dim=1) / 127).double()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantized = torch.quantize_per_channel(weight, scale, torch.zeros(n, dtype=torch.long), 0, torch.qint8)
    packed = torch.ops.quantized.linear_prepack(quantized, torch.zeros(n))
    x = torch.rand(1, k + 2) * 2 - 1
    us = per_call_us(lambda: torch.ops.quantized.linear_dynamic(x, packed, True), calls)
    return us, n * (k + 2) / us / 1e3


def tutorial_code() -> ModuleType:
    """tests/test_tutorial_checkpoint.py, which holds the PyTorch Chatbot Tutorial's own classes and functions
    (imported once; its folder joins sys.path once)."""
    tests = str(REPO / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    return importlib.import_module("test_tutorial_checkpoint")


def tutorial_searcher(ckpt: dict, int8: bool = True) -> nn.Module:
    """The tutorial's GreedySearchDecoder over its own modules, loaded with `ckpt`'s weights (torch.ao dynamic int8
    unless int8 is False)."""
    tutorial = tutorial_code()
    EncoderRNN, GreedySearchDecoder, LuongAttnDecoderRNN = (  # noqa: N806 (the tutorial's class names)
        tutorial.EncoderRNN, tutorial.GreedySearchDecoder, tutorial.LuongAttnDecoderRNN)

    config, words = ckpt["config"], len(ckpt["decoder"]["out.bias"])
    embedding = nn.Embedding(words, config["hidden_size"])
    encoder = EncoderRNN(config["hidden_size"], embedding, config["encoder_n_layers"], 0)
    decoder = LuongAttnDecoderRNN(config["attn_model"], embedding, config["hidden_size"], words,
                                  config["decoder_n_layers"], 0)
    encoder.load_state_dict(ckpt["encoder"])
    decoder.load_state_dict(ckpt["decoder"])
    if not int8:
        return GreedySearchDecoder(encoder.eval(), decoder.eval())
    quantize = lambda m: torch.ao.quantization.quantize_dynamic(m.eval(), {nn.GRU, nn.Linear}, dtype=torch.qint8)  # noqa: E731
    return GreedySearchDecoder(quantize(encoder), quantize(decoder))


def reply_work(ckpt: dict, searcher: nn.Module) -> dict[str, tuple[Callable[[int], object], int]]:
    """{name: (work(i) that decodes replies for prompt number i, replies it decodes)}: the tutorial's loop, and
    our int8 bot with the decode of before (compiled_decode=False) and today's, greedy at batch 1 and 16, beam 5
    and sampling at batch 1."""
    bots = {"before": load_chatbot(ckpt, quantize="int8", compiled_decode=False),
            "ours": load_chatbot(ckpt, quantize="int8")}
    ids = [bots["ours"].encode(p).ids for p in FALLBACK_PROMPTS]
    beam, sampled = DecodeOptions(max_length=10, beam_size=5), DecodeOptions(max_length=10, temperature=0.8,
                                                                            top_p=0.9, seed=1)

    def tutorial(i: int) -> None:
        seq = torch.tensor(ids[i % len(ids)]).unsqueeze(1)
        with torch.no_grad():
            searcher(seq, torch.tensor([seq.size(0)]), 10)

    def prompts(i: int, n: int) -> list[str]:
        return [FALLBACK_PROMPTS[(i + j) % len(FALLBACK_PROMPTS)] for j in range(n)]

    work = {"tutorial_int8_batch1": (tutorial, 1)}
    for name, bot in bots.items():
        work[f"{name}_batch1"] = (lambda i, bot=bot: bot.reply_batch(prompts(i, 1)), 1)
        work[f"{name}_batch16"] = (lambda i, bot=bot: bot.reply_batch(prompts(i, 16)), 16)
        work[f"{name}_beam5_batch1"] = (lambda i, bot=bot: bot.reply_batch(prompts(i, 1), [beam]), 1)
        work[f"{name}_sample_batch1"] = (lambda i, bot=bot: bot.reply_batch(prompts(i, 1), [sampled]), 1)
    return work


def replies_ms(work: dict[str, tuple[Callable[[int], object], int]], rounds: int, per_round: int) -> dict[str, float]:
    """{name: median ms per reply} of each work, in interleaved rounds of per_round calls (round 0 warms up)."""
    times: dict[str, list[float]] = {name: [] for name in work}
    for turn in range(rounds + 1):
        for name, (decode, replies) in work.items():
            calls = max(per_round // replies, 2)
            start = time.perf_counter()
            for i in range(calls):
                decode(i)
            if turn:
                times[name].append((time.perf_counter() - start) / (calls * replies) * 1000)
    return {name: float(np.median(values)) for name, values in times.items()}


def headline(ms: dict[str, float]) -> dict[str, float]:
    """Issue 30's lines from replies_ms's medians: ms per reply, speed-ups over the tutorial, mode ratios."""
    lines = {f"{name}_ms": value for name, value in ms.items()}
    for name in ("before", "ours"):
        lines[f"{name}_speedup_vs_tutorial"] = ms["tutorial_int8_batch1"] / ms[f"{name}_batch1"]
        lines[f"{name}_beam5_vs_greedy"] = ms[f"{name}_beam5_batch1"] / ms[f"{name}_batch1"]
        lines[f"{name}_sample_vs_greedy"] = ms[f"{name}_sample_batch1"] / ms[f"{name}_batch1"]
    lines["ours_speedup_vs_before_batch1"] = ms["before_batch1"] / ms["ours_batch1"]
    lines["ours_speedup_vs_before_batch16"] = ms["before_batch16"] / ms["ours_batch16"]
    return lines


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.decode_floor", description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=400, help="calls per timed block of a kernel (default: 400)")
    p.add_argument("--rounds", type=int, default=8, help="interleaved rounds of replies (default: 8)")
    p.add_argument("--per-round", type=int, default=40, help="replies per round and decode (default: 40)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights (default: 0)")
    p.add_argument("--dry-run", action="store_true", help="a few calls and one round: check that it runs")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.dry_run:
        args.calls, args.rounds, args.per_round = 5, 1, 2
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    found = kernels(args.calls)
    us, speed = fbgemm_read_speed(args.calls)
    ckpt = random_checkpoint(synthetic_voc(FALLBACK_PROMPTS), args.seed)
    ms = replies_ms(reply_work(ckpt, tutorial_searcher(ckpt)), args.rounds, args.per_round)
    print(f"torch {torch.__version__}, one thread")
    for name, value in found.items():
        print(f"{name}: {value:.1f}")
    print(f"fbgemm_direct_us_500x7826: {us:.1f}")
    print(f"fbgemm_int8_read_gb_per_s: {speed:.0f}")
    for name, value in headline(ms).items():
        print(f"{name}: {value:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
