"""Fixed values the layers share: what the train options may be, and a few settings no flag sets.

Here, below every layer, so that the models and training layers read them without importing
`TrainConfig` (config.py), which sits above the model and data registries it is made from.
Pure standard library.
"""

from __future__ import annotations

import re

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("none", "cosine", "onecycle")
PRECISIONS = ("fp32", "bf16", "fp16")  # --precision (training/precision.py)
NORMALIZATIONS = ("none", "standard")
TRACKERS = ("tensorboard", "mlflow")
CLASS_WEIGHTS = ("none", "balanced")  # --class_weights (training/imbalance.py)
SAMPLERS = ("random", "balanced")  # --sampler; random: a shuffled epoch, each example once

DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d{1,4})?")  # what --device accepts
MAX_GPU_ID = 9999  # --gpu_id, as cuda:N above
MAX_EPOCHS = 1_000_000  # larger values are typos (a run of a million epochs is already years)
MAX_DEPTH = 1_000  # entries of --hidden_sizes and --channels, and --n_layers
MAX_SEED = 2 ** 63 - 1  # torch and numpy both take seeds up to here
MAX_THREADS = 1024  # --num_threads: more than any one machine's cores; larger values are typos

# Examples per forward pass when evaluating and predicting. On CPU, 1024 rows of the article's MLP
# keep each layer's activations (2.5 MB) in the L2 cache: ~120k images/s here, against ~70k/s
# at 8192 rows, whose activations spill to memory.
EVAL_BATCH_SIZE = 1024

# Seconds one process of a multi-process job waits for the others in a collective before giving
# up with an error: a hung (not dead) peer must not hang the job. A dead peer is noticed at once
# (its sockets close). It must cover the longest stretch one process works alone while the others
# wait: the main process writing a checkpoint or the final model and plots.
DIST_TIMEOUT = 300
