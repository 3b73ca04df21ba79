"""Word vocabulary, text normalisation and the unknown-word policy."""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

PAD_token = 0  # pads short sentences
SOS_token = 1  # start of sentence
EOS_token = 2  # end of sentence
MAX_LENGTH = 10  # sentences of MAX_LENGTH words or more are filtered out in training
MIN_COUNT = 3  # words seen fewer times than this are trimmed from the vocabulary

SPECIAL_WORDS = ("PAD", "SOS", "EOS")


def unicode_to_ascii(s: str) -> str:
    """Strip accents: 'Café' -> 'Cafe' (NFD, then drop combining marks)."""
    return "".join(c for c in unicodedata.normalize("NFD", s) if unicodedata.category(c) != "Mn")


def normalize(text: str) -> str:
    """The tutorial's normaliser: ASCII, lowercase, space before .!?, letters and .!? only."""
    s = unicode_to_ascii(text.lower().strip())
    s = re.sub(r"([.!?])", r" \1", s)
    s = re.sub(r"[^a-zA-Z.!?]+", r" ", s)
    return re.sub(r"\s+", r" ", s).strip()


@dataclass
class Encoded:
    """One text as the model's input: ids ending in EOS, the words dropped as unknown (word vocabulary only),
    whether the text was cut to the model's max_length, and what of the earlier turns it reads (model/context.py):
    how many turns, and how many of the ids (the first context_tokens) are theirs."""

    ids: list[int]
    unknown_words: list[str] = field(default_factory=list)
    truncated: bool = False
    earlier_turns: int = 0
    context_tokens: int = 0


class Voc:
    """Word <-> index mapping with counts, as in the PyTorch chatbot tutorial; the word kind of model/tokenizer.py's
    interface (encode, decode, token_ids, kind, to_dict, example_text)."""

    kind = "word"

    def __init__(self, name: str = "voc"):
        self.name = name
        self.trimmed = False
        self.word2index: dict[str, int] = {}
        self.word2count: dict[str, int] = {}
        self.index2word: dict[int, str] = dict(enumerate(SPECIAL_WORDS))
        self.num_words = len(SPECIAL_WORDS)

    def add_sentence(self, sentence: str) -> None:
        for word in sentence.split(" "):
            self.add_word(word)

    def add_word(self, word: str) -> None:
        if word not in self.word2index:
            self.word2index[word] = self.num_words
            self.word2count[word] = 1
            self.index2word[self.num_words] = word
            self.num_words += 1
        else:
            self.word2count[word] += 1

    def trim(self, min_count: int) -> tuple[int, int]:
        """Keep only words seen at least `min_count` times; returns (kept, total) words."""
        if self.trimmed:
            return len(self.word2index), len(self.word2index)
        keep_words = [w for w, c in self.word2count.items() if c >= min_count]
        total = len(self.word2index)
        self.__init__(self.name)
        self.trimmed = True
        for word in keep_words:
            self.add_word(word)
        return len(keep_words), total

    def token_ids(self, sentence: str) -> list[int]:
        """Word ids of a normalised, trimmed training sentence (no EOS)."""
        return [self.word2index[word] for word in sentence.split(" ")]

    def encode(self, text: str, max_length: int) -> Encoded:
        """Raw text as token ids ending in EOS, following the unknown-word policy.

        Policy (shared by the chat CLI and the TorchServe handler): the text is normalised,
        words the vocabulary does not know are dropped and returned as unknown_words, and
        only the first `max_length - 1` known words are kept (the model never saw longer
        inputs; truncated says so). Text with no known word at all raises NoKnownWordsError.
        """
        words = normalize(text).split()
        known = [w for w in words if w in self.word2index]
        unknown = [w for w in words if w not in self.word2index]
        if not known:
            if not words:
                raise NoKnownWordsError("the text has no words (only spaces, digits or symbols)", [])
            raise NoKnownWordsError("none of the words is in the bot's vocabulary", unknown)
        ids = [self.word2index[w] for w in known[: max_length - 1]]
        return Encoded(ids + [EOS_token], unknown, len(known) > max_length - 1)

    def decode(self, ids: list[int]) -> str:
        """decode(): the reply text up to the first EOS."""
        return decode(self, ids)

    def example_text(self) -> str:
        """Up to three words it knows (make mar's test reply)."""
        return " ".join(self.index2word[i] for i in range(len(SPECIAL_WORDS), min(self.num_words, 6)))

    def to_dict(self) -> dict:
        """Plain types only, so a checkpoint loads with torch.load(weights_only=True)."""
        words = [self.index2word[i] for i in range(len(SPECIAL_WORDS), self.num_words)]
        return {
            "kind": self.kind,
            "name": self.name,
            "trimmed": self.trimmed,
            "words": words,
            "counts": [self.word2count[w] for w in words],
        }

    @classmethod
    def from_dict(cls, d: dict) -> Voc:
        """The Voc that to_dict wrote; ValueError when its words and counts disagree."""
        if len(d["words"]) != len(d["counts"]):
            raise ValueError(f"the vocabulary has {len(d['words'])} words but {len(d['counts'])} counts")
        voc = cls(d["name"])
        for word, count in zip(d["words"], d["counts"]):
            voc.add_word(word)
            voc.word2count[word] = count
        voc.trimmed = d["trimmed"]
        return voc


class NoKnownWordsError(ValueError):
    """Raised when an input holds no word the vocabulary knows, so there is nothing to encode."""

    def __init__(self, message: str, unknown_words: list[str]):
        super().__init__(message)
        self.unknown_words = unknown_words


def encode(voc: Voc, text: str, max_length: int = MAX_LENGTH) -> tuple[list[int], list[str]]:
    """(token ids ending in EOS, dropped unknown words) for raw text: Voc.encode's policy."""
    found = voc.encode(text, max_length)
    return found.ids, found.unknown_words


def decode(voc: Voc, ids: list[int]) -> str:
    """Token ids to a reply string, stopping at the first EOS and skipping PAD and SOS."""
    words = []
    for i in ids:
        if i == EOS_token:
            break
        if i not in (PAD_token, SOS_token):
            words.append(voc.index2word[i])
    return " ".join(words)
