"""Optuna sweeps through `python -m src.train -m hparams_search=...`: stored, resumed, pruned; and their summary."""

from __future__ import annotations

import csv
import json
import re
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest

from genlab.checkpoints import read_checkpoint
from genlab.sweep_summary import read_sweep
from hydra_plugins.genlab_optuna_sweeper.storage import failure_reason, open_storage, retried_as
from tests.helpers import QUICK, run_module, run_train, start_train

# subprocesses and whole runs: the integration tier (make test-integration)
pytestmark = pytest.mark.integration

SMALL_VAE_SEARCH = [
    "-m",
    "hparams_search=vae_optuna",
    *QUICK,
    "test=false",
    "data=mnist",
    "data.val_size=100",
    "trainer.max_epochs=2",
    "~hydra.sweeper.params",
    "+hydra.sweeper.params={model.lr: 'tag(log, interval(1e-4, 1e-2))', model.latent_dim: 'choice(2, 4)'}",
]


def sweep(mnist_dir: Path, sweep_dir: Path, *overrides: str) -> None:
    result = run_train(*SMALL_VAE_SEARCH, f"paths.data_dir={mnist_dir}", f"hydra.sweep.dir={sweep_dir}", *overrides)
    assert result.returncode == 0, result.stderr[-3000:]


TrialState = optuna.trial.TrialState


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

    # a sweep killed before its trial's first heartbeat leaves that trial RUNNING in the study, without one
    cut_off = study.ask(
        {
            "model.lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True),
            "model.latent_dim": optuna.distributions.CategoricalDistribution([2, 4]),
        }
    )
    sweep(
        mnist_dir,
        sweep_dir,
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.heartbeat_interval=1",
        "hydra.sweeper.grace_period=2",
    )
    study = load(sweep_dir)
    trials = study.trials
    ended = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(ended) == 4  # two from before, one more, and the cut-off trial again once found stale
    # the resumed sweep's sampler does not start over from the seed: no trial repeats an earlier one's parameters
    assert len({tuple(sorted(t.params.items())) for t in trials}) == len(trials) - 1  # but the retry
    assert trials[cut_off.number].state == optuna.trial.TrialState.FAIL
    assert failure_reason(study, trials[cut_off.number]).startswith("its process stopped: no heartbeat for over 2 s")
    assert trials[-1].params == cut_off.params and retried_as(trials) == {cut_off.number: trials[-1].number}
    assert sorted(int(p.name) for p in sweep_dir.iterdir() if p.name.isdigit()) == [0, 1, 3, 4]  # one per trial run
    assert (sweep_dir / "optimization_results.yaml").is_file()


def test_a_value_fixed_on_the_command_line_is_what_every_trial_trains(tmp_path: Path, mnist_dir: Path) -> None:
    """The config searches model.architecture; the command line fixes it: no trial trains the other one."""
    sweep_dir = tmp_path / "sweep"
    space = "{model.architecture: 'choice(mlp, conv)', model.latent_dim: 'choice(2, 4)'}"
    result = run_train(
        *SMALL_VAE_SEARCH[:-1],
        f"+hydra.sweeper.params={space}",
        "hydra.sweeper.n_trials=3",
        "model.architecture=mlp",
        f"paths.data_dir={mnist_dir}",
        f"hydra.sweep.dir={sweep_dir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    trials = load(sweep_dir).trials
    assert len(trials) == 3
    for trial in trials:  # what each trial's job trained: its checkpoint's model
        hyper_parameters = read_checkpoint(sweep_dir / str(trial.number) / "checkpoints" / "last.ckpt")[
            "hyper_parameters"
        ]
        assert hyper_parameters["architecture"] == "mlp", f"trial {trial.number} trained {trial.params}"
        assert hyper_parameters["latent_dim"] == trial.params["model.latent_dim"]
    assert all(set(trial.params) == {"model.latent_dim"} for trial in trials)  # what the study searched


def test_bad_trials_are_pruned_at_their_first_validation(tmp_path: Path, mnist_dir: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    # a threshold no negative ELBO is under: every trial is pruned at its first validation (of two epochs)
    sweep(
        mnist_dir,
        sweep_dir,
        "hydra.sweeper.n_trials=2",
        "~hydra.sweeper.pruner",
        "+hydra.sweeper.pruner={_target_: optuna.pruners.ThresholdPruner, upper: 0.0}",
    )
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
    from genlab.sweep_summary import read_sweep, write_optuna_plots

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
    result = run_train(
        "-m",
        "model.latent_dim=2,4",
        *QUICK,
        "test=false",
        "data=mnist",
        "data.val_size=100",
        f"paths.data_dir={mnist_dir}",
        f"hydra.sweep.dir={tmp_path / 'grid'}",
    )
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
    result = run_train(
        "-m",
        "model.latent_dim=0,2",
        *QUICK,
        "test=false",
        "data=mnist",
        "data.val_size=100",
        f"paths.data_dir={mnist_dir}",
        f"hydra.sweep.dir={grid}",
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    refused = (
        "model.latent_dim=0 is not valid for Autoencoder: expected int (Input should be greater than or equal to 1)"
    )
    assert f"error: {refused}" in result.stderr
    assert (grid / "0" / "error.txt").read_text() == f"{refused}\n"
    assert (grid / "1" / "metrics.json").is_file()  # the second job ran after the first failed
    run_module("src.sweep_summary", f"sweep_dir={grid}")
    states = {row[3]: (row[1], row[-1]) for row in csv.reader((grid / "summary.csv").open())}
    assert states["0"] == ("FAIL", refused) and states["2"][0] == "COMPLETE"


def test_a_failed_trial_is_recorded_with_its_reason_and_not_retried(tmp_path: Path, mnist_dir: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    bad = ["hydra.sweeper.n_trials=2", "~hydra.sweeper.params", "+hydra.sweeper.params={model.latent_dim: 'choice(0)'}"]
    for _ in range(2):  # the second run resumes the study: nothing left to run, nothing retried
        result = run_train(*SMALL_VAE_SEARCH[:-2], f"paths.data_dir={mnist_dir}", f"hydra.sweep.dir={sweep_dir}", *bad)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert result.stderr.strip().splitlines()[-1].startswith(f"error: no trial of {sweep_dir} completed; trial 0:")
    trials = load(sweep_dir).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.FAIL] * 2
    refused = "model.latent_dim=0 is not valid for VAE: expected int (Input should be greater than or equal to 1)"
    assert all(t.user_attrs["error"] == refused for t in trials)


def test_a_second_sweep_in_the_same_folder_is_refused(tmp_path: Path, mnist_dir: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    # the first sweep has more trials than the test waits for: it is still running when the second starts (its
    # output goes to a file: a pipe that nobody reads would block it)
    first = start_train(
        *SMALL_VAE_SEARCH,
        f"paths.data_dir={mnist_dir}",
        f"hydra.sweep.dir={sweep_dir}",
        "hydra.sweeper.n_trials=100",
        log=tmp_path / "first.log",
    )
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
    first.kill()  # its 100 trials are not the point (a stop at a safe point waits for the step and the trial's end)
    first.wait(timeout=120)


# Shared studies: sweep processes (one per machine, or the workers of n_workers) that add trials to one study. Trials
# of 3 short epochs, so that a process can be killed in the middle of one; heartbeats every second.
SHARED = [
    *SMALL_VAE_SEARCH,
    "trainer.max_epochs=3",
    "hydra.sweeper.heartbeat_interval=1",
    "hydra.sweeper.grace_period=3",
]


def start_sweep(log: Path, *overrides: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """A sweep process whose output goes to `log` (a pipe nobody reads while it runs would block it)."""
    return start_train(*SHARED, *overrides, env=env, log=log)


def job_folders(sweep_dir: Path) -> set[int]:
    return {int(p.name) for p in sweep_dir.iterdir() if p.name.isdigit()}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_two_sweeps_share_a_study_and_the_trial_of_a_killed_one_is_failed_and_run_again(
    tmp_path: Path, mnist_dir: Path, kind: str
) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}" if kind == "sqlite" else str(tmp_path / "study.journal")
    overrides = [f"paths.data_dir={mnist_dir}", f"hydra.sweeper.storage={storage}", "hydra.sweeper.n_trials=3"]
    victim = start_sweep(tmp_path / "victim.log", *overrides, f"hydra.sweep.dir={tmp_path / 'victim'}")
    survivor = start_sweep(tmp_path / "survivor.log", *overrides, f"hydra.sweep.dir={tmp_path / 'survivor'}")
    try:
        # the victim is killed in the middle of its first trial: after its first validation, two epochs before its end
        deadline = time.monotonic() + 240
        while True:
            assert victim.poll() is None and time.monotonic() < deadline, (tmp_path / "victim.log").read_text()[-3000:]
            started = job_folders(tmp_path / "victim") if (tmp_path / "victim").is_dir() else set()
            if started:
                study = optuna.load_study(study_name="vae_fashion_mnist", storage=open_storage(storage))
                killed = study.trials[min(started)]
                if killed.intermediate_values:
                    assert killed.state == optuna.trial.TrialState.RUNNING
                    victim.send_signal(signal.SIGKILL)
                    break
            time.sleep(0.1)
        survivor.wait(timeout=300)
    finally:
        for process in (victim, survivor):
            if process.poll() is None:
                process.kill()
    log = (tmp_path / "survivor.log").read_text()
    assert survivor.returncode == 0 and "Traceback" not in log, log[-3000:]

    study = optuna.load_study(study_name="vae_fashion_mnist", storage=open_storage(storage))
    trials = study.trials
    retried = retried_as(trials)
    # every trial ended: none left RUNNING (or queued), each failed one with its reason
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL) for t in trials), trials
    assert all(failure_reason(study, t) for t in trials if t.state == TrialState.FAIL)
    # the killed trial was failed by the survivor (its heartbeats had stopped) and run again there, with its parameters
    assert trials[killed.number].state == TrialState.FAIL and retried == {killed.number: retried[killed.number]}
    assert failure_reason(study, trials[killed.number]).startswith("its process stopped: no heartbeat for over 3 s")
    again = trials[retried[killed.number]]
    assert again.state in (TrialState.COMPLETE, TrialState.PRUNED) and again.params == killed.params
    assert again.number in job_folders(tmp_path / "survivor")
    # no trial ran twice: each has one job folder, in one sweep's folder; no two trials but the retry share parameters
    victims, survivors = job_folders(tmp_path / "victim"), job_folders(tmp_path / "survivor")
    assert not victims & survivors and victims | survivors == {t.number for t in trials}
    params = [tuple(sorted(t.params.items())) for t in trials if t.number != again.number]
    assert len(set(params)) == len(params)
    # the study has its 3 trials (4, if both processes asked for the last one at once), the killed one not counted
    assert 3 <= len([t for t in trials if t.number not in retried]) <= 4
    assert (tmp_path / "survivor" / "optimization_results.yaml").is_file()

    # the summary of either sweep reads the whole study and says why the killed trial failed
    rows = {row.number: row for row in read_sweep(tmp_path / "survivor", None).trials}
    assert rows[killed.number].error.endswith(f"same parameters; ran again as trial {again.number}")


@pytest.mark.slow
def test_n_workers_run_trials_at_once_each_with_its_share_of_threads(tmp_path: Path, mnist_dir: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    sweep_process = start_sweep(
        tmp_path / "sweep.log",
        f"paths.data_dir={mnist_dir}",
        f"hydra.sweep.dir={sweep_dir}",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.n_workers=2",
    )
    sweep_process.wait(timeout=300)
    log = (tmp_path / "sweep.log").read_text()
    assert sweep_process.returncode == 0 and "Traceback" not in log, log[-3000:]

    # two worker processes, each with half of the machine's torch threads (at least one), as torch in it reports
    (share, total), *_ = re.findall(r"Starting 2 sweep workers .*, each with (\d+) of (\d+) torch threads", log)
    assert int(share) == max(1, int(total) // 2)
    workers = re.findall(r"Sweep worker (\d)/2 \(process (\d+)\): (\d+) torch thread", log)
    assert sorted(number for number, _, _ in workers) == ["1", "2"] and len({pid for _, pid, _ in workers}) == 2
    assert [threads for _, _, threads in workers] == [share, share]
    # one study in the sweep's folder, its trials run at once: some two of them overlap in time
    trials = load(sweep_dir).trials
    assert len(trials) == 4 and all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    assert any(
        a.datetime_start < b.datetime_complete and b.datetime_start < a.datetime_complete
        for a in trials
        for b in trials
        if a.number < b.number
    )
    assert job_folders(sweep_dir) == {0, 1, 2, 3} and (sweep_dir / "optimization_results.yaml").is_file()


@pytest.mark.slow
def test_sigterm_to_a_sweep_of_n_workers_stops_each_worker_and_queues_its_trial_again(
    tmp_path: Path, mnist_dir: Path
) -> None:
    sweep_dir = tmp_path / "sweep"
    sweep_process = start_sweep(
        tmp_path / "sweep.log",
        f"paths.data_dir={mnist_dir}",
        f"hydra.sweep.dir={sweep_dir}",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.n_workers=2",
        # trials far longer than the wait for both to be under way: on a loaded machine a
        # 3-epoch trial could end before the signal reached it
        "trainer.max_epochs=30",
    )
    try:
        deadline = time.monotonic() + 240
        while True:  # both workers in the middle of a trial: validated once, two epochs to go
            assert sweep_process.poll() is None and time.monotonic() < deadline, (tmp_path / "sweep.log").read_text()
            if (sweep_dir / "0").is_dir():  # the study is made before any job starts
                running = [t for t in load(sweep_dir).trials if t.state == TrialState.RUNNING]
                if len(running) == 2 and all(t.intermediate_values for t in running):
                    break
            time.sleep(0.2)
        sweep_process.send_signal(signal.SIGTERM)  # to the sweep only: it passes the signal on to its workers
        sweep_process.wait(timeout=120)
    finally:
        if sweep_process.poll() is None:
            sweep_process.kill()
    log = (tmp_path / "sweep.log").read_text()
    assert sweep_process.returncode == 128 + signal.SIGTERM and "Traceback" not in log, log[-3000:]
    study = load(sweep_dir)
    trials = study.trials
    stopped = [t for t in trials if t.number in {r.number for r in running}]
    assert [t.state for t in stopped] == [TrialState.FAIL] * 2  # no trial left RUNNING
    for trial in stopped:
        assert failure_reason(study, trial) == "interrupted by SIGTERM; queued again with the same parameters"
        again = trials[retried_as(trials)[trial.number]]
        assert again.state == TrialState.WAITING and again.params == trial.params  # for the resume


@pytest.mark.slow
def test_a_storage_that_cannot_be_opened_is_one_line_and_leaves_no_folder(tmp_path: Path, mnist_dir: Path) -> None:
    (tmp_path / "file").write_text("")
    storage = tmp_path / "file" / "study.journal"  # a journal under a file
    result = run_train(
        *SMALL_VAE_SEARCH,
        f"paths.data_dir={mnist_dir}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        f"hydra.sweeper.storage={storage}",
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: hydra.sweeper.storage={storage}: cannot open it:")
    assert not (tmp_path / "sweep").exists()
