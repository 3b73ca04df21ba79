"""Training data pipeline: corpus loaders, tutorial-exact preparation, held-out split, batching.

Follows the PyTorch Chatbot Tutorial (`loadPrepareData`, `trimRareWords`, `batch2TrainData`)
closely enough that the Cornell Movie-Dialogs corpus gives the tutorial's published counts.

Run `python -m train.data --help` to print the counts for a corpus.
"""
from __future__ import annotations

import argparse
import ast
import csv
import importlib.util
import io
import itertools
import json
import logging
import random
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from model.config import ModelConfig
from model.context import context_ids, join_turns, split_turns
from model.tokenizer import BpeTokenizer
from model.voc import MAX_LENGTH, MIN_COUNT, EOS_token, PAD_token, Voc, normalize
from train.config import CORPORA, DEFAULT_CORNELL_PATH, DataConfig, add_flags, stored_settings

logger = logging.getLogger(__name__)

# (query, response), or (query, response, earlier turns) for a run with --context-turns (model/context.py's join_turns)
Pair = tuple[str, ...]
CORNELL_SEPARATOR = " +++$+++ "
CORNELL_ENCODING = "iso-8859-1"
CORNELL_FILES = ("movie_lines.txt", "movie_conversations.txt")


# ---------------------------------------------------------------- loaders

def consecutive_pairs(texts: Sequence[str]) -> list[Pair]:
    """(line i, line i+1) pairs of one conversation, both stripped and non-empty."""
    pairs = []
    for query, response in zip(texts, texts[1:]):
        query, response = query.strip(), response.strip()
        if query and response:  # the tutorial drops pairs with an empty side
            pairs.append((query, response))
    return pairs


def tutorial_round_trip(pairs: Iterable[Pair]) -> list[Pair]:
    """Pairs as the tutorial reads them back from its formatted_movie_lines.txt.

    The tutorial writes pairs with csv.writer (tab delimiter, minimal quoting) and reads
    them back with plain .split('\\n') and .split('\\t'), so a text holding a tab or a newline
    comes back cut in pieces. Reproducing that is what makes the published counts match.
    """
    buf = io.StringIO()
    csv.writer(buf, delimiter="\t", lineterminator="\n").writerows(pairs)
    out = []
    for line in buf.getvalue().strip().split("\n"):
        fields = line.split("\t")
        if len(fields) < 2:  # the tutorial would crash on it (IndexError); skip instead
            logger.warning("skipping a line with no tab after the csv round trip: %r", line[:80])
            continue
        out.append((fields[0], fields[1]))  # the tutorial only ever looks at pair[0] and pair[1]
    return out


def _cornell_fields(path: Path) -> Iterator[list[str]]:
    """The ` +++$+++ `-separated fields of each line of a Cornell corpus file."""
    with open(path, encoding=CORNELL_ENCODING) as f:
        for line in f:
            yield line.split(CORNELL_SEPARATOR)


def load_cornell(corpus_dir: str | Path) -> list[Pair]:
    """Query/response pairs from the original movie_lines.txt + movie_conversations.txt."""
    corpus_dir = Path(corpus_dir)
    # The text keeps its trailing newline here, as in the tutorial; consecutive_pairs strips it.
    lines = {fields[0]: fields[4] for fields in _cornell_fields(corpus_dir / "movie_lines.txt")}
    pairs: list[Pair] = []
    for fields in _cornell_fields(corpus_dir / "movie_conversations.txt"):
        line_ids = ast.literal_eval(fields[3].strip())  # e.g. "['L194', 'L195']"
        pairs.extend(consecutive_pairs([lines[i] for i in line_ids]))
    return tutorial_round_trip(pairs)


def load_convokit(utterances_jsonl: str | Path) -> list[Pair]:
    """Query/response pairs from ConvoKit's movie-corpus utterances.jsonl, as the tutorial builds them."""
    conversations: dict[str, list[str]] = {}
    # UTF-8 is what ConvoKit writes; the tutorial says ISO-8859-1, which is the same for
    # its ASCII-escaped JSON.
    with open(utterances_jsonl, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            utterance = json.loads(line)
            conversations.setdefault(utterance["conversation_id"], []).append(utterance["text"])
    pairs: list[Pair] = []
    for texts in conversations.values():
        # The tutorial inserts each later line at the front (the file lists a conversation
        # newest first), so a conversation is its lines in reverse file order.
        pairs.extend(consecutive_pairs(texts[::-1]))
    return tutorial_round_trip(pairs)


def load_tsv(path: str | Path) -> list[Pair]:
    """Pairs from a UTF-8 file of `query<TAB>response` lines; blank lines are skipped."""
    pairs = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            fields = line.rstrip("\r\n").split("\t")
            if len(fields) < 2:
                logger.warning("%s:%d: no tab, line skipped", path, number)
                continue
            pairs.append((fields[0], fields[1]))
    return pairs


def chatterbot_dir(language: str = "english") -> Path:
    """The folder of the installed chatterbot-corpus package holding one language's YAML files."""
    spec = importlib.util.find_spec("chatterbot_corpus")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the chatterbot-corpus package is not installed (pip install chatterbot-corpus)")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / language
    if not path.is_dir():
        raise FileNotFoundError(f"chatterbot-corpus has no language {language!r} ({path} is missing)")
    return path


def _utterance_text(utterance: object) -> str:
    """An utterance as text: YAML numbers and booleans become strings, anything else ''."""
    if isinstance(utterance, str):
        return utterance
    if isinstance(utterance, (int, float)):  # bool is an int too
        return str(utterance)
    return ""  # None, or a nested list/dict: no usable text, so it pairs with nothing


def load_chatterbot(language: str = "english") -> list[Pair]:
    """Consecutive-utterance pairs from every conversation of the chatterbot-corpus YAML files."""
    pairs: list[Pair] = []
    for path in sorted(chatterbot_dir(language).glob("*.yml")):
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
        for conversation in data.get("conversations") or []:
            if not isinstance(conversation, list):
                # trivia.yml has one entry whose question and answer YAML merged into one string
                logger.warning("%s: skipping a conversation that is not a list: %r", path.name, conversation)
                continue
            pairs.extend(consecutive_pairs([_utterance_text(u) for u in conversation]))
    return pairs


def chitchat_path() -> Path:
    """The dataset.json inside the installed chitchat-dataset package."""
    spec = importlib.util.find_spec("chitchat_dataset")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the chitchat-dataset package is not installed (pip install -r requirements.txt)")
    return Path(next(iter(spec.submodule_search_locations))) / "dataset.json"


def chitchat_turns(messages: list[list[dict]]) -> list[str]:
    """One conversation's turns: each run of one sender's consecutive messages joined by spaces."""
    turns: list[str] = []
    last_sender = None
    for group in messages:
        for message in group:
            text = str(message.get("text") or "").strip()
            if not text:
                continue
            if message.get("sender") == last_sender and turns:
                turns[-1] += " " + text
            else:
                turns.append(text)
                last_sender = message.get("sender")
    return turns


def load_chitchat_conversations(path: str | Path | None = None) -> list[list[str]]:
    """The turns of every conversation of the Chit Chat Challenge dataset (`chitchat-dataset`'s JSON:
    {id: {"messages": [[{"text", "sender", ...}, ...], ...]}}), in file order; path defaults to the package's."""
    with open(path or chitchat_path(), encoding="utf-8") as f:
        data = json.load(f)
    return [chitchat_turns(conversation.get("messages") or []) for conversation in data.values()]


def conversation_pairs(conversations: Iterable[Sequence[str]], context_turns: int = 0) -> list[Pair]:
    """Each turn and the next as a pair; with context_turns > 0 a pair carries the turns before its query as a
    third item (model/context.py's join_turns, '' before a conversation's first turn)."""
    pairs: list[Pair] = []
    for turns in conversations:
        for i, (query, response) in enumerate(zip(turns, turns[1:])):
            pairs.append((query, response, join_turns(turns[max(0, i - context_turns):i])) if context_turns
                         else (query, response))
    return pairs


def load_chitchat(path: str | Path | None = None) -> list[Pair]:
    """Consecutive-turn pairs of every chitchat conversation (no context; load_data splits by conversation)."""
    return conversation_pairs(load_chitchat_conversations(path))


def load_corpus(corpus: str, path: str | Path | None = None, language: str = "english") -> list[Pair]:
    """Dispatch to a loader by corpus name; `path` is the Cornell folder or the jsonl/tsv file."""
    if corpus == "chatterbot":
        return load_chatterbot(language)
    if corpus == "chitchat":
        return load_chitchat(path)
    if path is None:
        raise ValueError(f"corpus {corpus!r} needs a path")
    loaders = {"cornell": load_cornell, "convokit": load_convokit, "tsv": load_tsv}
    if corpus not in loaders:
        raise ValueError(f"unknown corpus {corpus!r}; choose from {', '.join(CORPORA)}")
    return loaders[corpus](path)


# ---------------------------------------------------------------- preparation

@dataclass
class PrepStats:
    """The counts the tutorial prints while preparing data."""

    pairs_read: int  # "Read N sentence pairs"
    pairs_filtered: int  # "Trimmed to N sentence pairs" (length filter)
    words_counted: int  # "Counted words: N" (voc.num_words, 3 special tokens included)
    keep_words: int  # "keep_words K / T"
    total_words: int  # T above: words before trimming, specials excluded
    pairs_kept: int  # "Trimmed from N pairs to M"


def normalize_pairs(pairs: Iterable[Pair]) -> list[Pair]:
    """Both sides through the tutorial normaliser."""
    cache: dict[str, str] = {}  # a response is usually the next pair's query: normalise it once

    def norm(text: str) -> str:
        if text not in cache:
            cache[text] = normalize(text)
        return cache[text]

    def norm_context(context: str) -> str:
        return join_turns([norm(turn) for turn in split_turns(context)])

    return [(norm(p[0]), norm(p[1]), *(norm_context(c) for c in p[2:])) for p in pairs]


def filter_pairs(pairs: Iterable[Pair], max_length: int = MAX_LENGTH) -> list[Pair]:
    """Pairs whose both sides have fewer than `max_length` words (the tutorial's filterPair)."""
    return [p for p in pairs if len(p[0].split(" ")) < max_length and len(p[1].split(" ")) < max_length]


def build_voc(pairs: Iterable[Pair], name: str = "voc") -> Voc:
    """A vocabulary counting every word of both sides."""
    voc = Voc(name)
    for query, response, *_ in pairs:  # earlier turns are counted as the turns they were
        voc.add_sentence(query)
        voc.add_sentence(response)
    return voc


def known_pairs(voc: Voc, pairs: Iterable[Pair]) -> list[Pair]:
    """Pairs whose every word is in the vocabulary (trimRareWords' filter)."""
    known = voc.word2index
    return [p for p in pairs if all(w in known for w in p[0].split(" ")) and all(w in known for w in p[1].split(" "))]


def _ratio(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def prepare_with_stats(
    pairs: Iterable[Pair], max_length: int = MAX_LENGTH, min_count: int = MIN_COUNT, name: str = "voc"
) -> tuple[Voc, list[Pair], PrepStats]:
    """loadPrepareData + trimRareWords: normalise, length-filter, count, trim; logs the tutorial's lines."""
    normalized = normalize_pairs(pairs)
    logger.info("Read %d sentence pairs", len(normalized))
    filtered = filter_pairs(normalized, max_length)
    logger.info("Trimmed to %d sentence pairs", len(filtered))
    voc = build_voc(filtered, name)
    words_counted = voc.num_words
    logger.info("Counted words: %d", words_counted)
    keep_words, total_words = voc.trim(min_count)
    logger.info("keep_words %d / %d = %.4f", keep_words, total_words, _ratio(keep_words, total_words))
    kept = known_pairs(voc, filtered)
    share = _ratio(len(kept), len(filtered))
    logger.info("Trimmed from %d pairs to %d, %.4f of total", len(filtered), len(kept), share)
    stats = PrepStats(len(normalized), len(filtered), words_counted, keep_words, total_words, len(kept))
    return voc, kept, stats


def prepare(
    pairs: Iterable[Pair], max_length: int = MAX_LENGTH, min_count: int = MIN_COUNT, name: str = "voc"
) -> tuple[Voc, list[Pair]]:
    """Like prepare_with_stats, without the counts: (trimmed vocabulary, normalised kept pairs)."""
    voc, kept, _ = prepare_with_stats(pairs, max_length, min_count, name)
    return voc, kept


def short_pairs(tokenizer: BpeTokenizer, pairs: Iterable[Pair], max_length: int) -> list[Pair]:
    """Pairs whose both sides have fewer than `max_length` tokens (filter_pairs, counted in BPE tokens)."""
    return [p for p in pairs if all(0 < len(tokenizer.token_ids(side)) < max_length for side in p[:2])]


def prepare_bpe(pairs: Sequence[Pair], max_length: int, vocab_size: int, heldout_fraction: float, seed: int,
                name: str = "bpe", tokenizer: BpeTokenizer | None = None, extra: Sequence[Pair] = (),
                heldout: Sequence[Pair] | None = None) -> tuple[BpeTokenizer, list[Pair], list[Pair]]:
    """(byte-level BPE, training pairs, held-out pairs): hold out first (`extra` pairs always train), learn the BPE
    from the training side only (unless `tokenizer` is given: a resumed run keeps its own), then keep pairs of
    fewer than max_length tokens.

    No normalising or trimming: the tokenizer's own clean-up (NFC, whitespace) is all, and every text is known.
    """
    logger.info("Read %d sentence pairs (and %d extra training pairs)", len(pairs), len(extra))
    train, heldout = split_heldout(pairs, heldout_fraction, seed) if heldout is None else (list(pairs), list(heldout))
    train += list(extra)
    if tokenizer is None:
        tokenizer = BpeTokenizer.train((text for pair in train for text in pair[:2]), vocab_size, name)
        logger.info("Learnt a byte-level BPE of %d tokens from %d training pairs", tokenizer.num_words, len(train))
    kept, kept_heldout = short_pairs(tokenizer, train, max_length), short_pairs(tokenizer, heldout, max_length)
    logger.info("Trimmed to %d training and %d held-out pairs of fewer than %d tokens a side, %.4f of total",
                len(kept), len(kept_heldout), max_length, _ratio(len(kept) + len(kept_heldout), len(pairs)))
    return tokenizer, kept, kept_heldout


def split_heldout(pairs: Sequence[Pair], fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """(train, heldout): round(len * fraction) pairs held out, chosen by `seed` alone.

    Uses its own random.Random, so the global RNG state changes nothing; both parts keep
    the input order.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    n_heldout = round(len(pairs) * fraction)
    held = set(random.Random(seed).sample(range(len(pairs)), n_heldout))
    train = [p for i, p in enumerate(pairs) if i not in held]
    heldout = [p for i, p in enumerate(pairs) if i in held]
    return train, heldout


# ---------------------------------------------------------------- batching

def indexes_from_sentence(voc, sentence: str) -> list[int]:
    """Token ids of a prepared sentence (model/tokenizer.py's token_ids, word or BPE), ending in EOS."""
    return voc.token_ids(sentence) + [EOS_token]


def _padded(indexes_batch: list[list[int]]) -> torch.Tensor:
    """(T, B) LongTensor: sequence b in column b, PAD after its end."""
    return torch.tensor(list(itertools.zip_longest(*indexes_batch, fillvalue=PAD_token)), dtype=torch.long)


def source_ids(voc, pair: Pair, max_length: int = MAX_LENGTH) -> list[int]:
    """The encoder's ids for a pair's query: its earlier turns' first (model/context.py) when it carries them."""
    turns = split_turns(pair[2]) if len(pair) > 2 else []
    return context_ids(voc, turns, len(turns), max_length) + indexes_from_sentence(voc, pair[0])


def input_var(indexes_batch: Sequence[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(padded input (T, B), lengths (B,)) of encoder ids; lengths is CPU int64, as pack_padded_sequence needs."""
    lengths = torch.tensor([len(ix) for ix in indexes_batch], dtype=torch.int64)
    return _padded(indexes_batch), lengths


def output_var(sentences: Sequence[str], voc) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(padded target (T, B), bool mask (T, B) true on real tokens, max target length)."""
    indexes_batch = [indexes_from_sentence(voc, s) for s in sentences]
    target = _padded(indexes_batch)
    # PAD never occurs inside a sentence (words get ids >= 3), so "not PAD" is "not padding".
    return target, target != PAD_token, max(len(ix) for ix in indexes_batch)


def batch_to_tensors(
    voc, pairs: Sequence[Pair], max_length: int = MAX_LENGTH
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """batch2TrainData: (input, lengths, target, mask, max_target_len), longest input (in tokens) first.

    The sort is stable and does not change `pairs` (the tutorial sorts in place). max_length cuts earlier turns.
    """
    sources = [source_ids(voc, p, max_length) for p in pairs]
    order = sorted(range(len(pairs)), key=lambda i: len(sources[i]), reverse=True)
    ordered = [pairs[i] for i in order]
    inp, lengths = input_var([sources[i] for i in order])
    target, mask, max_target_len = output_var([p[1] for p in ordered], voc)
    return inp, lengths, target, mask, max_target_len


def random_batches(
    pairs: Sequence[Pair], batch_size: int, n: int, rng: random.Random | int = 0, context_dropout: float = 0.0
) -> Iterator[list[Pair]]:
    """Yield `n` batches of `batch_size` pairs drawn with replacement, as the tutorial does; a drawn pair's earlier
    turns are left out with probability context_dropout (drawn from `rng` too, only for pairs that have them).

    `rng` is a seed or a random.Random that the generator draws from and nothing else. To
    resume training, save `rng.getstate()` after the last batch used, and later pass a
    random.Random restored with setstate(): the batches continue the same sequence. Batches
    are drawn lazily, one per next(), so the state always matches the batches consumed.
    """
    if not pairs:
        raise ValueError("no pairs to draw batches from")
    if isinstance(rng, int):
        rng = random.Random(rng)
    for _ in range(n):
        batch = [rng.choice(pairs) for _ in range(batch_size)]
        yield [p[:2] if len(p) > 2 and p[2] and rng.random() < context_dropout else p for p in batch]


# ---------------------------------------------------------------- a run's data


def resolve_data_path(settings: argparse.Namespace) -> None:
    """Fill settings.data_path for the Cornell default (data/cornell, where `make data` puts it) and check one is
    given where the corpus needs it."""
    if settings.corpus == "cornell" and settings.data_path is None:
        settings.data_path = DEFAULT_CORNELL_PATH
    if settings.corpus in ("convokit", "tsv") and settings.data_path is None:
        raise ValueError(f"--corpus {settings.corpus} needs --data-path")


def load_pairs(settings: argparse.Namespace) -> tuple[list[Pair], list[Pair] | None]:
    """(pairs, held-out pairs) of a corpus of conversations, split by conversation (with each pair's earlier turns
    when settings.context_turns > 0); (pairs, None) of a corpus of pairs, which the preparation splits."""
    if settings.corpus != "chitchat":
        if getattr(settings, "context_turns", 0):
            raise ValueError(f"--context-turns needs a corpus of conversations (--corpus chitchat); the "
                             f"{settings.corpus} loader gives pairs without their earlier turns")
        return load_corpus(settings.corpus, settings.data_path, settings.language), None
    conversations = load_chitchat_conversations(settings.data_path)
    train, heldout = split_heldout(conversations, settings.heldout_fraction, settings.seed)
    turns = getattr(settings, "context_turns", 0)
    return conversation_pairs(train, turns), conversation_pairs(heldout, turns)


def load_data(settings: argparse.Namespace, saved=None) -> tuple[object, list[Pair], list[Pair]]:
    """(vocabulary, training pairs, held-out pairs) for DataConfig settings and max_length; the preparation's
    counts are logged on the way. saved: a run's own vocabulary, kept when it is a BPE (else one is learnt from
    the training pairs; a word vocabulary is rebuilt from the corpus, as the tutorial does)."""
    resolve_data_path(settings)
    pairs, held = load_pairs(settings)
    extra = load_tsv(settings.extra_pairs) if getattr(settings, "extra_pairs", None) else []
    if settings.tokenizer == "bpe":
        voc, train, heldout = prepare_bpe(pairs, settings.max_length, settings.vocab_size, settings.heldout_fraction,
                                          settings.seed, name=settings.corpus,
                                          tokenizer=saved if getattr(saved, "kind", None) == "bpe" else None,
                                          extra=extra, heldout=held)
        wanted = set(extra)
    elif held is not None:  # held out by conversation: the vocabulary is the training side's
        voc, train = prepare(pairs + extra, settings.max_length, settings.min_count, name=settings.corpus)
        heldout = known_pairs(voc, filter_pairs(normalize_pairs(held), settings.max_length))
        wanted = set(normalize_pairs(extra))
    else:
        voc, prepared = prepare(pairs + extra, settings.max_length, settings.min_count, name=settings.corpus)
        wanted = set(normalize_pairs(extra))  # they train, never held out
        train, heldout = split_heldout([p for p in prepared if p not in wanted], settings.heldout_fraction,
                                       settings.seed)
        train += [p for p in prepared if p in wanted]
    dropped = wanted - set(train)
    if dropped:  # written to be learnt: say so when preparation dropped some
        logger.warning("%d of the %d pairs of %s are not trained on: a side has %d tokens or more (or a rare word "
                       "was trimmed); shorten them", len(dropped), len(wanted), settings.extra_pairs,
                       settings.max_length)
    logger.info("Split: %d training pairs, %d held out", len(train), len(heldout))
    return voc, train, heldout


def same_tokens(voc) -> object:
    """What must not change for a run's vocabulary to be the same: its words, or its BPE's JSON."""
    stored = voc.to_dict()
    return stored.get("json") or stored["words"]


def run_data(settings: argparse.Namespace, saved) -> tuple[list[Pair], list[Pair]]:
    """(training pairs, held-out pairs) of a run with these settings and vocabulary `saved` (a checkpoint's, as
    model.load_chatbot built it); ValueError when the corpus at settings.data_path no longer gives that vocabulary."""
    voc, train, heldout = load_data(settings, saved)
    if same_tokens(voc) != same_tokens(saved):
        raise ValueError(f"the {settings.corpus} corpus at {settings.data_path} does not give the checkpoint's "
                         "vocabulary")
    return train, heldout


def checkpoint_data(ckpt: dict, voc, data_path: str | None = None) -> tuple[list[Pair], list[Pair]]:
    """run_data for the run a checkpoint was trained by (its stored settings; the corpus at data_path if it moved)."""
    settings = stored_settings(ckpt.get("args") or {})
    settings.data_path = data_path or settings.data_path
    return run_data(settings, voc)


# ---------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options of `python -m train.data`: train.main's data flags."""
    p = argparse.ArgumentParser(prog="python -m train.data", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_flags(p, DataConfig)
    add_flags(p, ModelConfig, only=("max_length",))
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Load a corpus, prepare it as training would and print the counts, the split sizes included."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
    try:
        load_data(args)
    except (OSError, ValueError) as e:
        logger.error("cannot load the %s corpus: %s", args.corpus, e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
