"""Where training writes its checkpoints, and how every tool finds one (make mar, chat, soak, benchmarks).

train.main writes runs/<name>/{iteration}_checkpoint.tar every --save-every iterations and
best_checkpoint.tar, the one to serve: the lowest held-out loss so far where the held-out set is large
enough to measure progress (--best-min-heldout), else the latest (train.main.serving_choice).
"""
from __future__ import annotations

from pathlib import Path

BEST = "best_checkpoint.tar"
PERIODIC_GLOB = "[0-9]*_checkpoint.tar"


def periodic_name(iteration: int) -> str:
    return f"{iteration}_checkpoint.tar"


def default_checkpoint(runs: Path) -> Path | None:
    """The checkpoint a tool takes when none is named: the newest best_checkpoint.tar under `runs`, else the
    newest {iteration}_checkpoint.tar; None when there is neither."""
    for pattern in (BEST, PERIODIC_GLOB):
        found = sorted(Path(runs).glob(f"**/{pattern}"), key=lambda p: p.stat().st_mtime)
        if found:
            return found[-1]
    return None


DEFAULT_CHOICE = "the newest runs/**/best_checkpoint.tar, else the newest {iteration}_checkpoint.tar"


def add_checkpoint_flags(parser, what: str = "the checkpoint to use", default: str = DEFAULT_CHOICE,
                         runs: bool = True) -> None:
    """--checkpoint (and --runs, where to look when none is named): every tool's one spelling of them."""
    parser.add_argument("--checkpoint", type=Path, default=None, help=f"{what} (default: {default})")
    if runs:
        parser.add_argument("--runs", type=Path, default=Path("runs"), help="where to look for checkpoints")


def add_data_path_flag(parser) -> None:
    """--data-path for a tool that reads a checkpoint's own corpus: where it is now, if it moved."""
    parser.add_argument("--data-path", default=None,
                        help="where the checkpoint's training corpus is now (default: where its run read it)")


def parse_with_checkpoint(parser, argv=None):
    """parser.parse_args with args.checkpoint resolved by chosen_checkpoint, or argparse's usage error (exit 2)."""
    args = parser.parse_args(argv)
    try:
        args.checkpoint = chosen_checkpoint(args)
    except FileNotFoundError as e:
        parser.error(str(e))
    return args


def chosen_checkpoint(args) -> Path:
    """args.checkpoint, else default_checkpoint(args.runs); FileNotFoundError saying what to do when neither."""
    found = args.checkpoint or default_checkpoint(args.runs)
    if found is None:
        raise FileNotFoundError(f"no checkpoint under {args.runs}/: train one (make train-demo), or name one: "
                                "make ... CHECKPOINT=path, --checkpoint path")
    return found
