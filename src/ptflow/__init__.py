"""ptflow: train, evaluate, serve and tune PyTorch classifiers from the command line or Python.

The stable Python API (see api.py and the README):

    ptflow.train(dataset=..., model=..., n_epochs=..., **options) -> TrainResult
    ptflow.load(path, device="cpu", trust_code=False) -> Model
    ptflow.Model, ptflow.TrainResult, ptflow.TrainConfig, ptflow.PtflowError, ptflow.UsageError

Importing the package is cheap on purpose: the API and torch are imported on first use, so
`ptflow --help` answers without loading them.
"""

__version__ = "0.1.0"

__all__ = ["train", "load", "Model", "TrainResult", "TrainConfig", "PtflowError", "UsageError", "__version__"]

_HOMES = {"train": "ptflow.api", "load": "ptflow.api", "Model": "ptflow.api", "TrainResult": "ptflow.api",
          "TrainConfig": "ptflow.config", "PtflowError": "ptflow.errors", "UsageError": "ptflow.errors"}


def __getattr__(name: str):
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'ptflow' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
