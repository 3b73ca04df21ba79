"""The quantised model the handler serves by default keeps the float32 model's quality.

Gates (bench/quant_quality.py): held-out loss within 1% of float32's, and greedy replies identical
on at least 95% of held-out prompts. A small model is trained here on the bundled chatterbot
corpus with train.main (one thread, about 20 s on a quiet CPU); a fifth of its pairs is held out
so that the reply gate counts over a hundred prompts. `python -m bench.quant_quality` runs the
same comparison on a real Cornell checkpoint.
"""
from __future__ import annotations

import pytest
import torch
import yaml

from bench.quant_quality import LOSS_TOLERANCE, MODES, REPLY_AGREEMENT, compare, compare_bots
from harness.launcher import REPO
from model import load_chatbot
from train.data import checkpoint_data
from train.main import main as train_main

ITERATIONS = 300


def shipped_quantize():
    """The quantize option handler/model-config.yaml ships."""
    return yaml.safe_load((REPO / "handler" / "model-config.yaml").read_text())["handler"].get("quantize", False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """A chatterbot model trained for ITERATIONS batches (hidden 64, 2+2 layers)."""
    save_dir = tmp_path_factory.mktemp("quantization")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two busy-waiting threads on a shared 2-core machine are slower than one
    try:
        status = train_main(["--corpus", "chatterbot", "--min-count", "1", "--hidden-size", "64",
                             "--heldout-fraction", "0.2", "--iterations", str(ITERATIONS),
                             "--save-every", str(ITERATIONS), "--print-every", str(ITERATIONS),
                             "--save-dir", str(save_dir), "--device", "cpu"])
    finally:
        torch.set_num_threads(threads)
    assert status == 0
    return load_chatbot(save_dir / f"{ITERATIONS}_checkpoint.tar")


@pytest.fixture(scope="module")
def heldout(trained):
    return checkpoint_data(trained.checkpoint, trained.voc)[1]


def test_model_config_quantises_by_default():
    assert shipped_quantize() in MODES


def test_shipped_quantisation_keeps_float32_quality(trained, heldout):
    quality = compare(trained, shipped_quantize(), heldout, batch_size=8)
    assert quality.prompts >= 100
    assert abs(quality.loss_change) <= LOSS_TOLERANCE, quality.summary()
    assert quality.agreement >= REPLY_AGREEMENT, quality.summary()


def test_the_gates_reject_a_degraded_model(trained, heldout):
    """The comparison is not vacuous: noise of the size of the output weights fails it."""
    degraded = load_chatbot(trained.checkpoint)
    with torch.no_grad():
        weight = degraded.decoder.out.weight
        weight.add_(torch.randn(weight.shape, generator=torch.Generator().manual_seed(0)) * weight.std())
    assert not compare_bots(load_chatbot(trained.checkpoint), degraded, "noisy", heldout).passes


@pytest.mark.parametrize("mode", MODES)
def test_replies_do_not_depend_on_the_other_texts_of_a_batch(trained, heldout, mode):
    """int8 quantises each row on its own and fp16 keeps float32 activations: alone == in any batch."""
    bot = load_chatbot(trained.checkpoint, quantize=mode)
    queries = [query for query, _ in heldout[:48]]
    alone = [bot.reply(q).text for q in queries]
    assert [r.text for r in bot.reply_batch(queries)] == alone
    assert [r.text for r in bot.reply_batch(queries[::-1])] == alone[::-1]
    assert [r.text for r in bot.reply_batch(queries[:5])] == alone[:5]
