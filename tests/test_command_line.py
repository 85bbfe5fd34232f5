"""Bad command lines of every entry point end in one line, `error: ...`, before Hydra makes a folder.

A matrix of entry points and bad inputs: a missing `???` value, a task_name that is a path, a run folder that is a
file or lies under one. In-process through the check Hydra calls (genlab/utils/before_run.py, listed in each entry
point's config), and from the command line through each entry point's real `main` (Hydra's parsing, the check,
exit_on_user_error), in this process and, for one case of each, as a process (slow). Then every range and choice
that a model family declares, a value past each, through src.train's main: one line, and its run folder removed.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra

from genlab.errors import ConfigError
from genlab.eval import main as eval_main
from genlab.report import main as report_main
from genlab.sample import main as sample_main
from genlab.sweep_summary import main as sweep_summary_main
from genlab.train import main as train_main
from genlab.utils import run_folder
from genlab.utils.before_run import CheckBeforeRun
from genlab.utils.config import compose
from tests.helpers import ROOT, Breach, declared_breaches, family_config, model_class, options, run_main, run_module

ENTRY_POINTS = ["train", "eval", "sample", "report", "sweep_summary"]
# the value each entry point needs, given where a case is about something else
REQUIRED = {
    "train": [],
    "eval": ["ckpt_path=x.ckpt"],
    "sample": ["ckpt_path=x.ckpt"],
    "report": ["run_dir=."],
    "sweep_summary": ["sweep_dir=."],
}
WITH_TASK_NAME = ["train", "eval", "sample"]  # src.report and src.sweep_summary write into the folder they read

# (entry point, overrides with {file} for a file that exists, what the one line names)
CASES = [
    *(
        (entry, [], f"{key} is missing: give it on the command line: python -m src.{entry} {key}=")
        for entry, key in (
            ("eval", "ckpt_path"),
            ("sample", "ckpt_path"),
            ("report", "run_dir"),
            ("sweep_summary", "sweep_dir"),
        )
    ),
    *(
        (entry, [f"task_name={name}"], f"task_name={name!r}: must be a plain folder name")
        for entry in WITH_TASK_NAME
        for name in ("a/b", "a/../../../x", ".hidden")
    ),
    *((entry, ["hydra.run.dir={file}"], "hydra.run.dir={file}: a file of that name exists") for entry in ENTRY_POINTS),
    *(
        (entry, ["hydra.run.dir={file}/run"], "hydra.run.dir={file}/run: {file} is a file, so no folder can be made")
        for entry in ENTRY_POINTS
    ),
    *(
        (entry, ["paths.log_dir={file}"], "paths.log_dir={file}: a file of that name exists")
        for entry in WITH_TASK_NAME
    ),
    *(
        (entry, ["paths.output_dir={file}/out"], "paths.output_dir={file}/out: {file} is a file")
        for entry in WITH_TASK_NAME
    ),
    *(
        (entry, [f"seed={seed}"], f"seed={seed}: expected a whole number from 0 to 4294967295, or null")
        for entry in WITH_TASK_NAME  # the entry points that seed
        for seed in (-5, 4294967296, 1.5)
    ),
]
IDS = [f"{entry}:{' '.join(overrides) or 'nothing'}" for entry, overrides, _ in CASES]


def filled(texts: list[str], file: Path) -> list[str]:
    return [text.format(file=file) for text in texts]


@pytest.fixture
def a_file(tmp_path: Path) -> Path:
    path = tmp_path / "a_file"
    path.write_text("not a folder\n")
    return path


@pytest.mark.parametrize(("entry", "overrides", "message"), CASES, ids=IDS)
def test_the_check_before_the_run_refuses_with_one_line(
    entry: str, overrides: list[str], message: str, a_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    overrides = filled(overrides, a_file)
    given = {override.partition("=")[0] for override in overrides}
    required = [] if overrides == [] else [o for o in REQUIRED[entry] if o.partition("=")[0] not in given]
    config = compose([*required, *overrides], entry, return_hydra_config=True)
    (callback,) = config.hydra.callbacks.values()  # every entry point's config lists the check
    assert callback._target_ == f"{CheckBeforeRun.__module__}.{CheckBeforeRun.__name__}"
    with pytest.raises(SystemExit) as exit_info:  # what Hydra calls before it makes the run folder
        CheckBeforeRun().on_run_start(config=config, config_name=entry)
    line = exit_info.value.code
    assert isinstance(line, str) and "\n" not in line  # printed by Python as it exits: code 1
    assert line.startswith("error: " + message.format(file=a_file)), line
    assert capsys.readouterr().err == ""
    assert sorted(tmp_path.iterdir()) == [a_file]


def test_a_sweep_refuses_a_sweep_folder_under_a_file_and_takes_a_value_given_per_job(a_file: Path) -> None:
    config = compose(["ckpt_path=x.ckpt", f"hydra.sweep.dir={a_file}/sweep"], "eval", return_hydra_config=True)
    with pytest.raises(SystemExit, match=f"^error: hydra.sweep.dir={a_file}/sweep: {a_file} is a file"):
        CheckBeforeRun().on_multirun_start(config=config, config_name="eval")
    # `ckpt_path=a.ckpt,b.ckpt` is left out of the sweep's base config and given to each job: not missing
    config = compose([f"hydra.sweep.dir={a_file.parent}/sweep"], "eval", return_hydra_config=True)
    config.hydra.overrides.task = ["ckpt_path=a.ckpt,b.ckpt"]
    CheckBeforeRun().on_multirun_start(config=config, config_name="eval")


@pytest.mark.parametrize("entry", ["train", "eval"])  # the entry points that read paths.data_dir
@pytest.mark.parametrize("link", ["loop", "loop/sub", "dangling"])
def test_a_data_dir_that_is_a_link_leading_nowhere_is_one_line_and_nothing_is_written(
    entry: str, link: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "loop").symlink_to(tmp_path / "loop")  # a link to itself
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    monkeypatch.setenv("DATA_DIR", str(tmp_path / link))  # as conf/paths/default.yaml reads it
    run_dir = tmp_path / "run"
    result = run_main(MAINS[entry], *REQUIRED[entry], f"hydra.run.dir={run_dir}")
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr[-3000:]
    broken = tmp_path / link.partition("/")[0]
    why = "is a loop of symbolic links" if link != "dangling" else f"is a symbolic link to {tmp_path / 'gone'}, which"
    assert result.stderr.startswith(f"error: DATA_DIR={tmp_path / link}: {broken} {why}"), result.stderr
    assert not run_dir.exists()


def test_a_good_command_line_passes(tmp_path: Path) -> None:
    for entry in ENTRY_POINTS:
        config = compose([*REQUIRED[entry], f"hydra.run.dir={tmp_path}/new/run"], entry, return_hydra_config=True)
        CheckBeforeRun().on_run_start(config=config, config_name=entry)
    assert GlobalHydra.instance().is_initialized() is False  # compose() leaves no global state behind
    assert list(tmp_path.iterdir()) == []


# every bound and choice that a family's constructor declares, a value just past it each, read from the declarations
BREACHES = [breach for model in options("model") for breach in declared_breaches(model)]


@pytest.mark.parametrize("breach", BREACHES, ids=str)
def test_train_refuses_a_value_past_a_declared_bound_with_one_line_and_no_run_folder(
    breach: Breach, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run = tmp_path / "run"
    run_folder.claim(run)  # as the check Hydra runs before it makes the run folder (CheckBeforeRun) notes it
    (run / ".hydra").mkdir(parents=True)  # what Hydra has made by the time src.train's main starts
    cfg = family_config(breach.model, run)
    cfg.model[breach.name] = breach.value  # as `model.<name>=<value>` on the command line
    with pytest.raises(SystemExit) as exit_info:
        train_main.__wrapped__(cfg)  # the entry point as Hydra calls it
    line = exit_info.value.code
    assert isinstance(line, str) and "\n" not in line  # printed by Python as it exits: code 1
    assert line.startswith(
        f"error: model.{breach.name}={breach.value!r} is not valid for {model_class(breach.model).__name__}: expected "
    ), line
    assert capsys.readouterr().err == ""
    assert list(tmp_path.iterdir()) == []


# the command line of each entry point, run by its real `main`: Hydra's parsing, the check before the run,
# exit_on_user_error and the run folder's removal; in this process (a second or less each), and for one case per
# entry point as a process (a Python start-up each: 5-15 s on 2 busy cores)
CLI_CASES = [
    ("eval", []),
    ("sample", []),
    ("report", []),
    ("sweep_summary", []),
    ("train", ["task_name=a/../../../x"]),
    ("sample", ["task_name=a/b"]),
    ("eval", ["hydra.run.dir={file}/run"]),
    ("report", ["hydra.run.dir={file}"]),
    ("sweep_summary", ["hydra.run.dir={file}/run"]),
    ("train", ["-m", "model.latent_dim=4,8", "hydra.sweep.dir={file}/sweep"]),
    ("train", ["model=vae", "model.latent_dim=0", "hydra.run.dir={file}.run"]),  # a range declared by a family
]
CLI_IDS = [f"{e}:{' '.join(o) or 'nothing'}" for e, o in CLI_CASES]
MAINS = {
    "train": train_main,
    "eval": eval_main,
    "sample": sample_main,
    "report": report_main,
    "sweep_summary": sweep_summary_main,
}
# the case of each entry point run as a process: the last of its kind above (train's: Hydra made the run folder,
# exit_on_user_error removed it)
AS_A_PROCESS = [[case for case in CLI_CASES if case[0] == entry][-1] for entry in ENTRY_POINTS]


def cli_arguments(entry: str, overrides: list[str], a_file: Path, tmp_path: Path) -> list[str]:
    """The command line of a case: Hydra's flags (-m) first, the values an entry point needs, where it would write."""
    overrides = filled(overrides, a_file)
    given = {override.partition("=")[0] for override in overrides}
    required = [] if len(overrides) == 0 else [o for o in REQUIRED[entry] if o.partition("=")[0] not in given]
    where = [f"paths.log_dir={tmp_path / 'outputs'}"] if entry in WITH_TASK_NAME else []  # made or not
    flags = [o for o in overrides if o.startswith("-")]
    return [*flags, *required, *where, *[o for o in overrides if not o.startswith("-")]]


def check_refused_and_nothing_written(result: subprocess.CompletedProcess, a_file: Path, tmp_path: Path) -> None:
    assert result.returncode == 1, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert sorted(tmp_path.iterdir()) == [a_file]  # no run folder here,
    assert not (tmp_path.parent / "x").exists()  # nor above it (task_name=a/../../../x)


@pytest.mark.parametrize(("entry", "overrides"), CLI_CASES, ids=CLI_IDS)
def test_the_command_line_refuses_with_one_line_and_writes_nothing(
    entry: str, overrides: list[str], a_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)  # where `python -m src.<entry>` runs: paths.root_dir is `.`
    before = sorted(ROOT.glob("outputs/**"))
    result = run_main(MAINS[entry], *cli_arguments(entry, overrides, a_file, tmp_path))
    check_refused_and_nothing_written(result, a_file, tmp_path)
    assert sorted(ROOT.glob("outputs/**")) == before


@pytest.mark.slow
@pytest.mark.parametrize(
    ("entry", "overrides"), AS_A_PROCESS, ids=[f"{e}:{' '.join(o) or 'nothing'}" for e, o in AS_A_PROCESS]
)
def test_the_command_line_as_a_process_refuses_with_one_line_and_writes_nothing(
    entry: str, overrides: list[str], a_file: Path, tmp_path: Path
) -> None:
    before = sorted(ROOT.glob("outputs/**"))
    result = run_module(f"src.{entry}", *cli_arguments(entry, overrides, a_file, tmp_path))
    check_refused_and_nothing_written(result, a_file, tmp_path)
    assert sorted(ROOT.glob("outputs/**")) == before


@pytest.mark.parametrize("record", ["hydra: [unclosed", "just text", "monitor: {}\n"])
def test_a_damaged_sweep_record_is_one_line(tmp_path: Path, record: str) -> None:
    from genlab.sweep_summary import read_sweep

    (tmp_path / "multirun.yaml").write_text(record)
    with pytest.raises(ConfigError, match=rf"^{tmp_path / 'multirun.yaml'}: not the record Hydra writes of a sweep"):
        read_sweep(tmp_path, None)
