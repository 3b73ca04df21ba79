"""Where a serving process spends its time under load: py-spy samples it, and the samples are summed by function.

bench.serve_bench --profile DIR records each profiled scenario's serving process (the TorchServe worker, the KServe
runtime) through its first measurement at the highest concurrency, and prints the summary:

    python -m bench.serve_bench --scenarios batched greedy kserve --concurrency 16 --rounds 1 --profile logs/profile

Or on its own, of any process: `python -m bench.profile --pid PID --seconds 10`.
Each summary line is a function (file:name) with its share of the samples: `self` where it was the frame running,
`total` where it was anywhere on the stack. Idle threads are left out (py-spy's default), so the shares are of the
time some thread of the process was running Python or native code.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

PY_SPY = "py-spy"  # pip install py-spy (requirements-dev.txt)
FRAME = re.compile(r"^(?P<name>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def py_spy() -> str:
    """The py-spy executable: beside this Python (a venv's bin, not always on PATH), else on PATH."""
    found = shutil.which(PY_SPY, path=str(Path(sys.executable).parent)) or shutil.which(PY_SPY)
    if found is None:
        raise FileNotFoundError("py-spy is not installed: pip install -r requirements-dev.txt")
    return found


def record(pid: int, seconds: float, out: Path) -> subprocess.Popen:
    """Start py-spy sampling `pid` for `seconds` into `out` (collapsed stacks, a line per stack and its count)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([py_spy(), "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "250",
                             "--format", "raw", "--threads", "--nonblocking", "--output", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def function_of(frame: str) -> str:
    """'answer (serving/pipeline.py:120)' -> 'serving/pipeline.py:answer' (the path after site-packages or the repo)."""
    match = FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = re.sub(r"^.*?(site-packages|/work/[^/]+)/", "", match["file"])
    return f"{path}:{match['name']}"


def summarize(raw: Path) -> tuple[Counter, Counter, int]:
    """(self samples, total samples by function, all samples) of a py-spy raw file; thread frames are dropped."""
    own, total, samples = Counter(), Counter(), 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [function_of(f) for f in stack.split(";") if not f.startswith(("thread (", "process "))]
        if not frames:
            continue
        samples += int(count)
        own[frames[-1]] += int(count)
        for name in set(frames):
            total[name] += int(count)
    return own, total, samples


def report(raw: Path, top: int = 15) -> str:
    """The summary's lines: the functions of most self time, then of most total time."""
    own, total, samples = summarize(raw)
    if not samples:
        return f"{raw}: no samples (did the process run Python code while it was sampled?)"
    lines = [f"{raw}: {samples} samples"]
    for title, counts in (("self", own), ("total", total)):
        lines.append(f"  most {title} time:")
        lines += [f"    {count / samples:6.1%}  {name}" for name, count in counts.most_common(top)]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.splitlines()[0])
    p.add_argument("--pid", type=int, required=True, help="the process to sample")
    p.add_argument("--seconds", type=float, default=10.0, help="how long to sample (default: 10)")
    p.add_argument("--out", type=Path, default=Path("logs/profile/profile.txt"), help="the raw samples' file")
    args = p.parse_args(argv)
    if record(args.pid, args.seconds, args.out).wait() != 0:
        print(f"py-spy failed on pid {args.pid} (is it running, and may this user trace it?)", file=sys.stderr)
        return 1
    print(report(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
