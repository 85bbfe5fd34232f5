"""Each private or undocumented library attribute that genlab reads or writes (docs/architecture.md lists them, with
their upstream issues) still exists in the pinned versions: an upstream rename fails here, not silently in a run."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import lightning as L
import optuna
import pytest
import torch
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.plugins.precision import MixedPrecision

from tests.helpers import ROOT


@pytest.fixture(scope="module")
def trainer() -> L.Trainer:
    return L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)


def test_resume_reads_the_fit_loops_pending_loader_state(trainer: L.Trainer) -> None:
    # genlab/callbacks/resume.py, Lightning #20550
    fit_loop = trainer.fit_loop
    assert fit_loop._combined_loader_states_to_load == []  # falsy until a checkpoint holds a loader state
    assert list(inspect.signature(fit_loop._load_combined_loader_states).parameters) == []
    assert hasattr(fit_loop, "_data_fetcher")


def test_progress_bar_overrides_the_train_description_and_reads_the_epochs_batch_progress(trainer: L.Trainer) -> None:
    # genlab/callbacks/progress.py: Lightning #21925; the resumed epoch's position
    assert list(inspect.signature(RichProgressBar._get_train_description).parameters) == ["self", "current_epoch"]
    assert trainer.fit_loop.epoch_loop.batch_progress.current.ready == 0


def test_validate_at_end_sets_the_fit_loops_min_epochs(trainer: L.Trainer) -> None:
    # genlab/callbacks/validate_at_end.py: a plain attribute that the loop reads when asked to stop (a property
    # without a setter would refuse the write; a renamed one would take it and change nothing)
    fit_loop = trainer.fit_loop
    assert "min_epochs" in vars(fit_loop)
    fit_loop.min_epochs = 1
    assert not fit_loop._can_stop_early  # no epoch done yet: a stop request would wait for one
    fit_loop.min_epochs = 0
    assert fit_loop._can_stop_early


def test_fused_clipping_reads_the_precision_plugins_scaler() -> None:
    # genlab/models/fused.py reads it with getattr(..., None): a rename would read as "no scaler", silently
    assert "scaler" in vars(MixedPrecision("bf16-mixed", "cpu"))


def test_wandb_logger_pops_anonymous_from_lightnings_init_arguments(tmp_path: Path) -> None:
    # genlab/utils/loggers.py: wandb/wandb#10909; the class can go once Lightning stops passing `anonymous`
    init = WandbLogger(save_dir=tmp_path, offline=True)._wandb_init
    assert isinstance(init, dict) and "anonymous" in init


def test_optuna_pruning_rebuilds_a_trial_from_a_frozen_trials_id() -> None:
    # genlab/callbacks/optuna_pruning.py: the trial lives in the sweeper's process; the job finds it in the storage
    study = optuna.create_study()
    asked = study.ask()
    (frozen,) = study.get_trials(deepcopy=False)
    rebuilt = optuna.Trial(study, frozen._trial_id)
    assert rebuilt.number == asked.number
    rebuilt.report(0.5, step=1)
    assert study.get_trials(deepcopy=False)[0].intermediate_values == {1: 0.5}


def test_logged_steps_and_image_grids_read_the_epoch_loops_count_of_batches_that_stepped(trainer: L.Trainer) -> None:
    # genlab/models/logged_steps.py, genlab/models/previews/image_grid.py: what Lightning's logger connector decides
    # by and the step it logs at (Lightning #13752, #17958); no public equivalent
    assert trainer.fit_loop.epoch_loop._batches_that_stepped == 0


def test_the_journal_storage_answers_optunas_heartbeat_through_its_private_protocol() -> None:
    # hydra_plugins/genlab_optuna_sweeper/storage.py: JournalStorage takes no heartbeat_interval; BaseHeartbeat (a
    # private module) is what Optuna's fail_stale_trials asks, through its private _get_stale_trial_ids
    from optuna.storages._heartbeat import BaseHeartbeat, fail_stale_trials

    assert list(inspect.signature(BaseHeartbeat._get_stale_trial_ids).parameters) == ["self", "study_id"]
    assert "_get_stale_trial_ids" in inspect.getsource(fail_stale_trials)


def test_interrupt_takes_back_a_stop_request_through_the_signal_connector(trainer: L.Trainer) -> None:
    # genlab/callbacks/interrupt.py: Lightning #19549, #20288 (Trainer.received_sigterm is read-only)
    connector = trainer._signal_connector
    connector.received_sigterm = True
    assert trainer.received_sigterm
    connector.received_sigterm = False
    assert not trainer.received_sigterm


def test_ema_uses_torchs_foreach_copy_and_lerp() -> None:
    # genlab/models/ema.py: torch's private multi-tensor kernels, one launch for all of a model's tensors
    averaged, current = [torch.zeros(3), torch.zeros(2)], [torch.ones(3), torch.full((2,), 2.0)]
    torch._foreach_lerp_(averaged, current, 0.5)
    assert torch.equal(averaged[1], torch.ones(2))
    torch._foreach_copy_(averaged, current)
    assert torch.equal(averaged[0], torch.ones(3))


# the private names genlab reads, writes or overrides: each file that holds one has its row in the page's table
PRIVATE_NAMES = [
    "_combined_loader_states_to_load",
    "_load_combined_loader_states",
    "_data_fetcher",
    "_get_train_description",
    "batch_progress",
    "_wandb_init",
    "_batches_that_stepped",
    "_trial_id",
    "_signal_connector",
    "_foreach_copy_",
    "_foreach_lerp_",
    "_heartbeat",
    "_get_stale_trial_ids",
]


def test_the_architecture_page_lists_each_file_that_uses_a_private_name() -> None:
    table = (ROOT / "docs" / "architecture.md").read_text().split("## Private APIs")[1].split("\n## ")[0]
    rows = {}
    for line in table.splitlines():
        if line.startswith("| `"):
            rows.setdefault(line.split("`")[1], []).append(line)
    sources = [*(ROOT / "genlab").rglob("*.py"), *(ROOT / "hydra_plugins").rglob("*.py")]
    for source in sources:
        place = source.relative_to(ROOT).as_posix()
        for name in PRIVATE_NAMES:
            if re.search(rf"(?<!\w){name}(?!\w)", source.read_text()):
                assert any(name in row for row in rows.get(place, [])), f"docs/architecture.md: {place} uses {name}"
    # undocumented public attributes, named without an underscore
    public = {"genlab/callbacks/validate_at_end.py": "min_epochs", "genlab/models/fused.py": "scaler"}
    for place, name in public.items():
        assert any(name in row for row in rows.get(place, [])), f"docs/architecture.md: {place} uses {name}"
