"""Which process is the main one.

Several processes may train one model (torchrun sets RANK/WORLD_SIZE); only the main one prints
and writes files. Every print and file write in ptflow goes through `is_main_process()`.
"""

import os


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return rank() == 0
