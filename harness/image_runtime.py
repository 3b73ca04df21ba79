"""Serve the built archive on the serving image's runtime (Python 3.9, torch 2.4.0, TorchServe 0.12.0).

    make test-image-runtime          # builds .venv-image from requirements-image.txt, then runs this
    python -m harness.image_runtime --python .venv-image/bin/python

The pytorch/torchserve:0.12.0-gpu image that `make serve` runs has that runtime, not this repo's
Python 3.11 / torch 2.13. For each handler weight mode (int8, fp16, float32) the archive is built
here, with this runtime's build_mar, and served by native TorchServe 0.12.0 from the Python 3.9
environment; every reply to a fixed prompt set (raw text, JSON, and the decoding options) is
compared with what this runtime's Chatbot gives for it. Exit status 0 when every reply agrees.
A byte-level BPE model (tokens from `tokenizers`, which requirements-image.txt adds, as
docker/Dockerfile's runtime stage does) is served the same way in the default weight mode, on
prompts in several languages: `agreement_bpe_int8`. Each prompt is also asked on the OpenAI-compatible route
with "stream": true (TorchServe 0.12's intermediate responses from the image's Python): its deltas must join to
the raw-text reply.
Last lines: `agreement_<mode>: N/M` per weight mode, then `openai_stream_<mode>: N/M`.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import requests
import yaml

from harness.launcher import MODEL_NAME, REPO, build_mar, start_torchserve
from harness.tiny import make_tiny_bpe_checkpoint, make_tiny_checkpoint
from model import Chatbot, load_chatbot
from model.schema import parse_options

WEIGHT_MODES = {"int8": "int8", "fp16": "fp16", "float32": False}  # name -> the handler's `quantize`
PROMPTS = ["hello there !", "how are you ?", "what is your name ?", "where do you live ?", "do you like music ?",
           "i am fine .", "good bye !", "my name is bot .", "hello zorblax how are you ?", "yes i like it very much ."]
BPE_PROMPTS = ["你好", "你叫什么名字?", "I was born in 1984.", "Hola, ¿cómo estás?", "Привет!",
               "The café opens at 9:30!", "zorblax quuxly", "こんにちは", "how are you ?", "Ich heiße Anna."]
FIELDS = [{}, {"beam_size": 4, "num_replies": 2}, {"temperature": 0.9, "top_k": 10, "seed": 11},
          {"no_repeat_ngram_size": 2, "max_length": 6}]


def runtime_versions(python: Path) -> str:
    """'Python 3.9.18, torch 2.4.0, TorchServe 0.12.0' of the other environment."""
    code = ("import sys, torch, importlib.metadata as m; print(f'Python {sys.version.split()[0]}, "
            "torch {torch.__version__}, TorchServe {m.version(\"torchserve\")}')")
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def model_config(quantize, path: Path) -> Path:
    """handler/model-config.yaml with the weight mode set."""
    config = yaml.safe_load((REPO / "handler" / "model-config.yaml").read_text())
    config["handler"]["quantize"] = quantize
    path.write_text(yaml.safe_dump(config))
    return path


def expected_replies(bot: Chatbot, prompts: list[str]) -> list[tuple[str, dict, str, list]]:
    """(prompt, JSON fields, reply, replies) for every prompt and decoding case, from this runtime."""
    cases = []
    for prompt in prompts:
        for fields in FIELDS:
            reply = bot.reply(prompt, parse_options(fields, bot.default_options, {}))
            cases.append((prompt, fields, reply.text, [t for t, _ in reply.replies]))
    return cases


def served_replies(url: str, cases: list) -> list[tuple[str, list]]:
    """(reply, replies) the server gives for each case: raw text for the default options, else JSON."""
    got = []
    session = requests.Session()
    for prompt, fields, _, _ in cases:
        if not fields:
            text = session.post(url, data=prompt.encode(), headers={"Content-Type": "text/plain"},
                                timeout=60).content.decode("utf-8")
            got.append((text.rstrip("\n"), [text.rstrip("\n")]))
            continue
        body = session.post(url, json={"text": prompt, **fields}, timeout=60).json()
        got.append((body.get("reply"), [r["reply"] for r in body.get("replies", [])] or [body.get("reply")]))
    return got


def streamed_replies(base_url: str, prompts: list[str]) -> list[str]:
    """The deltas of a streamed Chat Completion (the served defaults) joined, per prompt."""
    joined = []
    with requests.Session() as session:
        for prompt in prompts:
            body = {"model": MODEL_NAME, "messages": [{"role": "user", "content": prompt}], "stream": True}
            text = session.post(f"{base_url}/chat/completions", json=body, timeout=60).content.decode("utf-8")
            events = [json.loads(line[6:]) for line in text.split("\n\n") if line.startswith("data: {")]
            joined.append("".join(e["choices"][0]["delta"].get("content", "") for e in events if e.get("choices")))
    return joined


def check_mode(name: str, quantize, checkpoint: Path, python: Path, workdir: Path,
               prompts: list[str] = PROMPTS) -> tuple[int, int, list, int, int]:
    """(agreeing, total, the first disagreements, streamed replies that agree, streamed replies) for one weight
    mode."""
    bot = load_chatbot(checkpoint, quantize=quantize)
    cases = expected_replies(bot, prompts)
    mar = build_mar(checkpoint, workdir / name / "store", model_config(quantize, workdir / f"{name}.yaml"))
    with start_torchserve(workdir / name / "server", mar.parent, python=python) as server:
        got = served_replies(server.predictions_url, cases)
        streamed = streamed_replies(server.openai_url, prompts)
    wrong = [(c[0], c[1], c[2], g[0]) for c, g in zip(cases, got) if (c[2], c[3]) != g]
    agree = len(cases) - len(wrong)
    plain = [c[2] for c in cases if not c[1]]  # the default-options reply of each prompt, in order
    wrong += [(p, "stream", e, s) for p, e, s in zip(prompts, plain, streamed) if e != s]
    return agree, len(cases), wrong[:3], sum(e == s for e, s in zip(plain, streamed)), len(prompts)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m harness.image_runtime", description=__doc__.splitlines()[0])
    p.add_argument("--python", type=Path, default=REPO / ".venv-image" / "bin" / "python",
                   help="the Python 3.9 environment with torch 2.4.0 and TorchServe 0.12.0 (default: .venv-image)")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="checkpoint to archive (default: the tests' tiny random-weight one, written here)")
    p.add_argument("--modes", nargs="+", choices=list(WEIGHT_MODES), default=list(WEIGHT_MODES),
                   help="handler weight modes to serve (default: all three)")
    p.add_argument("--no-bpe", dest="bpe", action="store_false",
                   help="skip the byte-level BPE model (served in int8 on multilingual prompts)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.python.exists():
        print(f"error: {args.python} not found: run `make test-image-runtime` (it builds .venv-image)", file=sys.stderr)
        return 2
    print(f"serving runtime: {runtime_versions(args.python)}; reference runtime: Python "
          f"{sys.version.split()[0]}, torch {__import__('torch').__version__}")
    ok = True
    with tempfile.TemporaryDirectory(prefix="image_runtime_") as tmp:
        checkpoint = args.checkpoint or make_tiny_checkpoint(Path(tmp) / "1_checkpoint.tar")
        results = {name: check_mode(name, WEIGHT_MODES[name], checkpoint, args.python, Path(tmp))
                   for name in args.modes}
        if args.bpe:
            bpe = make_tiny_bpe_checkpoint(Path(tmp) / "bpe_checkpoint.tar")
            results["bpe_int8"] = check_mode("bpe_int8", "int8", bpe, args.python, Path(tmp), BPE_PROMPTS)
    for name, (agree, total, wrong, streamed, prompts) in results.items():
        for prompt, fields, expected, got in wrong:
            print(f"{name}: {prompt!r} {fields}: expected {expected!r}, served {got!r}")
        ok &= agree == total and streamed == prompts
    for name, (agree, total, *_) in results.items():
        print(f"agreement_{name}: {agree}/{total}")
    for name, (*_, streamed, prompts) in results.items():
        print(f"openai_stream_{name}: {streamed}/{prompts}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
