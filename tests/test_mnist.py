"""Real MNIST (where $PTFLOW_DATA_DIR, the cache or ../shared/data/mnist has it): one epoch of the article's MLP."""

import json

import pytest
from helpers import HAVE_MNIST, MNIST_DIR

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not HAVE_MNIST, reason="real MNIST not present")]


def test_one_epoch_of_the_article_mlp_reaches_95_percent(cli, tmp_path):
    code, out, _ = cli("train", "--dataset", "mnist", "--data_dir", MNIST_DIR, "--n_epochs", "1",
                       "--runs_dir", tmp_path, "--run_name", "mnist", "--verbose", "0")
    assert code == 0
    status = json.loads((tmp_path / "mnist" / "run.json").read_text())
    assert status["test_acc"] >= 0.95
    assert f"Test accuracy: {status['test_acc']:.4f}" in out
