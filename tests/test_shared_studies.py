"""Studies shared between sweep processes and machines: storages, heartbeats, stale trials, and `n_workers`."""

from __future__ import annotations

import time
from pathlib import Path

import optuna
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from hydra_plugins.genlab_optuna_sweeper.optuna_sweeper import OptunaSweeper, check_settings, quoted
from hydra_plugins.genlab_optuna_sweeper.storage import (
    RetryStaleTrial,
    fail_stale_trials,
    failure_reason,
    heartbeats,
    open_storage,
    resolve_storage,
    retried_as,
    shown,
)
from hydra_plugins.genlab_optuna_sweeper.workers import worker_command, worker_environment

TrialState = optuna.trial.TrialState
LR = optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)


def storage_spec(kind: str, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'study.db'}" if kind == "sqlite" else str(tmp_path / "journal" / "study.log")


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_only_the_trial_that_stopped_beating_is_failed_with_its_reason_and_queued_again(
    tmp_path: Path, kind: str
) -> None:
    spec = storage_spec(kind, tmp_path)
    storage = open_storage(spec, heartbeat_interval=1, grace_period=2, on_stale_trial=RetryStaleTrial(2, max_retry=1))
    study = optuna.create_study(study_name="shared", storage=storage)
    live, gone = study.ask({"model.lr": LR}), study.ask({"model.lr": LR})
    storage.record_heartbeat(gone._trial_id)  # one beat, then its process "dies"
    with heartbeats(storage, [live._trial_id]):
        time.sleep(4.5)  # over grace_period since gone's beat (SQLite's clock counts whole seconds)
        fail_stale_trials(study)  # as any sweep process does before it asks for a trial
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.RUNNING, TrialState.FAIL, TrialState.WAITING]
    assert failure_reason(study, trials[1]) == (
        "its process stopped: no heartbeat for over 2 s; queued again with the same parameters"
    )
    assert trials[2].params == trials[1].params and retried_as(trials) == {gone.number: 2}

    # another process sees the same study: the live trial is still running, the retry is asked first
    other = optuna.load_study(study_name="shared", storage=open_storage(spec))
    assert other.ask({"model.lr": LR}).params == gone.params
    study.tell(live, 1.0)  # the live trial's process is told its result as usual
    assert study.trials[live.number].state == TrialState.COMPLETE


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_a_trial_killed_again_is_not_retried_past_max_retry(tmp_path: Path) -> None:
    spec = storage_spec("journal", tmp_path)
    storage = open_storage(spec, heartbeat_interval=1, grace_period=2, on_stale_trial=RetryStaleTrial(2, max_retry=1))
    study = optuna.create_study(study_name="shared", storage=storage)
    study.ask({"model.lr": LR})  # never beats: the journal counts from its start
    time.sleep(2.5)
    fail_stale_trials(study)
    study.ask({"model.lr": LR})  # its retry, which dies too
    time.sleep(2.5)
    fail_stale_trials(study)
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert states == [TrialState.FAIL, TrialState.FAIL]  # no third try
    assert failure_reason(study, study.trials[1]).endswith("max_retry=1 reached")


def test_worker_environment_splits_threads_and_shares_gpus_round_robin() -> None:
    first = worker_environment(0, 4, total_threads=16, gpus=["0"])
    assert first == {
        "GENLAB_SWEEP_WORKER": "1/4",
        "OMP_NUM_THREADS": "4",
        "MKL_NUM_THREADS": "4",
        "CUDA_VISIBLE_DEVICES": "0",
    }
    assert [worker_environment(i, 3, 2, ["2", "5"])["CUDA_VISIBLE_DEVICES"] for i in range(3)] == ["2", "5", "2"]
    assert worker_environment(2, 3, total_threads=2, gpus=[])["OMP_NUM_THREADS"] == "1"  # never 0
    assert "CUDA_VISIBLE_DEVICES" not in worker_environment(0, 2, 8, gpus=[])


def test_worker_command_is_the_sweeps_own_with_its_folder_and_storage() -> None:
    argv = [
        "python",
        "-m",
        "src.train",
        "-m",
        "hparams_search=vae_optuna",
        "hydra.sweeper.n_workers=4",
        "hydra.sweep.dir=old",
        "model.lr=1e-3",
    ]
    overrides = [
        "hydra.sweep.dir='/tmp/s'",
        "hydra.sweeper.storage='sqlite:////tmp/s/optuna.db'",
        "hydra.sweeper.n_workers=1",
    ]
    assert worker_command(argv, overrides) == [
        "python",
        "-m",
        "src.train",
        "-m",
        "hparams_search=vae_optuna",
        "model.lr=1e-3",
        *overrides,
    ]


@pytest.mark.parametrize(
    "value", ["postgresql://user:pass@host:5432/db?sslmode=require&x=1", "/shared/it's here/study.log", "C:\\dir\\"]
)
def test_a_storage_passes_through_hydras_override_grammar_unchanged(value: str) -> None:
    assert OverridesParser.create().parse_override(f"optuna.storage={quoted(value)}").value() == value


def test_storages_are_named_absolutely_and_passwords_are_not_shown(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_storage(None, tmp_path / "sweep") == f"sqlite:///{tmp_path / 'sweep' / 'optuna.db'}"
    assert resolve_storage("sqlite:///studies/a.db", tmp_path) == f"sqlite:///{tmp_path / 'studies' / 'a.db'}"
    assert resolve_storage("journal.log", tmp_path / "sweep") == str(tmp_path / "journal.log")
    assert resolve_storage("postgresql://u:secret@h/db", tmp_path) == "postgresql://u:secret@h/db"
    assert shown("postgresql://u:secret@h/db") == "postgresql://u:***@h/db"
    with pytest.raises(SystemExit, match="in-memory SQLite database is not shared with the jobs"):
        resolve_storage("sqlite://", tmp_path)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"n_workers": 0},
            "error: hydra.sweeper.n_workers=0 is not valid for OptunaSweeper: expected int (Input should be greater "
            "than or equal to 1)",
        ),
        (
            {"n_trials": 2.5},
            "error: hydra.sweeper.n_trials=2.5 is not valid for OptunaSweeper: expected int (Input should be a valid "
            "integer, got a number with a fractional part)",
        ),
        (
            {"heartbeat_interval": 30, "grace_period": 30},
            "error: hydra.sweeper.grace_period=30: expected more than heartbeat_interval=30 (seconds)",
        ),
        (
            {"max_retry": -1},
            "error: hydra.sweeper.max_retry=-1 is not valid for OptunaSweeper: expected int or null (Input should be "
            "greater than or equal to 0)",
        ),
    ],
)
def test_settings_a_sweep_cannot_run_with_are_refused_in_one_line(settings: dict, message: str) -> None:
    with pytest.raises(SystemExit) as stop:
        check_settings(OptunaSweeper(**settings))
    assert str(stop.value) == message


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("nosuchdb://host/db", "error: hydra.sweeper.storage=nosuchdb://host/db: cannot open it: Can't load plugin"),
        (
            "postgresql+nosuchdriver://u:secret@localhost/db",
            "error: hydra.sweeper.storage=postgresql+nosuchdriver://u:***@localhost/db: cannot open it:",
        ),
    ],
)
def test_a_storage_that_cannot_be_opened_is_one_line_without_its_password(spec: str, expected: str) -> None:
    with pytest.raises(SystemExit) as stop:
        OptunaSweeper()._open_study(spec)
    assert str(stop.value).startswith(expected) and "secret" not in str(stop.value) and "\n" not in str(stop.value)


def test_a_journal_under_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit, match=r"^error: hydra.sweeper.storage=.*/file/study.log: cannot open it: "):
        OptunaSweeper()._open_study(str(tmp_path / "file" / "study.log"))
