"""Where training writes its checkpoints, and how every tool finds one (make mar, chat, soak, benchmarks).

train.main writes runs/<name>/{iteration}_checkpoint.tar every --save-every iterations and
best_checkpoint.tar whenever the held-out loss is the lowest so far.
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
