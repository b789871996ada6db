"""The article's entry point, kept: `python train.py --model_fn model.pth --n_layers 5 ...`.

A thin wrapper over `ptflow train` (install first: pip install -e .).
"""

import sys

from ptflow.cli.commands import main

if __name__ == "__main__":
    raise SystemExit(main(["train", *sys.argv[1:]]))
