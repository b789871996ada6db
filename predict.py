"""The article's predict step, kept: `python predict.py --model_fn model.pth` prints test accuracy.

A thin wrapper over `ptflow predict` (with INPUT files it predicts them instead).
"""

import sys

from ptflow.cli.commands import main

if __name__ == "__main__":
    raise SystemExit(main(["predict", *sys.argv[1:]]))
