"""The data layer: where examples come from and how they become model inputs.

Datasets (`sources.py`, `idx.py`) and file formats (`formats/`, one module each, named in
`registry.py`), train/validation/test splits (`splits.py`), images read from files
(`imaging.py`), and augmentation on the device (`augment.py`). Knows nothing of models,
training or serving.
"""
