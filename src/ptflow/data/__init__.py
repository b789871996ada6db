"""The data layer: where examples come from and how they become model inputs.

Dataset formats (`sources.py`, `idx.py`), train/validation/test splits (`splits.py`), images read
from files (`imaging.py`), and augmentation on the device (`augment.py`). Knows nothing of models,
training or serving.
"""
