"""Data-parallel training under torchrun (train/distributed.py), on the CPU with gloo.

A DDP step of 2 processes on a global batch of 64 (32 per rank) must give the gradients and updated weights
of one single-process step on the same 64 pairs; a 2-process run trains, checkpoints, resumes and serves.
"""
from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import torch

from harness.launcher import REPO, build_mar, free_ports, start_torchserve
from model import load_chatbot

WORDS = "red blue green cat dog bird one two three big small fast slow".split()
TINY = ["--min-count", "1", "--hidden-size", "16", "--encoder-n-layers", "2", "--decoder-n-layers", "2",
        "--dropout", "0", "--device", "cpu", "--learning-rate", "0.01"]
TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}
# Adam's first step is lr * g / (|g| + 1e-8): where a gradient is itself ~1e-8, float rounding between the two
# runs moves the step by up to a few 1e-6 (lr 0.01); everywhere else the weights agree to 1e-6.
WEIGHT_TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    rng = random.Random(0)
    lines = [f"{' '.join(rng.choices(WORDS, k=rng.randint(1, 6)))}\t{' '.join(rng.choices(WORDS, k=rng.randint(1, 7)))}"
             for _ in range(400)]
    path = tmp_path_factory.mktemp("ddp") / "pairs.tsv"
    path.write_text("\n".join(lines) + "\n")
    return path


def torchrun(*args: str, processes: int = 2, timeout: int = 300) -> subprocess.CompletedProcess:
    """`torchrun --nproc-per-node N ARGS` (plain python for N = 1) from the repo root, on loopback."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    launcher = [str(Path(sys.executable).with_name("torchrun")), "--nproc-per-node", str(processes),
                "--master-addr", "127.0.0.1", "--master-port", str(free_ports(1)[0])] if processes > 1 \
        else [sys.executable]
    result = subprocess.run([*launcher, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_a_ddp_step_of_two_processes_equals_one_step_on_the_whole_batch(corpus, tmp_path):
    flags = ["--corpus", "tsv", "--data-path", str(corpus), "--batch-size", "64", "--clip", "1e9", "--iterations", "1",
             *TINY]
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    torchrun("tests/ddp_step.py", *flags, str(tmp_path / "one"), processes=1)
    torchrun("tests/ddp_step.py", *flags, str(tmp_path / "two"), processes=2)
    single = torch.load(tmp_path / "one" / "rank0.pt", weights_only=True)
    ranks = [torch.load(tmp_path / "two" / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert single["grads"].keys() == ranks[0]["grads"].keys() and len(single["grads"]) > 10
    for rank in ranks:
        assert rank["nll"] == pytest.approx(single["nll"], rel=1e-5)
        for name, grad in single["grads"].items():
            torch.testing.assert_close(rank["grads"][name], grad, **TOLERANCE, msg=name)
        for part in ("encoder", "decoder"):
            for name, weight in single[part].items():
                torch.testing.assert_close(rank[part][name], weight, **WEIGHT_TOLERANCE, msg=f"{part}.{name}")


@pytest.mark.server
def test_a_two_process_run_trains_checkpoints_resumes_and_serves(corpus, tmp_path):
    save = tmp_path / "run"
    flags = ["--corpus", "tsv", "--data-path", str(corpus), "--batch-size", "16", "--save-every", "60",
             "--save-dir", str(save), "--print-every", "60", *TINY,
             "--best-min-heldout", "1"]  # the held-out rule, as on Cornell (a tiny corpus would serve the latest)
    first = torchrun("-m", "train.main", *flags, "--iterations", "120")
    assert "x 2 processes" in first.stderr
    assert sorted(p.name for p in save.glob("*.tar")) == ["120_checkpoint.tar", "60_checkpoint.tar",
                                                          "best_checkpoint.tar"]
    torchrun("-m", "train.main", "--resume", str(save / "120_checkpoint.tar"), "--iterations", "180",
             "--device", "cpu", "--best-min-heldout", "1")  # a run flag: not taken from the checkpoint
    resumed = torch.load(save / "180_checkpoint.tar", weights_only=True)
    history = resumed["history"]
    assert [h[0] for h in history] == [60, 120, 180] and history[-1][1] < history[0][1], history  # train loss falls
    best = torch.load(save / "best_checkpoint.tar", weights_only=True)
    assert best["heldout_loss"] == min(h[2] for h in history)
    bot = load_chatbot(save / "best_checkpoint.tar", quantize="int8")
    mar = build_mar(save / "best_checkpoint.tar", tmp_path / "store")
    with start_torchserve(tmp_path / "ts", mar.parent) as server:
        reply = requests.post(server.predictions_url, data=b"red cat", headers={"Content-Type": "text/plain"},
                              timeout=30)
    assert reply.status_code == 200 and reply.text == bot.reply("red cat").text + "\n"
