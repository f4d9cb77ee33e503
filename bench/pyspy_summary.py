"""Summarise py-spy raw (folded) stack files: self and inclusive share of samples per frame.

    .venv/bin/python -m bench.pyspy_summary DIR/put4k-object-*.txt [--top 30]

Each input line is ``frame;frame;...;frame COUNT`` (py-spy ``record -f raw``). "self" is the
share of samples whose innermost frame is that frame, "inclusive" the share whose stack holds
it anywhere (each frame counted once per stack).
"""

from __future__ import annotations

import argparse
import collections
from collections.abc import Iterable, Sequence
from pathlib import Path

Counts = collections.Counter[str]


def summarise(lines: Iterable[str]) -> tuple[int, Counts, Counts]:
    own: Counts = collections.Counter()
    incl: Counts = collections.Counter()
    total = 0
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for frame in set(frames):
            incl[frame] += n
    return total, own, incl


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--top", type=int, default=30)
    args = ap.parse_args(argv)
    lines = (line for path in args.files for line in path.read_text().splitlines())
    total, own, incl = summarise(lines)
    print(f"samples {total}")
    for title, counter in (("self", own), ("inclusive", incl)):
        print(f"== {title}")
        for frame, n in counter.most_common(args.top):
            print(f"{100 * n / max(1, total):5.1f} {frame}")


if __name__ == "__main__":
    main()
