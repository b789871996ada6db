"""Optional trackers (`--log tensorboard,mlflow`): a run's metrics copied to TensorBoard or MLflow.

Each tracker is a train callback, called as tracker(state, run_dir) after every epoch, and closed
with the run's final status and metrics. The run folder's own files are always written; trackers
only copy. Both are optional extras, imported only when asked for, and nothing leaves the machine
unless --mlflow_uri names a server: by default MLflow writes a SQLite store in the runs folder.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import time
from pathlib import Path

import numpy as np

from ptflow.console import warn
from ptflow.errors import PtflowError, first_line
from ptflow.files import database_file, refuse_target
from ptflow.training import scoring
from ptflow.training.distributed import is_main_process

EPOCH_METRICS = ("train_loss", "valid_loss", "valid_acc", "lr")  # the per-epoch keys of metrics.jsonl
MLFLOW_EXPERIMENT = "ptflow"
MLFLOW_STATUS = {"finished": "FINISHED", "failed": "FAILED", "interrupted": "KILLED", "pruned": "KILLED"}


def require(names: list[str]) -> None:
    """A one-line error, before anything trains, when a tracker's extra is not installed."""
    for name in names:
        if importlib.util.find_spec(name) is None:  # the extra and its module share the name
            raise PtflowError(f"--log {name} needs the {name} extra: pip install 'ptflow[{name}]'")


def start(config, splits) -> list:
    """The trackers --log asks for (none by default); they connect at the first epoch's end."""
    if not config.log or not is_main_process():
        return []
    require(config.log)
    images = splits.x_train[:64].copy() if splits.is_image else None  # a copy: a view would pin x_train
    trackers = {"tensorboard": TensorBoardTracker, "mlflow": MlflowTracker}
    return [trackers[name](config, images) for name in config.log]


def final_metrics() -> list[str]:
    """The run keys of the metrics declared `tracked` (scoring.py), sent when a run ends."""
    return [m.run_key for m in scoring.declared(tracked=True)]


def close(trackers: list, status: str, metrics: dict | None = None) -> None:
    """End every tracker's run; a tracker that fails to close must not hide why the run ended."""
    for tracker in trackers:
        try:
            tracker.close(status, metrics or {})
        except Exception as exc:  # the run folder already holds the truth; say so and go on
            warn(f"{type(tracker).__name__}: could not close: {first_line(exc)}")


class TensorBoardTracker:
    """Scalars per epoch, the config as text and a grid of training samples, in RUN/tensorboard/.

    `tensorboard --logdir runs` then shows every run side by side.
    """

    def __init__(self, config, images: np.ndarray | None):
        self.config = config
        self.images = images  # |images| = (N, C, H, W) uint8, or None for tabular data
        self.writer = None

    def __call__(self, state, run_dir: Path) -> None:
        if self.writer is None:
            self.writer = self._open(run_dir)
        record = state.history[-1]
        for key in EPOCH_METRICS:
            self.writer.add_scalar(key, record[key], record["epoch"])
        self.writer.flush()  # a killed run keeps every epoch it finished

    def _open(self, run_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        writer.add_text("config", "    " + json.dumps(self.config.to_dict(), indent=2).replace("\n", "\n    "))
        if self.images is not None:
            writer.add_image("samples", image_grid(self.images), 0, dataformats="CHW")
        return writer

    def close(self, status: str, metrics: dict) -> None:
        if self.writer is None:
            return
        for key in final_metrics():
            if metrics.get(key) is not None:
                self.writer.add_scalar(f"final/{key}", metrics[key], metrics.get("epochs_run", 0))
        self.writer.add_text("status", status)
        self.writer.close()


def image_grid(images: np.ndarray, columns: int = 8) -> np.ndarray:
    """(N, C, H, W) -> one (C, rows * H, columns * W) image, row by row."""
    n, c, h, w = images.shape
    rows = -(-n // columns)
    grid = np.zeros((c, rows * h, columns * w), dtype=images.dtype)
    for i, image in enumerate(images):
        row, column = divmod(i, columns)
        grid[:, row * h:(row + 1) * h, column * w:(column + 1) * w] = image
    return grid


def mlflow_uri(config) -> str:
    """--mlflow_uri, or by default a SQLite store in the runs folder."""
    return config.mlflow_uri or f"sqlite:///{Path(config.runs_dir).resolve() / 'mlflow.db'}"


class MlflowTracker:
    """One MLflow run per training run: the config as params, metrics per epoch, the model file."""

    def __init__(self, config, images=None):
        self.config = config
        self.uri = mlflow_uri(config)
        self.client = None
        self.run_id = None
        self.run_dir = None

    def __call__(self, state, run_dir: Path) -> None:
        from mlflow.entities import Metric

        if self.run_id is None:
            self._start(run_dir)
        record, now = state.history[-1], int(time.time() * 1000)
        metrics = [Metric(key, float(record[key]), now, record["epoch"]) for key in EPOCH_METRICS]
        self._call("log metrics", self.client.log_batch, self.run_id, metrics=metrics)

    def _start(self, run_dir: Path) -> None:
        from mlflow import MlflowClient
        from mlflow.entities import Param

        logging.getLogger("mlflow").setLevel(logging.WARNING)  # its INFO lines would interleave with ours
        if database_file(self.uri):
            refuse_target(database_file(self.uri))  # SQLite would write into a FIFO or a device as it found it
        self.client, self.run_dir = MlflowClient(tracking_uri=self.uri), run_dir
        experiment = self._call("open the experiment", self._experiment_id)
        tags = {"ptflow.run_dir": str(run_dir.resolve()), "ptflow.dataset": self.config.dataset,
                "ptflow.model": self.config.model}
        run = self._call("start a run", self.client.create_run, experiment, run_name=run_dir.name, tags=tags)
        self.run_id = run.info.run_id
        params = [Param(key, _param(value)) for key, value in self.config.to_dict().items()]
        self._call("log params", self.client.log_batch, self.run_id, params=params)

    def _experiment_id(self) -> str:
        experiment = self.client.get_experiment_by_name(MLFLOW_EXPERIMENT)
        if experiment is not None:
            return experiment.experiment_id
        # A local store keeps its artifacts beside it, not in ./mlruns of whatever folder we run from.
        location = None
        if self.config.mlflow_uri is None:
            location = (Path(self.config.runs_dir).resolve() / "mlflow-artifacts").as_uri()
        try:
            return self.client.create_experiment(MLFLOW_EXPERIMENT, artifact_location=location)
        except Exception:
            experiment = self.client.get_experiment_by_name(MLFLOW_EXPERIMENT)
            if experiment is None:
                raise
            return experiment.experiment_id  # created meanwhile by a parallel sweep worker

    def close(self, status: str, metrics: dict) -> None:
        from mlflow.entities import Metric

        if self.run_id is None:
            return
        now, step = int(time.time() * 1000), metrics.get("epochs_run", 0)
        final = [Metric(f"final_{key}", float(metrics[key]), now, step)
                 for key in final_metrics() if metrics.get(key) is not None]
        self._call("log final metrics", self.client.log_batch, self.run_id, metrics=final)
        model = self.run_dir / "model.safetensors"
        if status == "finished" and model.is_file():
            self._call("upload the model", self.client.log_artifact, self.run_id, str(model))
        self._call("end the run", self.client.set_terminated, self.run_id, MLFLOW_STATUS.get(status, "FAILED"))

    def _call(self, what: str, function, *args, **kwargs):
        """MLflow's many exception types, as one line naming the store."""
        try:
            return function(*args, **kwargs)
        except Exception as exc:
            raise PtflowError(f"MLflow at {redact_url(self.uri)}: cannot {what}: {first_line(exc)}") from None


def _param(value) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def redact_url(uri: str) -> str:
    """A URI without its password, fit for an error message."""
    scheme, sep, rest = uri.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not sep or not at:
        return uri
    return f"{scheme}://{credentials.partition(':')[0]}:***@{host}"

