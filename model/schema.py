"""What a request may ask and what it gets back: the decoding options and the Reply. Plain Python, no torch.

One definition of the options (OPTIONS) serves the handler's JSON fields, the OpenAI route's extra body
fields, the chat CLI's and the client's flags (`--beam-size` for `beam_size`), the chat page's controls
and the model-config's defaults. The HTTP client and the chat page import this module alone, so they
install and start without torch.

Must run on Python 3.9 (it ships inside the .mar).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any


@dataclass(frozen=True)
class Option:
    """One decoding option: its type, smallest and largest value (None: no bound), and what it does."""

    name: str
    kind: type
    low: float | None
    high: float | None
    help: str
    low_open: bool = False  # low itself is not allowed (temperature > 0)


OPTIONS = {o.name: o for o in (
    Option("max_length", int, 1, None, "longest reply in tokens, EOS included (default: the model's max_length)"),
    Option("beam_size", int, 1, None, "beams per request: 1 is greedy, more is beam search"),
    Option("num_replies", int, 1, None, "replies to return: the n best beams, or n samples (at most beam_size "
                                        "for beams)"),
    Option("temperature", float, 0.0, 100.0, "sampling temperature (setting it turns sampling on)", low_open=True),
    Option("top_k", int, 1, None, "sample from the k likeliest tokens only (turns sampling on)"),
    Option("top_p", float, 0.0, 1.0, "sample from the smallest set of tokens whose probability reaches p "
                                     "(nucleus; turns sampling on)", low_open=True),
    Option("seed", int, 0, 2**63 - 1, "seed of the sampling generators: the same seed gives the same replies"),
    Option("no_repeat_ngram_size", int, 0, None, "never repeat an n-gram of this many tokens in a reply (0: off)"),
    Option("min_length", int, 1, None, "shortest reply in tokens: EOS cannot end it sooner (at most max_length)"),
    Option("presence_penalty", float, -2.0, 2.0, "subtract this from the logit of every token already in the reply "
                                                 "(OpenAI's presence_penalty; 0: off)"),
    Option("frequency_penalty", float, -2.0, 2.0, "subtract this times its count so far from each token's logit "
                                                  "(OpenAI's frequency_penalty; 0: off)"),
)}
PENALTIES = ("presence_penalty", "frequency_penalty")
SAMPLING_OPTIONS = ("temperature", "top_k", "top_p")
LIMITED = ("max_length", "beam_size", "num_replies")  # a server caps these (model-config `limits:`)


class InvalidOption(ValueError):
    """A decoding option a request may not have; `field` names it, `detail` says what is wrong with it."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.detail = message  # what is wrong, without the field's name


@dataclass(frozen=True)
class DecodeOptions:
    """How one request is decoded (None: not set)."""

    max_length: int = 10
    beam_size: int = 1
    num_replies: int = 1
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    no_repeat_ngram_size: int = 0
    min_length: int = 1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0

    @property
    def penalized(self) -> bool:
        """Whether a presence or frequency penalty changes this request's logits."""
        return bool(self.presence_penalty or self.frequency_penalty)

    @property
    def mode(self) -> str:
        """'greedy', 'beam' or 'sample'."""
        if any(getattr(self, name) is not None for name in SAMPLING_OPTIONS):
            return "sample"
        return "beam" if self.beam_size > 1 or self.no_repeat_ngram_size else "greedy"


def check_value(option: Option, value: object, high: float | None = None) -> float | int:
    """`value` if it is of the option's type and within its range (high overrides the option's); else InvalidOption."""
    high = option.high if high is None else high
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if option.kind is int and not (isinstance(value, int) and not isinstance(value, bool)):
        raise InvalidOption(option.name, f"must be an integer in {allowed(option, high)}, not {value!r:.40}")
    if option.kind is float and not is_number:
        raise InvalidOption(option.name, f"must be a number in {allowed(option, high)}, not {value!r:.40}")
    too_low = option.low is not None and (value <= option.low if option.low_open else value < option.low)
    if too_low or (high is not None and value > high) or value != value:  # value != value: NaN
        raise InvalidOption(option.name, f"{value!r:.40} is out of range: allowed {allowed(option, high)}")
    return option.kind(value)


def allowed(option: Option, high: float | None) -> str:
    """'1..10', '(0, 100]', '>= 0' for an error message."""
    if high is None:
        return f">= {option.low}" if not option.low_open else f"> {option.low}"
    return f"({option.low}, {high}]" if option.low_open else f"{option.low}..{high}"


def parse_options(values: dict, defaults: DecodeOptions, limits: dict) -> DecodeOptions:
    """DecodeOptions from a request's fields over `defaults`; InvalidOption for an unknown field or bad value.

    limits: the largest max_length, beam_size and num_replies a request may ask for.
    """
    for name in values:
        if name not in OPTIONS:
            raise InvalidOption(name, f"unknown option; the options are {', '.join(OPTIONS)}")
    checked = {name: check_value(OPTIONS[name], value, limits.get(name)) for name, value in values.items()
               if value is not None or name in SAMPLING_OPTIONS + ("seed",)}
    options = replace(defaults_for_mode(defaults, checked), **checked)
    return check_combination(options, limits)


def defaults_for_mode(defaults: DecodeOptions, checked: dict) -> DecodeOptions:
    """The defaults a request's own choice of mode leaves: one that samples (temperature, top_k or top_p) and names
    no beam_size drops a default beam_size; one that asks for beams and names no sampling option drops the default
    sampling options. An archive that searches beams by default still answers an OpenAI client's temperature."""
    samples = any(checked.get(name) is not None for name in SAMPLING_OPTIONS)
    if samples and "beam_size" not in checked:
        return replace(defaults, beam_size=1)
    if checked.get("beam_size", 1) > 1 and not any(name in checked for name in SAMPLING_OPTIONS):
        return replace(defaults, **{name: None for name in SAMPLING_OPTIONS})
    return defaults


def check_combination(options: DecodeOptions, limits: dict) -> DecodeOptions:
    """The rules between options: beams and sampling do not mix; num_replies within what the mode can give;
    min_length at most max_length."""
    if options.min_length > options.max_length:
        raise InvalidOption("min_length", f"{options.min_length} is more than max_length ({options.max_length})")
    if options.mode == "sample" and options.beam_size > 1:
        raise InvalidOption("beam_size", "beam search and sampling (temperature, top_k, top_p) cannot be combined")
    most = options.beam_size if options.mode != "sample" else limits.get("num_replies", options.num_replies)
    if options.num_replies > most:
        raise InvalidOption("num_replies", f"{options.num_replies} is more than "
                                           f"{'beam_size' if options.mode != 'sample' else 'the limit'} ({most})")
    return options


def server_limits(section: dict) -> dict:
    """{max_length, beam_size, num_replies: the most a request may ask} from a model-config `handler:` section;
    ValueError naming what is missing (the model-config is their one definition)."""
    limits = section.get("limits") or {}
    missing = [name for name in LIMITED if name not in limits]
    if missing:
        raise ValueError(f"the model-config's handler.limits has no {', '.join(missing)}: rebuild the archive with "
                         "handler/model-config.yaml (make mar)")
    return {name: int(limits[name]) for name in LIMITED}


def options_from_config(section: dict, max_length: int) -> tuple[DecodeOptions, dict]:
    """(defaults, limits) from a model-config `handler:` section; max_length defaults to the model's."""
    limits = server_limits(section)
    names = {f.name for f in fields(DecodeOptions)}
    given = {k: v for k, v in section.items() if k in names and v is not None}
    defaults = DecodeOptions(max_length=max_length)
    return parse_options(given, defaults, limits), limits


@dataclass
class Reply:
    """The bot's answer to one input: `text`, or `error` (with its `error_type`) when the input could not be used.

    score: the reply's mean token log-probability; replies: every (text, score) found of the num_replies asked
    for, best first, the first being (text, score); truncated: the input was cut to the model's max_length tokens;
    status: the HTTP status it came with (None in process); token_ids: each reply's token ids (EOS included when
    the reply ended there rather than at max_length), prompt_tokens: the input's (in process only). The
    same type whether the bot runs in this process (model.chatbot) or behind the server (tools.client).
    """

    text: str = ""
    score: float | None = None
    replies: list = field(default_factory=list)
    unknown_words: list = field(default_factory=list)
    truncated: bool = False
    error: str | None = None
    error_type: str | None = None
    num_replies: int = 1
    status: int | None = None
    token_ids: list = field(default_factory=list)
    prompt_tokens: int = 0

    def body(self) -> dict:
        """The JSON API's reply: {"reply", "score", "unknown_words", "truncated"}, and "replies" when several were
        asked for."""
        body = {"reply": self.text, "score": round(self.score, 4), "unknown_words": self.unknown_words,
                "truncated": self.truncated}
        if self.num_replies > 1:
            body["replies"] = [{"reply": t, "score": round(s, 4)} for t, s in self.replies]
        return body

    @classmethod
    def from_body(cls, body: Any, status: int) -> Reply:
        """A Reply from the JSON API's body and status: a reply (200) or an error {"type", "message",
        "unknown_words"}."""
        body = body if isinstance(body, dict) else {"message": str(body)[:200]}
        unknown = list(body.get("unknown_words") or [])
        if status != 200:
            return cls(unknown_words=unknown, error=str(body.get("message", "")),
                       error_type=str(body.get("type", "Error")), status=status)
        replies = [(r["reply"], r["score"]) for r in body.get("replies", [])]
        text, score = body.get("reply", ""), body.get("score", 0.0)
        return cls(text, score, replies or [(text, score)], unknown, bool(body.get("truncated")),
                   num_replies=max(len(replies), 1), status=status)
