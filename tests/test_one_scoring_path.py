"""One scoring path: a metric declared once (training/scoring.py) is computed by training and by
`ptflow evaluate` with the same function, shown and sent where its declaration says, and tuned by
a sweep when declared tunable; and training's test numbers equal evaluate's."""

import json

import numpy as np
import pytest

from ptflow.training import scoring


def top_probability(y, probs) -> float:
    """The mean confidence: a toy metric that no built-in computes."""
    return float(probs.max(1).mean())


@pytest.fixture
def toy(monkeypatch):
    """A metric added the way a contributor adds one: one declaration, registered."""
    monkeypatch.setattr(scoring, "METRICS", dict(scoring.METRICS))  # undone after the test
    return scoring.register(scoring.Metric("top_prob", "test top prob", top_probability, scoring.bootstrap(),
                                           runs=scoring.ALWAYS, column=True, tracked=True,
                                           goal=scoring.MAXIMIZE))


def train(cli, npz_data, runs_dir, name="toy", *flags):
    code, _, err = cli("train", "--dataset", f"npz:{npz_data}", "--n_epochs", "2", "--batch_size", "32",
                       "--runs_dir", runs_dir, "--run_name", name, "--verbose", "0", *flags)
    assert code == 0, err
    return runs_dir / name, json.loads((runs_dir / name / "run.json").read_text())


def evaluate(cli, run, out):
    code, printed, err = cli("evaluate", "--model_fn", run / "model.safetensors", "--out_dir", out)
    assert code == 0, err
    return json.loads((out / "evaluation.json").read_text()), printed


def test_a_registered_metric_is_scored_shown_sent_and_tunable(cli, npz_data, tmp_path, toy):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, record = train(cli, npz_data, tmp_path, "toy", "--log", "tensorboard")
    saved = np.load(run / "predictions.npz")  # the test predictions training scored (confidences as float32)
    assert record["test_top_prob"] == pytest.approx(float(saved["p_pred"].astype(np.float64).mean()), abs=1e-6)
    low, high = record["test_top_prob_ci95"]
    assert low <= record["test_top_prob"] <= high
    assert 0 < record["valid_top_prob"] <= 1  # tunable: scored on validation too, for sweeps

    report, printed = evaluate(cli, run, tmp_path / "eval")
    assert report["top_prob"] == pytest.approx(record["test_top_prob"], abs=1e-6)
    assert f"test top prob: {report['top_prob']:.4f}  95% CI [" in printed  # its own line, with its method
    assert "(bootstrap, 1,000 resamples)" in next(line for line in printed.splitlines() if "top prob" in line)

    code, table, _ = cli("runs", "--runs_dir", tmp_path)
    assert code == 0 and "test top prob (95% CI)" in table.splitlines()[0]
    code, shown, _ = cli("runs", "show", "toy", "--runs_dir", tmp_path)
    assert f"{record['test_top_prob']:.4f} [" in next(line for line in shown.splitlines() if "top prob" in line)

    events = EventAccumulator(str(run / "tensorboard")).Reload()
    assert events.Scalars("final/test_top_prob")[0].value == pytest.approx(record["test_top_prob"])


def test_a_sweep_tunes_a_declared_metric_in_its_direction(cli, npz_data, tmp_path, toy):
    pytest.importorskip("optuna")
    import optuna

    code, out, err = cli("sweep", "--trials", "2", "--param", "lr=loguniform:1e-3:3e-2", "--study", "t",
                         "--objective", "valid_top_prob", "--dataset", f"npz:{npz_data}", "--n_epochs", "2",
                         "--batch_size", "32", "--runs_dir", tmp_path)
    assert code == 0, err
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path}/sweeps.db")
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    values = {}
    for trial in study.trials:
        record = json.loads((tmp_path / f"t-trial{trial.number:03d}" / "run.json").read_text())
        assert trial.value == record["valid_top_prob"]  # the validation number, not the test one
        values[trial.number] = trial.value
    assert study.best_trial.number == max(values, key=values.get)
    assert "valid_top_prob=" in out


def test_only_a_metric_declared_tunable_can_be_tuned(cli, npz_data, tmp_path):
    code, _, err = cli("sweep", "--trials", "1", "--param", "lr=loguniform:1e-3:3e-2", "--objective",
                       "valid_macro_f1", "--dataset", f"npz:{npz_data}", "--runs_dir", tmp_path)
    assert code == 2 and "--objective valid_macro_f1" in err and "best_valid_loss" in err
    assert not (tmp_path / "sweeps.db").exists()


def test_declarations_decide_where_a_metric_goes(toy):
    from ptflow.reports import history
    from ptflow.training import tracking

    assert "test_top_prob" in history.metrics() and "test_top_prob" in tracking.final_metrics()
    assert "valid_top_prob" in scoring.objectives() and "best_valid_loss" in scoring.objectives()
    # macro-F1 is declared for `ptflow evaluate` only: no run keeps it, no tracker gets it, no sweep tunes it
    assert "test_macro_f1" not in scoring.run_keys() + list(history.metrics()) + tracking.final_metrics()
    assert "valid_macro_f1" not in scoring.objectives()


def test_training_time_test_metrics_equal_evaluates(cli, trained, tmp_path):
    """One path: every metric a run keeps of its test split is evaluate's number for the saved model."""
    record = json.loads((trained["run"] / "run.json").read_text())
    report, _ = evaluate(cli, trained["run"], tmp_path / "eval")
    kept = scoring.declared(scored=True, run=True)
    assert {m.run_key for m in kept} >= {"test_acc", "test_ece"}
    for metric in kept:
        assert record[metric.run_key] == pytest.approx(report[metric.name], abs=1e-9), metric.name
        if metric.interval:
            assert record[f"{metric.run_key}_ci95"] == pytest.approx(report[f"{metric.name}_ci95"], abs=1e-9)
    assert record["test_n"] == report["n"]
    saved = np.load(trained["run"] / "predictions.npz")  # the predictions both scored
    assert record["test_acc"] == float((saved["y_pred"] == saved["y_true"]).mean())
