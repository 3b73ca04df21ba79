"""The PyTorch Chatbot Tutorial's own checkpoints: read, served, chatted with and resumed.

The reference is the tutorial's published code, written out below (its Voc, EncoderRNN, Attn,
LuongAttnDecoderRNN, GreedySearchDecoder and evaluate), not the project's modules: checkpoints
are built and saved exactly as its trainIters does, and the project's float32 replies must be the
tutorial decoder's words, read up to the first EOS.
"""
from __future__ import annotations

import re
import subprocess
import sys
import unicodedata
import zipfile
from pathlib import Path

import pytest
import requests
import torch
import torch.nn.functional as F
from torch import nn

from harness.launcher import REPO, build_mar, start_torchserve
from model import CheckpointError, load_chatbot
from model.checkpoint import TUTORIAL_FORMAT

PAD_token, SOS_token, EOS_token = 0, 1, 2
MAX_LENGTH = 10
SENTENCES = ["hello there .", "how are you ?", "i am fine thank you .", "what is your name ?", "my name is bob .",
             "where do you live ?", "i live in a small house .", "do you like music ?", "yes i like it very much .",
             "good night !", "see you tomorrow ."]


# ---------------------------------------------------------------- the tutorial's code


class TutorialVoc:
    def __init__(self, name):
        self.name = name
        self.trimmed = False
        self.word2index = {}
        self.word2count = {}
        self.index2word = {PAD_token: "PAD", SOS_token: "SOS", EOS_token: "EOS"}
        self.num_words = 3

    def addSentence(self, sentence):  # noqa: N802 (the tutorial's names)
        for word in sentence.split(" "):
            self.addWord(word)

    def addWord(self, word):  # noqa: N802
        if word not in self.word2index:
            self.word2index[word] = self.num_words
            self.word2count[word] = 1
            self.index2word[self.num_words] = word
            self.num_words += 1
        else:
            self.word2count[word] += 1


def unicodeToAscii(s):  # noqa: N802
    return "".join(c for c in unicodedata.normalize("NFD", s) if unicodedata.category(c) != "Mn")


def normalizeString(s):  # noqa: N802
    s = unicodeToAscii(s.lower().strip())
    s = re.sub(r"([.!?])", r" \1", s)
    s = re.sub(r"[^a-zA-Z.!?]+", r" ", s)
    s = re.sub(r"\s+", r" ", s).strip()
    return s


def indexesFromSentence(voc, sentence):  # noqa: N802
    return [voc.word2index[word] for word in sentence.split(" ")] + [EOS_token]


class EncoderRNN(nn.Module):
    def __init__(self, hidden_size, embedding, n_layers=1, dropout=0):
        super().__init__()
        self.n_layers = n_layers
        self.hidden_size = hidden_size
        self.embedding = embedding
        self.gru = nn.GRU(hidden_size, hidden_size, n_layers, dropout=(0 if n_layers == 1 else dropout),
                          bidirectional=True)

    def forward(self, input_seq, input_lengths, hidden=None):
        embedded = self.embedding(input_seq)
        packed = nn.utils.rnn.pack_padded_sequence(embedded, input_lengths)
        outputs, hidden = self.gru(packed, hidden)
        outputs, _ = nn.utils.rnn.pad_packed_sequence(outputs)
        outputs = outputs[:, :, :self.hidden_size] + outputs[:, :, self.hidden_size:]
        return outputs, hidden


class Attn(nn.Module):
    def __init__(self, method, hidden_size):
        super().__init__()
        self.method = method
        self.hidden_size = hidden_size
        if self.method == "general":
            self.attn = nn.Linear(self.hidden_size, hidden_size)
        elif self.method == "concat":
            self.attn = nn.Linear(self.hidden_size * 2, hidden_size)
            self.v = nn.Parameter(torch.FloatTensor(hidden_size).uniform_(-1, 1))

    def dot_score(self, hidden, encoder_output):
        return torch.sum(hidden * encoder_output, dim=2)

    def general_score(self, hidden, encoder_output):
        return torch.sum(hidden * self.attn(encoder_output), dim=2)

    def concat_score(self, hidden, encoder_output):
        energy = self.attn(torch.cat((hidden.expand(encoder_output.size(0), -1, -1), encoder_output), 2)).tanh()
        return torch.sum(self.v * energy, dim=2)

    def forward(self, hidden, encoder_outputs):
        score = {"general": self.general_score, "concat": self.concat_score, "dot": self.dot_score}[self.method]
        return F.softmax(score(hidden, encoder_outputs).t(), dim=1).unsqueeze(1)


class LuongAttnDecoderRNN(nn.Module):
    def __init__(self, attn_model, embedding, hidden_size, output_size, n_layers=1, dropout=0.1):
        super().__init__()
        self.attn_model = attn_model
        self.hidden_size = hidden_size
        self.output_size = output_size
        self.n_layers = n_layers
        self.dropout = dropout
        self.embedding = embedding
        self.embedding_dropout = nn.Dropout(dropout)
        self.gru = nn.GRU(hidden_size, hidden_size, n_layers, dropout=(0 if n_layers == 1 else dropout))
        self.concat = nn.Linear(hidden_size * 2, hidden_size)
        self.out = nn.Linear(hidden_size, output_size)
        self.attn = Attn(attn_model, hidden_size)

    def forward(self, input_step, last_hidden, encoder_outputs):
        embedded = self.embedding_dropout(self.embedding(input_step))
        rnn_output, hidden = self.gru(embedded, last_hidden)
        attn_weights = self.attn(rnn_output, encoder_outputs)
        context = attn_weights.bmm(encoder_outputs.transpose(0, 1))
        concat_input = torch.cat((rnn_output.squeeze(0), context.squeeze(1)), 1)
        output = self.out(torch.tanh(self.concat(concat_input)))
        return F.softmax(output, dim=1), hidden


class GreedySearchDecoder(nn.Module):
    def __init__(self, encoder, decoder):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def forward(self, input_seq, input_length, max_length):
        encoder_outputs, encoder_hidden = self.encoder(input_seq, input_length)
        decoder_hidden = encoder_hidden[:self.decoder.n_layers]
        decoder_input = torch.ones(1, 1, dtype=torch.long) * SOS_token
        all_tokens = torch.zeros([0], dtype=torch.long)
        for _ in range(max_length):
            decoder_output, decoder_hidden = self.decoder(decoder_input, decoder_hidden, encoder_outputs)
            _, decoder_input = torch.max(decoder_output, dim=1)
            all_tokens = torch.cat((all_tokens, decoder_input), dim=0)
            decoder_input = torch.unsqueeze(decoder_input, 0)
        return all_tokens


class TextOnlyDecoder(nn.Module):
    """The tutorial's decoder with the two rules every project reply follows (model/constraints.py): PAD and SOS
    are never chosen, and EOS not as the first token (min_length 1: never an empty reply)."""

    def __init__(self, decoder):
        super().__init__()
        self.decoder, self.n_layers, self.step = decoder, decoder.n_layers, 0

    def forward(self, *args):
        output, hidden = self.decoder(*args)
        output[:, [PAD_token, SOS_token] + ([EOS_token] if self.step == 0 else [])] = 0.0
        self.step += 1
        return output, hidden


class TextOnlyGreedySearchDecoder(GreedySearchDecoder):
    """The tutorial's searcher, unchanged, over TextOnlyDecoder."""

    def __init__(self, encoder, decoder):
        super().__init__(encoder, TextOnlyDecoder(decoder))

    def forward(self, input_seq, input_length, max_length):
        self.decoder.step = 0
        return super().forward(input_seq, input_length, max_length)


@torch.no_grad()
def evaluate(searcher, voc, sentence, max_length=MAX_LENGTH):
    indexes_batch = [indexesFromSentence(voc, sentence)]
    lengths = torch.tensor([len(indexes) for indexes in indexes_batch])
    input_batch = torch.LongTensor(indexes_batch).transpose(0, 1)
    tokens = searcher(input_batch, lengths, max_length)
    return [voc.index2word[token.item()] for token in tokens]


def tutorial_words(searcher, voc, text: str) -> list[str]:
    """evaluate's words up to the first EOS, as the tutorial's searcher chose them."""
    words = evaluate(searcher, voc, normalizeString(text))
    return words[: words.index("EOS")] if "EOS" in words else words


def tutorial_reply(searcher, voc, text: str) -> str:
    """evaluateInput's words, read up to the first EOS; PAD dropped as the tutorial does, and SOS (which the
    tutorial would print as the word 'SOS', the project drops: README, "Tutorial checkpoints")."""
    words = evaluate(searcher, voc, normalizeString(text))
    words = words[: words.index("EOS")] if "EOS" in words else words
    return " ".join(w for w in words if w not in ("PAD", "SOS"))


# ---------------------------------------------------------------- tutorial checkpoints


def train_like_the_tutorial(attn_model: str, hidden: int = 16, layers: int = 2, seed: int = 0):
    """(voc, encoder, decoder, optimisers) built as the tutorial does, after one Adam step on its loss."""
    torch.manual_seed(seed)
    voc = TutorialVoc("cornell movie-dialogs corpus")
    for sentence in SENTENCES:
        voc.addSentence(sentence)
    embedding = nn.Embedding(voc.num_words, hidden)
    encoder = EncoderRNN(hidden, embedding, layers, 0.1)
    decoder = LuongAttnDecoderRNN(attn_model, embedding, hidden, voc.num_words, layers, 0.1)
    with torch.no_grad():  # larger weights than the default init: replies that differ from input to input
        for p in [*encoder.parameters(), *decoder.parameters()]:
            p.mul_(3.0)
    encoder_optimizer = torch.optim.Adam(encoder.parameters(), lr=0.0001)
    decoder_optimizer = torch.optim.Adam(decoder.parameters(), lr=0.0001 * 5.0)
    batch = torch.LongTensor([indexesFromSentence(voc, "how are you ?")]).t()
    outputs, hidden_state = encoder(batch, torch.tensor([batch.size(0)]))
    probs, _ = decoder(torch.LongTensor([[SOS_token]]), hidden_state[:layers], outputs)
    (-torch.log(probs[0, voc.word2index["fine"]])).backward()
    encoder_optimizer.step()
    decoder_optimizer.step()
    encoder.eval()
    decoder.eval()
    return voc, encoder, decoder, (encoder_optimizer, decoder_optimizer)


def save_like_the_tutorial(path: Path, voc, encoder, decoder, optimizers, iteration: int = 4000) -> Path:
    torch.save({"iteration": iteration, "en": encoder.state_dict(), "de": decoder.state_dict(),
                "en_opt": optimizers[0].state_dict(), "de_opt": optimizers[1].state_dict(), "loss": 2.5,
                "voc_dict": voc.__dict__, "embedding": encoder.embedding.state_dict()}, path)
    return path


@pytest.fixture(scope="module", params=["dot", "general", "concat"])
def tutorial(request, tmp_path_factory):
    """(attention model, checkpoint path, tutorial searcher, tutorial voc)."""
    voc, encoder, decoder, optimizers = train_like_the_tutorial(request.param)
    path = save_like_the_tutorial(tmp_path_factory.mktemp(request.param) / "4000_checkpoint.tar", voc, encoder,
                                  decoder, optimizers)
    return request.param, path, GreedySearchDecoder(encoder, decoder), voc


KNOWN_TEXTS = [" ".join(s.split()[i:j]) for s in SENTENCES for i in range(3) for j in range(i + 1, len(s.split()))]


def test_a_converted_tutorial_checkpoint_replies_as_the_tutorials_greedy_decoder(tutorial):
    attn_model, path, searcher, voc = tutorial
    bot = load_chatbot(path)  # float32
    ckpt = bot.checkpoint
    assert ckpt["converted_from"] == TUTORIAL_FORMAT
    assert (ckpt["config"]["attn_model"], ckpt["config"]["hidden_size"], ckpt["config"]["encoder_n_layers"],
            ckpt["config"]["decoder_n_layers"]) == (attn_model, 16, 2, 2)
    texts = sorted(set(KNOWN_TEXTS))
    # Wherever the tutorial's reply is text (no PAD or SOS before EOS, not empty), the default options
    # (greedy, min_length 1) reply with exactly its words
    words = {t: tutorial_words(searcher, voc, t) for t in texts}
    textual = [t for t in texts if words[t] and not {"PAD", "SOS"} & set(words[t])]
    assert len(textual) >= len(texts) // 2, "too few comparable replies to prove parity"
    assert [r.text for r in bot.reply_batch(textual)] == [" ".join(words[t]) for t in textual]
    # Everywhere: the tutorial's searcher with the two text rules added
    ruled = TextOnlyGreedySearchDecoder(searcher.encoder, searcher.decoder)
    expected = [tutorial_reply(ruled, voc, t) for t in texts]
    assert [r.text for r in bot.reply_batch(texts)] == expected
    assert [bot.reply(t).text for t in texts] == expected
    assert all(expected) and len(set(expected)) > 3, "a model that says one thing proves nothing"


def test_an_unknown_word_follows_our_policy_where_the_tutorial_raised(tutorial):
    _, path, searcher, voc = tutorial
    with pytest.raises(KeyError):
        evaluate(searcher, voc, normalizeString("how are you zorblax ?"))
    reply = load_chatbot(path).reply("how are you zorblax ?")
    assert reply.unknown_words == ["zorblax"] and reply.text == tutorial_reply(searcher, voc, "how are you ?")


def test_the_tutorials_word_order_and_counts_are_kept(tutorial):
    _, path, _, voc = tutorial
    ckpt = load_chatbot(path).checkpoint
    assert ckpt["voc"]["words"] == [voc.index2word[i] for i in range(3, voc.num_words)]
    assert ckpt["voc"]["counts"] == [voc.word2count[w] for w in ckpt["voc"]["words"]]


def tutorial_file(tmp_path: Path, change) -> Path:
    voc, encoder, decoder, optimizers = train_like_the_tutorial("dot", hidden=8, layers=1)
    path = save_like_the_tutorial(tmp_path / "bad.tar", voc, encoder, decoder, optimizers)
    ckpt = torch.load(path, weights_only=True)
    change(ckpt)
    torch.save(ckpt, path)
    return path


@pytest.mark.parametrize("change, message", [
    (lambda c: c["voc_dict"]["index2word"].update({c["voc_dict"]["num_words"]: "extra"}) or
     c["voc_dict"].update(num_words=c["voc_dict"]["num_words"] + 1), "vocabulary/weights mismatch"),
    (lambda c: c["de"].update({"out.weight": torch.zeros(c["de"]["out.weight"].shape[0], 12)}),
     "the decoder's hidden size 12 (out.weight) is not the encoder's 8"),
    (lambda c: c["de"].update({"attn.attn.weight": torch.zeros(8, 5)}), "neither 'general'"),
    (lambda c: c.pop("en") and c.update(encoder={}), "neither a seq2seq-chatbot/1 checkpoint nor"),
    (lambda c: c.update(format="seq2seq-chatbot/9"), "unknown checkpoint format 'seq2seq-chatbot/9'"),
])
def test_a_file_in_neither_format_or_with_shapes_that_disagree_gets_one_line_naming_it(tmp_path, change, message):
    path = tutorial_file(tmp_path, change)
    with pytest.raises(CheckpointError) as error:
        load_chatbot(path)
    assert message in str(error.value) and "\n" not in str(error.value)


def run(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=300, **kwargs)


def test_the_chat_cli_talks_to_a_tutorial_checkpoint(tutorial):
    _, path, searcher, voc = tutorial
    result = run("-m", "tools.chat", "--checkpoint", str(path), "--text", "how are you ?")
    assert result.returncode == 0, result.stderr
    assert result.stdout == tutorial_reply(searcher, voc, "how are you ?") + "\n"


@pytest.mark.server
def test_make_mar_converts_a_tutorial_checkpoint_and_the_server_answers_curl_T(tutorial, tmp_path):
    attn_model, path, searcher, voc = tutorial
    if attn_model != "general":
        pytest.skip("one attention model on a real server is enough; all three decode in-process above")
    mar = build_mar(path, tmp_path / "store")
    with zipfile.ZipFile(mar) as archive:
        archive.extract("4000_checkpoint.tar", tmp_path / "unpacked")
    packed = torch.load(tmp_path / "unpacked" / "4000_checkpoint.tar", weights_only=True)
    assert packed["format"] == "seq2seq-chatbot/1" and "en" not in packed and "encoder_optimizer" not in packed
    served = load_chatbot(path, quantize="int8")  # the model-config's weights
    with start_torchserve(tmp_path / "ts", mar.parent) as server:
        reply = requests.post(server.predictions_url, data=(REPO / "hello.txt").read_bytes(), timeout=30)
    assert reply.status_code == 200 and reply.text == served.reply((REPO / "hello.txt").read_text()).text + "\n"


def test_resume_continues_a_tutorial_run_with_its_optimiser_states(tmp_path):
    voc, encoder, decoder, optimizers = train_like_the_tutorial("dot", hidden=8, layers=1)
    path = save_like_the_tutorial(tmp_path / "4000_checkpoint.tar", voc, encoder, decoder, optimizers, iteration=20)
    corpus = tmp_path / "pairs.tsv"
    corpus.write_text("".join(f"{a}\t{b}\n" for a, b in zip(SENTENCES, SENTENCES[1:] + SENTENCES[:1])))
    result = run("-m", "train.main", "--resume", str(path), "--corpus", "tsv", "--data-path", str(corpus),
                 "--min-count", "1", "--iterations", "23", "--batch-size", "4", "--save-every", "3",
                 "--device", "cpu", "--save-dir", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    ckpt = torch.load(tmp_path / "run" / "23_checkpoint.tar", weights_only=True)
    assert ckpt["iteration"] == 23 and ckpt["voc"]["words"] == [voc.index2word[i] for i in range(3, voc.num_words)]
    steps = [int(s["step"]) for s in ckpt["encoder_optimizer"]["state"].values()]
    assert steps and all(s == 1 + 3 for s in steps)  # the tutorial's one Adam step, then three more
    assert ckpt["decoder_optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.0005)  # the tutorial's x5
    assert (tmp_path / "run" / "best_checkpoint.tar").is_file()
