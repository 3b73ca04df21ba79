"""The model's tokens: the tutorial's word vocabulary (Voc) or GPT-2-style byte-level BPE, behind one interface.

Both kinds answer the same calls, so the chatbot, training, the handler and the CLIs never branch
on which one a checkpoint holds:

- `encode(text, max_length) -> Encoded`: ids ending in EOS, dropped unknown words, whether cut;
- `decode(ids) -> str`: reply text up to the first EOS;
- `token_ids(sentence)`: a prepared training sentence's ids (no EOS);
- `num_words`, `kind`, `to_dict()` (plain types: the checkpoint's "voc" entry), `example_text()`.

Byte-level BPE (`BpeTokenizer`) is Hugging Face `tokenizers`' BPE model with GPT-2's ByteLevel
pre-tokenizer and decoder: any text is bytes, every byte is a token, so nothing is ever unknown
("I love NLP" -> ['I', 'Ġlove', 'ĠN', 'LP'], Ġ marking the space before a word). PAD, SOS and EOS
are its special tokens 0, 1 and 2, like the word vocabulary's. Its JSON travels as a string in the
checkpoint (torch.load(weights_only=True) reads it); `tokenizers` is imported only for a BPE model,
so word models serve on an image without it.
"""
from __future__ import annotations

from .voc import Encoded, EOS_token, PAD_token, SOS_token, Voc

KINDS = ("word", "bpe")
BPE_SPECIAL_TOKENS = ("<pad>", "<sos>", "<eos>")  # ids PAD_token, SOS_token, EOS_token
DEFAULT_VOCAB_SIZE = 8000  # about the tutorial's Cornell word vocabulary (7,826)
BPE_TRAINING_CACHE = 500_000  # prepared sentences whose ids are kept while training (a Cornell run has ~130k)


def missing_tokenizers() -> ImportError:
    """The error for a BPE model on a Python without the tokenizers package, saying how to get it."""
    return ImportError("this model uses byte-level BPE tokens, which need the `tokenizers` package "
                       "(pip install tokenizers; docker/Dockerfile's runtime image has it)")


def tokenizers_package():
    """The tokenizers package, imported only for a BPE model; an ImportError saying how to get it."""
    try:
        import tokenizers
    except ImportError as e:
        raise missing_tokenizers() from e
    return tokenizers


def new_bpe_tokenizer():
    """An untrained tokenizers.Tokenizer with GPT-2's byte-level scheme and the project's text clean-up."""
    tk = tokenizers_package()
    tokenizer = tk.Tokenizer(tk.models.BPE())
    # NFC, whitespace runs as one space, no space at either end: "hello\n" from curl -T is "hello"
    tokenizer.normalizer = tk.normalizers.Sequence([tk.normalizers.NFC(), tk.normalizers.Replace(tk.Regex(r"\s+"), " "),
                                                    tk.normalizers.Strip()])
    tokenizer.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = tk.decoders.ByteLevel()
    return tokenizer


def byte_values() -> dict[str, int]:
    """GPT-2's ByteLevel alphabet: the character that stands for each byte in a token's string -> the byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {**{chr(b): b for b in printable}, **{chr(256 + n): b for n, b in enumerate(others)}}


class BpeTokenizer:
    """Byte-level BPE tokens with the word vocabulary's interface (see the module docstring)."""

    kind = "bpe"

    def __init__(self, tokenizer_json: str, name: str = "bpe"):
        self.name = name
        self.json = tokenizer_json
        self.tokenizer = tokenizers_package().Tokenizer.from_str(tokenizer_json)
        # Text that spells a special token ("<eos>") is split like any other text, never made a control token
        self.tokenizer.encode_special_tokens = True
        self.num_words = self.tokenizer.get_vocab_size()
        self.cache: dict[str, list[int]] = {}
        specials = [self.tokenizer.token_to_id(t) for t in BPE_SPECIAL_TOKENS]
        if specials != [PAD_token, SOS_token, EOS_token]:
            raise ValueError(f"a BPE tokenizer must have {', '.join(BPE_SPECIAL_TOKENS)} as ids 0, 1, 2; "
                             f"this one has {specials}")

    @classmethod
    def train(cls, texts, vocab_size: int, name: str = "bpe") -> BpeTokenizer:
        """A byte-level BPE of at most `vocab_size` tokens (all 256 bytes and the 3 specials included) learnt
        from `texts` by tokenizers' BpeTrainer."""
        tk = tokenizers_package()
        tokenizer = new_bpe_tokenizer()
        trainer = tk.trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(BPE_SPECIAL_TOKENS),
                                         initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        tokenizer.train_from_iterator(texts, trainer)
        return cls(tokenizer.to_str(), name)

    def token_ids(self, sentence: str) -> list[int]:
        """The ids of a training sentence (no EOS); remembered, since training batches draw pairs many times."""
        ids = self.cache.get(sentence)
        if ids is None:
            ids = self.tokenizer.encode(sentence, add_special_tokens=False).ids
            if len(self.cache) < BPE_TRAINING_CACHE:
                self.cache[sentence] = ids
        return ids

    def encode(self, text: str, max_length: int) -> Encoded:
        """Any text as ids ending in EOS, cut to its first max_length - 1 tokens; never an unknown word."""
        ids = self.tokenizer.encode(text, add_special_tokens=False).ids
        return Encoded(ids[: max_length - 1] + [EOS_token], [], len(ids) > max_length - 1)

    def decode(self, ids: list[int]) -> str:
        """Reply text up to the first EOS (PAD and SOS skipped). Bytes that end mid-character would become
        U+FFFD, which model/constraints.py keeps any search from generating."""
        end = ids.index(EOS_token) if EOS_token in ids else len(ids)
        return self.tokenizer.decode([i for i in ids[:end] if i not in (PAD_token, SOS_token)])

    def token_bytes(self) -> list[bytes | None]:
        """Each token's bytes (None for PAD, SOS and EOS): what model/constraints.py checks UTF-8 with."""
        to_byte = byte_values()
        specials = (PAD_token, SOS_token, EOS_token)
        return [None if i in specials else bytes(to_byte[c] for c in self.tokenizer.id_to_token(i))
                for i in range(self.num_words)]

    def to_dict(self) -> dict:
        """Plain types only: the tokenizer's JSON as a string."""
        return {"kind": self.kind, "name": self.name, "json": self.json}

    def example_text(self) -> str:
        """A text any model can answer (make mar's test reply)."""
        return "Hello!"


def vocabulary_from_dict(d: dict):
    """The checkpoint's "voc" entry as a Voc or BpeTokenizer; a dict without "kind" is a word one."""
    kind = d.get("kind", "word")
    if kind == "bpe":
        return BpeTokenizer(d["json"], d.get("name", "bpe"))
    if kind != "word":
        raise ValueError(f"unknown vocabulary kind {str(kind)[:40]!r}: this version knows {', '.join(KINDS)}")
    return Voc.from_dict(d)
