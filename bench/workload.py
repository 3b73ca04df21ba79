"""What the benchmarks share: the chatbot to measure, its prompts, the decoding scenarios, the served defaults.

    bot = benchmark_bot(args.checkpoint, args.runs)         # a checkpoint, else random tutorial-size weights
    voc, prompts, where = held_out_prompts(bot, args.data_path)

The decoding scenarios (DECODING_FIELDS) are the JSON fields bench.serve_bench sends, bench.decoding_cost
times in-process and bench.reply_quality reads the replies of; the served defaults (handler_defaults)
are handler/model-config.yaml's, which every benchmark's flags default to.
"""
from __future__ import annotations

import io
import itertools
import string
from collections.abc import Sequence
from pathlib import Path

import torch

from model import FORMAT, Chatbot, Voc, build_model, default_config, load_chatbot, normalize
from model.int8 import GateTable
from model.voc import EOS_token
from tools.server_config import model_config
from train.runs import default_checkpoint

# The decoding scenarios: JSON fields of each request (README's request table)
DECODING_FIELDS = {"greedy": {}, "beam5": {"beam_size": 5}, "sample": {"temperature": 0.8, "top_p": 0.9, "seed": 1}}
TUTORIAL_HIDDEN = 500
CORNELL_WORDS = 7826  # the tutorial's Cornell vocabulary: 7,823 words kept + PAD, SOS, EOS
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


def newest_tutorial_bot(runs: Path) -> Chatbot | None:
    """The chatbot of train.runs.default_checkpoint if its hidden size is the tutorial's, else None."""
    found = default_checkpoint(runs)
    if found is None:
        return None
    bot = load_chatbot(found)
    return bot if bot.checkpoint["config"]["hidden_size"] == TUTORIAL_HIDDEN else None


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


def held_out_prompts(bot: Chatbot | None, data_path: str | None) -> tuple[Voc | None, list[str], str]:
    """(vocabulary, held-out queries in corpus order without repeats, where they come from): the bot's own
    run's (train.data.checkpoint_data), else Cornell's as the tutorial's recipe splits it, else FALLBACK_PROMPTS
    when that corpus is not there."""
    from train.config import DEFAULT_CORNELL_PATH, stored_settings
    from train.data import checkpoint_data, load_data

    try:
        if bot is not None and bot.checkpoint.get("args"):
            voc, (_, heldout) = bot.voc, checkpoint_data(bot.checkpoint, bot.voc, data_path)
            where = f"held-out queries of its {bot.checkpoint['args'].get('corpus')} run"
        else:
            voc, _, heldout = load_data(stored_settings({"corpus": "cornell",
                                                         "data_path": data_path or DEFAULT_CORNELL_PATH}))
            where = "Cornell held-out queries"
    except OSError:  # the corpus is not on this machine
        return None, list(FALLBACK_PROMPTS), "fixed Cornell-like list (no corpus found)"
    return voc, list(dict.fromkeys(pair[0] for pair in heldout)), where


def weights_megabytes(bot: Chatbot) -> float:
    """Size of the encoder and decoder state_dicts as torch.save writes them (the shared embedding once)."""
    buf = io.BytesIO()
    torch.save({"encoder": bot.encoder.state_dict(), "decoder": bot.decoder.state_dict()}, buf)
    return buf.tell() / 1e6


def tables_megabytes(bot: Chatbot) -> float:
    """Memory of the int8 model's first-layer gate tables, built at load and never saved (model/int8.py)."""
    tables = [m.table for part in (bot.encoder, bot.decoder) for m in part.modules() if isinstance(m, GateTable)]
    return sum(t.numel() * t.element_size() for t in tables) / 1e6


def handler_defaults() -> dict:
    """Batching, worker and handler defaults from handler/model-config.yaml (the flags' defaults)."""
    config = model_config()
    quantize = config["handler"].get("quantize", False)
    return {"batch_size": config["batchSize"], "max_batch_delay": config["maxBatchDelay"],
            "workers": config["minWorkers"], "threads": config["handler"].get("threads", 0),
            "threads_alone": config["handler"].get("threads_alone", 0),
            "quantize": {True: "int8", False: "false"}.get(quantize, quantize)}


def add_quantize_flag(parser, default: str | None = None) -> None:
    """--quantize: the handler's weight option, by name (false, int8, fp16); model.load_chatbot reads the name."""
    default = default or handler_defaults()["quantize"]
    parser.add_argument("--quantize", choices=("false", "int8", "fp16"), default=default,
                        help=f"weights, as the handler's `quantize` option (default: {default})")
