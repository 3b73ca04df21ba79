"""bench.profile against the real py-spy: a busy process's hot function comes out on top."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from bench import profile

BUSY = """
def spin():
    while True:
        sum(range(1000))

spin()
"""


@pytest.fixture
def busy_process():
    process = subprocess.Popen([sys.executable, "-c", BUSY])
    time.sleep(0.5)  # past the interpreter's start
    yield process
    process.kill()
    process.wait()


def test_records_a_process_and_finds_its_hot_function_without_the_venv_on_path(busy_process, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", os.defpath)  # `python -m bench...` from a venv that was never activated
    out = tmp_path / "busy.txt"
    assert profile.record(busy_process.pid, 2, out).wait() == 0
    own, total, samples = profile.summarize(out)
    assert samples > 50
    assert own.most_common(1)[0][0] == "<string>:spin"
    assert total["<string>:spin"] == samples and "<string>:spin" in profile.report(out)


def test_function_of_keeps_the_path_after_site_packages():
    frame = "greedy (/x/.venv/lib/python3.11/site-packages/torch/nn/modules/rnn.py:120)"
    assert profile.function_of(frame) == "torch/nn/modules/rnn.py:greedy"
