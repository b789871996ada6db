"""K-fold cross-validation: the folds themselves (every training example validates exactly once,
classes in proportion, the test split untouched) and `ptflow train --folds` / `sweep --folds`
end to end on the scikit-learn digits."""

import json

import numpy as np
import pytest

from ptflow import stats
from ptflow.data.sources import RawData
from ptflow.data.splits import split


def raw(counts=(53, 31, 17), test=None) -> RawData:
    """Tabular rows whose single feature is the row's id, so each example can be followed."""
    y = np.concatenate([np.full(n, label) for label, n in enumerate(counts)]).astype(np.int64)
    x = np.arange(len(y), dtype=np.float32)[:, None]
    x_test, y_test = test or (None, None)
    return RawData(x, y, [str(i) for i in range(len(counts))], x_test=x_test, y_test=y_test)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_every_training_example_validates_exactly_once_with_stratified_counts(k):
    plain = split("ids", raw(), 0.8, 0.2, seed=4)
    pool = set(plain.x_train[:, 0]) | set(plain.x_val[:, 0])
    validated, sizes = [], []
    for fold in range(1, k + 1):
        s = split("ids", raw(), 0.8, 0.2, seed=4, fold=(fold, k))
        assert np.array_equal(s.x_test, plain.x_test)  # held out before the folds are cut
        train, val = set(s.x_train[:, 0]), set(s.x_val[:, 0])
        assert not train & val and train | val == pool
        validated += list(s.x_val[:, 0])
        sizes.append(np.bincount(s.y_val, minlength=3))
    assert sorted(validated) == sorted(pool)  # each exactly once
    sizes = np.array(sizes)  # |sizes| = (k, classes)
    assert (sizes.max(0) - sizes.min(0) <= 1).all()  # every class spread evenly over the folds
    assert sizes.sum(1).max() - sizes.sum(1).min() <= 1  # and the folds of (nearly) equal size


def test_folds_follow_the_seed_and_a_dataset_test_split_stays_apart():
    test = (np.full((7, 1), -1, np.float32), np.zeros(7, np.int64))
    a = split("ids", raw(test=test), 0.8, 0.2, seed=1, fold=(2, 3))
    b = split("ids", raw(test=test), 0.8, 0.2, seed=1, fold=(2, 3))
    c = split("ids", raw(test=test), 0.8, 0.2, seed=2, fold=(2, 3))
    assert np.array_equal(a.x_val, b.x_val) and not np.array_equal(np.sort(a.x_val[:, 0]), np.sort(c.x_val[:, 0]))
    assert len(a.x_test) == 7 and len(a.x_train) + len(a.x_val) == 101  # every non-test example is in a fold


def test_fold_flags_are_checked(cli):
    for flags, words in ([["--fold", "1"], "--fold needs --folds"], [["--folds", "1"], "--folds must be 0"],
                         [["--folds", "3", "--fold", "4"], "--fold must be in 1..--folds (3)"]):
        code, _, err = cli("train", "--dataset", "digits", *flags)
        assert code == 2 and words in err and len(err.strip().splitlines()) == 1, err


def status(path):
    return json.loads((path / "run.json").read_text())


def test_train_with_folds_end_to_end_on_digits(cli, tmp_path):
    code, out, err = cli("train", "--dataset", "digits", "--folds", "3", "--n_epochs", "2", "--batch_size", "64",
                         "--runs_dir", tmp_path, "--run_name", "cv", "--verbose", "0")
    assert code == 0, err
    folds = [status(tmp_path / f"cv-fold{i}") for i in (1, 2, 3)]
    configs = [json.loads((tmp_path / f"cv-fold{i}" / "config.json").read_text()) for i in (1, 2, 3)]
    assert [(c["folds"], c["fold"]) for c in configs] == [(3, 1), (3, 2), (3, 3)]
    assert all(f["test_acc"] is None for f in folds)  # the fold models never meet the test split
    final = status(tmp_path / "cv")
    cv = final["cv"]
    losses = [f["best_valid_loss"] for f in folds]
    assert cv["valid_loss"] == losses and cv["runs"] == ["cv-fold1", "cv-fold2", "cv-fold3"]
    assert cv["valid_loss_mean"] == pytest.approx(np.mean(losses))
    assert cv["valid_loss_std"] == pytest.approx(np.std(losses, ddof=1))
    assert cv["valid_acc_mean"] == pytest.approx(np.mean([f["valid_acc"] for f in folds]))
    # the final model is trained on the usual split and judged on the test split, with its interval
    assert json.loads((tmp_path / "cv" / "config.json").read_text())["fold"] is None
    n, accuracy = final["test_n"], final["test_acc"]
    assert n == 359 and final["test_acc_ci95"] == list(stats.wilson_interval(round(accuracy * n), n))
    assert "Cross-validation: 3 stratified folds" in out
    mean = next(line.split() for line in out.split("Cross-validation")[1].splitlines() if line.split()[:1] == ["mean"])
    assert float(mean[1]) == pytest.approx(cv["valid_loss_mean"], abs=1e-4)
    line = next(line for line in out.splitlines() if line.startswith("Test accuracy:"))
    assert line.split()[2] == f"{accuracy:.4f}" and stats.format_interval(final["test_acc_ci95"]) in line

    code, out, err = cli("runs", "show", "cv", "--runs_dir", tmp_path)
    assert code == 0 and "cross-validation (3 folds)" in out and "cv-fold2" in out, err


@pytest.mark.slow
def test_sweep_with_folds_ranks_trials_by_their_mean_fold_loss(cli, tmp_path):
    optuna = pytest.importorskip("optuna")
    code, out, err = cli("sweep", "--trials", "2", "--param", "lr=loguniform:1e-3:3e-2", "--folds", "2",
                         "--study", "cv", "--pruner", "none", "--dataset", "digits", "--n_epochs", "1",
                         "--batch_size", "64", "--runs_dir", tmp_path)
    assert code == 0, err
    study = optuna.load_study(study_name="cv", storage=f"sqlite:///{tmp_path}/sweeps.db")
    for trial in study.trials:
        name = f"cv-trial{trial.number:03d}"
        losses = [status(tmp_path / f"{name}-fold{i}")["best_valid_loss"] for i in (1, 2)]
        assert trial.value == pytest.approx(np.mean(losses))  # the objective: the folds' mean
        assert status(tmp_path / name)["cv"]["valid_loss"] == losses
        assert not list(tmp_path.glob(f"{name}*/checkpoint.safetensors"))  # ended trials keep no checkpoint
    assert "mean valid loss (2 folds)" in out and "std" in out
    best = status(tmp_path / f"cv-trial{study.best_trial.number:03d}")
    assert best["test_acc_ci95"] == list(stats.wilson_interval(round(best["test_acc"] * 359), 359))
    assert f"test_acc={best['test_acc']:.4f} (95% CI {stats.format_interval(best['test_acc_ci95'])}" in out
    assert "--folds 2" in out.split("Best configuration:")[1].splitlines()[1]
    assert "lowest mean validation loss of 2 folds" in (tmp_path / "cv.html").read_text()


def test_the_python_api_cross_validates_like_the_command_line(tmp_path):
    import ptflow

    result = ptflow.train(dataset="digits", n_epochs=1, folds=2, batch_size=64, runs_dir=str(tmp_path),
                          run_name="api", verbose=0)
    cv = result.metrics["cv"]
    assert cv["runs"] == ["api-fold1", "api-fold2"] and result.run_dir == tmp_path / "api"
    assert cv["valid_loss"] == [status(tmp_path / f"api-fold{i}")["best_valid_loss"] for i in (1, 2)]
    assert status(tmp_path / "api")["cv"] == cv
