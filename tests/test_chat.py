"""The chat CLI (python -m tools.chat): one-shot and interactive forms, unknown words, broken checkpoints."""
from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from model import load_chatbot
from train import main as train_main

REPO = Path(__file__).resolve().parent.parent
WORDS = "hello there how are you fine thanks good morning night".split()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A briefly trained tiny checkpoint whose vocabulary is WORDS."""
    folder = tmp_path_factory.mktemp("chat")
    rng = random.Random(0)
    lines = [f"{' '.join(rng.choices(WORDS, k=3))}\t{' '.join(rng.choices(WORDS, k=3))}" for _ in range(60)]
    (folder / "pairs.tsv").write_text("\n".join(lines) + "\n")
    assert train_main.main(["--corpus", "tsv", "--data-path", str(folder / "pairs.tsv"), "--min-count", "1",
                            "--hidden-size", "16", "--encoder-n-layers", "1", "--decoder-n-layers", "1",
                            "--batch-size", "8", "--iterations", "10", "--learning-rate", "0.01",
                            "--device", "cpu", "--save-dir", str(folder)]) == 0
    return folder / "10_checkpoint.tar"


@pytest.fixture(scope="module")
def bot(checkpoint):
    return load_chatbot(checkpoint)


def chat(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "tools.chat", *args], input=stdin, capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=120)


def test_one_shot_prints_the_chatbots_reply(checkpoint, bot):
    result = chat("--checkpoint", str(checkpoint), "--text", "Hello there, how are you")
    assert result.returncode == 0, result.stderr
    expected = bot.reply("Hello there, how are you")
    assert expected.text and not expected.unknown_words
    assert result.stdout == expected.text + "\n"
    assert result.stderr == ""


def test_one_shot_names_dropped_unknown_words(checkpoint, bot):
    result = chat("--checkpoint", str(checkpoint), "--text", "hello xylophone good quux")
    assert result.returncode == 0, result.stderr
    assert result.stdout == bot.reply("hello good").text + "\n"
    assert "(unknown words dropped: xylophone, quux)" in result.stderr


def test_one_shot_with_no_known_word_fails_clearly(checkpoint):
    result = chat("--checkpoint", str(checkpoint), "--text", "xylophone quux")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "none of the words is in the bot's vocabulary" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("content", [None, b"not a torch file at all", b"PK\x03\x04truncated zip"])
def test_missing_or_broken_checkpoint_exits_2_without_traceback(tmp_path, content):
    path = tmp_path / "broken.tar"
    if content is not None:
        path.write_bytes(content)
    result = chat("--checkpoint", str(path), "--text", "hello")
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and str(path) in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_interactive_replies_until_q(checkpoint, bot):
    result = chat("--checkpoint", str(checkpoint), stdin="hello\ngood morning xylophone\nq\nhow are you\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"> Bot: {bot.reply('hello').text}\n> Bot: {bot.reply('good morning').text}\n> "
    assert "(unknown words dropped: xylophone)" in result.stderr


def test_interactive_reports_unusable_input_and_ends_at_end_of_input(checkpoint, bot):
    result = chat("--checkpoint", str(checkpoint), stdin="quux\nfine thanks\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"> > Bot: {bot.reply('fine thanks').text}\n> "
    assert "Error: none of the words is in the bot's vocabulary" in result.stderr


def test_decoding_flags_choose_the_search_and_print_each_reply_with_its_score(checkpoint, bot):
    from model.schema import DecodeOptions

    result = chat("--checkpoint", str(checkpoint), "--text", "hello there", "--beam-size", "3", "--num-replies", "2")
    assert result.returncode == 0, result.stderr
    expected = bot.reply("hello there", DecodeOptions(beam_size=3, num_replies=2, max_length=bot.max_length))
    assert result.stdout.splitlines() == [f"{text}  ({score:.3f})" for text, score in expected.replies]
    seeded = [chat("--checkpoint", str(checkpoint), "--text", "hello there", "--temperature", "2", "--seed", "5").stdout
              for _ in range(2)]
    assert seeded[0] == seeded[1] == bot.reply("hello there", DecodeOptions(temperature=2.0, seed=5)).text + "\n"


def test_an_invalid_decoding_flag_is_an_error_naming_it(checkpoint):
    result = chat("--checkpoint", str(checkpoint), "--text", "hello", "--beam-size", "2", "--num-replies", "3")
    assert result.returncode == 2 and result.stderr.startswith("error: num_replies: 3 is more than beam_size")


def test_without_checkpoint_it_talks_to_the_newest_best_checkpoint_under_runs(checkpoint, bot, tmp_path):
    (tmp_path / "runs" / "old").mkdir(parents=True)
    (tmp_path / "runs" / "old" / "best_checkpoint.tar").write_bytes(b"not a checkpoint: older, so never read")
    os.utime(tmp_path / "runs" / "old" / "best_checkpoint.tar", (1, 1))
    (tmp_path / "runs" / "new").mkdir()
    (tmp_path / "runs" / "new" / "best_checkpoint.tar").write_bytes(checkpoint.read_bytes())
    result = subprocess.run([sys.executable, "-m", "tools.chat", "--text", "hello"], capture_output=True, text=True,
                            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == bot.reply("hello").text + "\n"


def test_one_shot_says_when_the_text_was_cut_to_max_length(checkpoint, bot):
    long_text = " ".join(WORDS * 3)  # more known words than the model reads
    result = chat("--checkpoint", str(checkpoint), "--text", long_text)
    assert result.returncode == 0 and bot.reply(long_text).truncated
    assert result.stdout == bot.reply(long_text).text + "\n"
    assert result.stderr == "(the text was cut to the model's max_length tokens)\n"
