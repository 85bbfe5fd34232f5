"""Optuna sweeps through `python -m src.train -m hparams_search=...`: stored, resumed, pruned; and their summary."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from tests.conftest import ROOT
from tests.test_cli import QUICK, run_train
from tests.test_eval_sample import run_module

SMALL_VAE_SEARCH = [
    "-m", "hparams_search=vae_optuna", *QUICK, "test=false", "data=mnist", "data.val_size=100", "trainer.max_epochs=2",
    "~hydra.sweeper.params",
    "+hydra.sweeper.params={model.lr: 'tag(log, interval(1e-4, 1e-2))', model.latent_dim: 'choice(2, 4)'}",
]  # fmt: skip


def sweep(mnist_dir: Path, sweep_dir: Path, *overrides: str) -> None:
    result = run_train(*SMALL_VAE_SEARCH, f"paths.data_dir={mnist_dir}", f"hydra.sweep.dir={sweep_dir}", *overrides)
    assert result.returncode == 0, result.stderr[-3000:]


def load(sweep_dir: Path) -> optuna.Study:
    return optuna.load_study(study_name="vae_fashion_mnist", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")


def test_study_is_stored_and_an_interrupted_sweep_resumes(tmp_path: Path, mnist_dir: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    sweep(mnist_dir, sweep_dir, "hydra.sweeper.n_trials=2")
    study = load(sweep_dir)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    for trial in study.trials:  # each trial's value is what its job returned: the monitored metric
        metrics = json.loads((sweep_dir / str(trial.number) / "metrics.json").read_text())
        assert trial.value == pytest.approx(metrics["val/nelbo"])
        assert set(trial.params) == {"model.lr", "model.latent_dim"}

    # a sweep killed mid-trial leaves that trial RUNNING in the study
    cut_off = study.ask({"model.lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True),
                         "model.latent_dim": optuna.distributions.CategoricalDistribution([2, 4])})  # fmt: skip
    sweep(mnist_dir, sweep_dir, "hydra.sweeper.n_trials=4")
    trials = load(sweep_dir).trials
    completed = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(completed) == 4  # two from before, the cut-off trial again, and one more
    assert trials[cut_off.number].state == optuna.trial.TrialState.FAIL
    assert any(t.params == cut_off.params and t.number > cut_off.number for t in completed)
    assert sorted(int(p.name) for p in sweep_dir.iterdir() if p.name.isdigit()) == [0, 1, 3, 4]  # one per trial run
    assert (sweep_dir / "optimization_results.yaml").is_file()


def test_bad_trials_are_pruned_at_their_first_validation(tmp_path: Path, mnist_dir: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    # a threshold no negative ELBO is under: every trial is pruned at its first validation (of two epochs)
    sweep(mnist_dir, sweep_dir, "hydra.sweeper.n_trials=2", "~hydra.sweeper.pruner",
          "+hydra.sweeper.pruner={_target_: optuna.pruners.ThresholdPruner, upper: 0.0}")  # fmt: skip
    trials = load(sweep_dir).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.PRUNED] * 2
    assert all(len(t.intermediate_values) == 1 for t in trials)  # one report each, at the first validation
    assert not (sweep_dir / "0" / "checkpoints" / "epoch_001.ckpt").exists()  # it stopped after the first epoch


def test_summary_ranks_the_trials_and_plots_them(tmp_path: Path, mnist_dir: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    sweep(mnist_dir, sweep_dir, "hydra.sweeper.n_trials=3")
    result = run_module("src.sweep_summary", f"sweep_dir={sweep_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.reader((sweep_dir / "summary.csv").open()))
    assert rows[0] == ["trial", "state", "val/nelbo", "model.latent_dim", "model.lr", "error"]
    values = [float(row[2]) for row in rows[1:]]
    assert len(values) == 3 and values == sorted(values)  # best (lowest) first
    assert values[0] == pytest.approx(load(sweep_dir).best_value, rel=1e-5)
    assert (sweep_dir / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "val/nelbo" in result.stdout.splitlines()[0]
    # Optuna's own plots of the study, and the command that opens it in optuna-dashboard
    for name in ("optuna_history.png", "optuna_importances.png", "optuna_slice.png"):
        assert (sweep_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert f"optuna-dashboard sqlite:///{(sweep_dir / 'optuna.db').resolve()}" in result.stdout
    assert "not drawn" not in result.stdout


def test_summary_of_a_study_with_one_completed_trial_says_which_plot_it_left_out(tmp_path: Path) -> None:
    from src.sweep_summary import read_sweep, write_optuna_plots

    (tmp_path / "multirun.yaml").write_text(
        "task_name: vae\nmonitor: {metric: val/nelbo, mode: min}\n"
        "hydra: {sweeper: {study_name: tiny, direction: minimize}}\n"
    )
    study = optuna.create_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    lr = optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)
    study.add_trial(optuna.trial.create_trial(params={"model.lr": 1e-3}, distributions={"model.lr": lr}, value=300.0))
    sweep = read_sweep(tmp_path, None)
    assert sweep.name == f"tiny ({tmp_path.name})"
    notes = write_optuna_plots(sweep, tmp_path)
    assert notes == [
        "optuna_importances.png (parameter importances) not drawn: 1 completed trial(s), it needs 2",
        "optuna_slice.png (slices: the metric against each parameter) not drawn: 1 completed trial(s), it needs 2",
    ]
    assert (tmp_path / "optuna_history.png").is_file()
    assert not (tmp_path / "optuna_importances.png").exists() and not (tmp_path / "optuna_slice.png").exists()


def test_summary_of_a_grid_sweep(tmp_path: Path, mnist_dir: Path) -> None:
    result = run_train("-m", "model.latent_dim=2,4", *QUICK, "test=false", "data=mnist", "data.val_size=100",
                       f"paths.data_dir={mnist_dir}", f"hydra.sweep.dir={tmp_path / 'grid'}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    result = run_module("src.sweep_summary", f"sweep_dir={tmp_path / 'grid'}")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.reader((tmp_path / "grid" / "summary.csv").open()))
    assert rows[0] == ["trial", "state", "val/loss", "model.latent_dim", "error"]
    assert sorted(row[3] for row in rows[1:]) == ["2", "4"]


def test_summary_of_a_folder_that_is_no_sweep(tmp_path: Path) -> None:
    result = run_module("src.sweep_summary", f"sweep_dir={tmp_path}")
    assert result.returncode == 1
    assert "not a sweep folder (no multirun.yaml" in result.stderr and "Traceback" not in result.stderr


def test_a_bad_job_fails_alone_and_the_grid_goes_on(tmp_path: Path, mnist_dir: Path) -> None:
    grid = tmp_path / "grid"
    result = run_train("-m", "model.latent_dim=0,2", *QUICK, "test=false", "data=mnist", "data.val_size=100",
                       f"paths.data_dir={mnist_dir}", f"hydra.sweep.dir={grid}")  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "error: model.latent_dim must be >= 1, got 0" in result.stderr
    assert (grid / "0" / "error.txt").read_text().startswith("model.latent_dim must be >= 1")
    assert (grid / "1" / "metrics.json").is_file()  # the second job ran after the first failed
    run_module("src.sweep_summary", f"sweep_dir={grid}")
    states = {row[3]: (row[1], row[-1]) for row in csv.reader((grid / "summary.csv").open())}
    assert states["0"] == ("FAIL", "model.latent_dim must be >= 1, got 0") and states["2"][0] == "COMPLETE"


def test_a_failed_trial_is_recorded_with_its_reason_and_not_retried(tmp_path: Path, mnist_dir: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    bad = ["hydra.sweeper.n_trials=2", "~hydra.sweeper.params", "+hydra.sweeper.params={model.latent_dim: 'choice(0)'}"]
    for _ in range(2):  # the second run resumes the study: nothing left to run, nothing retried
        result = run_train(*SMALL_VAE_SEARCH[:-2], f"paths.data_dir={mnist_dir}", f"hydra.sweep.dir={sweep_dir}", *bad)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert result.stderr.strip().splitlines()[-1].startswith(f"error: no trial of {sweep_dir} completed; trial 0:")
    trials = load(sweep_dir).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.FAIL] * 2
    assert all(t.user_attrs["error"] == "model.latent_dim must be >= 1, got 0" for t in trials)


def test_a_second_sweep_in_the_same_folder_is_refused(tmp_path: Path, mnist_dir: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    # the first sweep has more trials than the test waits for: it is still running when the second starts (its
    # output goes to a file: a pipe that nobody reads would block it)
    log = (tmp_path / "first.log").open("w")
    first = subprocess.Popen(
        [sys.executable, "-m", "src.train", *SMALL_VAE_SEARCH, f"paths.data_dir={mnist_dir}",
         f"hydra.sweep.dir={sweep_dir}", "hydra.sweeper.n_trials=100"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not (sweep_dir / "0").is_dir():  # the first sweep holds the folder and runs its first trial
        assert first.poll() is None and time.monotonic() < deadline, (tmp_path / "first.log").read_text()[-2000:]
        time.sleep(0.2)
    second = run_train(*SMALL_VAE_SEARCH, f"paths.data_dir={mnist_dir}", f"hydra.sweep.dir={sweep_dir}")
    assert second.returncode == 1 and "Traceback" not in second.stderr
    assert second.stderr.strip().splitlines()[-1] == (
        f"error: hydra.sweep.dir={sweep_dir.resolve()}: another sweep (process {first.pid}) is running in this "
        f"folder; wait for it to end, or give this one another hydra.sweep.dir"
    )
    assert first.poll() is None  # untouched by the second
    first.terminate()
    first.wait(timeout=120)
    log.close()
