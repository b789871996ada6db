"""The kill -9 test at length: many kills at random moments and inside saves, each followed by a resume.

    python bench/kill_soak.py --kills 200 [--seed 0] [--epochs 6]

The same loop as tests/test_faults.py (tests/helpers/kill_loop.py), which CI runs with 20 kills. Prints
faults injected, survived and data lost (what went missing or differs from an uninterrupted run,
bit for bit: must be 0), by kind of fault, and the time it took.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the loop lives with the tests

from helpers.kill_loop import kill_and_resume  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as root:
        tally = kill_and_resume(Path(root), args.kills, args.epochs, args.seed)
    print(f"faults injected {tally.injected}, survived {tally.survived}, data lost {len(tally.lost)} "
          f"({tally.runs} runs, {time.monotonic() - started:.0f} s)")
    print("by kind: " + ", ".join(f"{k} {v}" for k, v in sorted(tally.by_kind.items())))
    for problem in tally.lost:
        print("LOST:", problem)
    sys.exit(1 if tally.lost else 0)


if __name__ == "__main__":
    main()
