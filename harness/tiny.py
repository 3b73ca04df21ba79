"""Tiny random-weight checkpoints whose replies differ from input to input: what the tests and the serving-image
runtime check (harness.image_runtime) serve, a word model and a byte-level BPE one; and tiny corpora in
chitchat-dataset's format."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from model import FORMAT, BpeTokenizer, Voc, build_model, default_config

TINY_SENTENCES = [
    "hello there !", "how are you ?", "i am fine .", "what is your name ?", "my name is bot .",
    "good bye !", "where do you live ?", "i live in a small house .", "do you like music ?",
    "yes i like it very much .",
]


# Several scripts and languages, digits and names: what the word vocabulary loses and BPE must keep
BPE_SENTENCES = TINY_SENTENCES + [
    "你好", "你好吗?", "我很好，谢谢.", "你叫什么名字?", "I was born in 1984.", "Hola, ¿cómo estás?",
    "Привет, как дела?", "Ich heiße Anna.", "The café opens at 9:30!", "こんにちは",
]


def make_tiny_checkpoint(path: Path, seed: int = 1, vocabulary=None, context_turns: int = 0) -> Path:
    """Save a small random-weight checkpoint whose replies differ from input to input; vocabulary: the
    tokens (a BpeTokenizer, say), default the words of TINY_SENTENCES; context_turns: earlier turns it reads."""
    if vocabulary is None:
        vocabulary = Voc("tiny")
        for sentence in TINY_SENTENCES:
            vocabulary.add_sentence(sentence)
    config = default_config(hidden_size=32, encoder_n_layers=1, decoder_n_layers=1, dropout=0.0,
                            context_turns=context_turns)
    torch.manual_seed(seed)
    encoder, decoder = build_model(config, vocabulary.num_words)
    with torch.no_grad():  # larger weights than the default init make replies depend on the input
        for p in [*encoder.parameters(), *decoder.parameters()]:
            p.mul_(3.0)
    torch.save({"format": FORMAT, "config": config, "voc": vocabulary.to_dict(), "encoder": encoder.state_dict(),
                "decoder": decoder.state_dict(), "iteration": 1, "loss": 0.0}, path)
    return path


def make_tiny_bpe_checkpoint(path: Path, seed: int = 1) -> Path:
    """make_tiny_checkpoint with a 400-token byte-level BPE learnt from BPE_SENTENCES."""
    return make_tiny_checkpoint(path, seed, BpeTokenizer.train(BPE_SENTENCES * 3, 400, "tiny-bpe"))


def message(text: str, sender: str) -> dict:
    """One chitchat-dataset message."""
    return {"text": text, "timestamp": "2018-05-02T19:38:15Z", "sender": sender}


def write_chitchat(path: Path, conversations: list[list[list[dict]]]) -> Path:
    """A corpus in chitchat-dataset's format: {id: {"messages": [[message, ...], ...]}}."""
    path.write_text(json.dumps({f"c{i}": {"messages": messages} for i, messages in enumerate(conversations)}))
    return path


def make_tiny_chitchat(path: Path, conversations: int = 40) -> Path:
    """Conversations of four turns that each name their conversation (w + letters: the normaliser drops digits), so
    a pair's source is known."""
    data = []
    for n in range(conversations):
        name = "w" + chr(97 + n // 26) + chr(97 + n % 26)
        data.append([[message(f"hello {name}", "a")], [message(f"hi {name} there", "b")],
                     [message(f"how are you {name} ?", "a")], [message(f"fine {name} thanks", "b")]])
    return write_chitchat(path, data)
