"""A run's folder, owned here: its layout, reading it back, and what a run that ends without results may remove.

The layout (`python -m src.train` writes it; src.report, src.sweep_summary and `ckpt_path=last` read it):

    <run>/.hydra/overrides.yaml      the command line's overrides, as Hydra records them
    <run>/config.yaml                the resolved config (and config_tree.log, the same printed)
    <run>/checkpoints/last.ckpt      the latest state, which `ckpt_path=last` resumes (and the best ones beside it)
    <run>/metrics.json               the final metrics, written when the run ends
    <run>/error.txt                  why a sweep's job failed
    <run>/.run.lock                  held while a process trains in the folder

What a failed run may remove: only what this process made. Each folder a run writes into is claimed before anything
is written there (`claim`: Hydra's run folder by the check Hydra runs before it makes it, paths.output_dir by the
entry point before it makes it), which notes what was in it already; `discard_unfinished` removes what was not, and a
folder only when this process made it and it is empty then. Nothing that was in a folder before the run is ever
removed, and nothing is followed through a link.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf

from genlab.errors import ConfigError, FileRefusedError, GenlabError, one_line
from genlab.utils.files import MiB, kind_of, read_bytes, write_text_atomically

log = logging.getLogger(__name__)

HYDRA = ".hydra"
OVERRIDES = f"{HYDRA}/overrides.yaml"
CONFIG = "config.yaml"
CONFIG_TREE = "config_tree.log"
CHECKPOINTS = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"  # Lightning's ModelCheckpoint.CHECKPOINT_NAME_LAST + FILE_EXTENSION (pinned by a test)
METRICS = "metrics.json"
ERROR = "error.txt"
LOCK = ".run.lock"
MULTIRUN = "multirun.yaml"  # a sweep folder's record of its command line, as Hydra's sweepers write it
# what an entry point writes before its work starts: a run folder that holds only these has no results in it
SETUP_FILES = {HYDRA, LOCK, CONFIG, CONFIG_TREE, "csv", "tensorboard", "wandb"}

# the most that is read of each file of a run or sweep folder: far more than genlab writes, far less than memory
SMALL_FILE = 1 * MiB  # overrides.yaml, error.txt
CONFIG_FILE = 16 * MiB  # metrics.json, config.yaml, multirun.yaml


# overrides that leave what a run trains as it was, so that `ckpt_path=last` finds the run across them: how
# long it trains (to train longer is the commonest reason to resume) and how it is shown and logged
NOT_THE_RUN = (
    "ckpt_path=",
    "trainer.max_epochs=",
    "trainer.max_steps=",
    "trainer.max_time=",
    "trainer.min_epochs=",
    "trainer.min_steps=",
    "trainer.log_every_n_steps=",
    "trainer.enable_progress_bar=",
    "extras.",
    "logger",
    "limits.",  # how large a model this machine may build: a run that needed a raised limit is still the run
)


def run_identity(overrides: list[str]) -> list[str]:
    """The command line's overrides that make a run what it is (all but NOT_THE_RUN), sorted."""
    return sorted(override for override in overrides if not override.lstrip("+~").startswith(NOT_THE_RUN))


def last_checkpoint(run: Path) -> Path:
    """Where the run's latest state is: `ckpt_path=last` resumes it."""
    return run / CHECKPOINTS / LAST_CHECKPOINT


def run_of_last_checkpoint(ckpt_path: str | Path) -> Path | None:
    """The run folder whose latest state `ckpt_path` is (`<run>/checkpoints/last.ckpt` of a run Hydra recorded);
    None for any other checkpoint."""
    path = Path(ckpt_path).resolve()
    run = path.parent.parent
    if path == last_checkpoint(run) and (run / HYDRA).is_dir():
        return run
    return None


def earlier_runs(task_dir: Path, overrides: list[str]) -> list[Path]:
    """The last checkpoints of the runs Hydra recorded under `outputs/<task>` (its single runs and its sweeps' jobs)
    with the same run_identity as `overrides`. A run whose record is damaged (hand-edited, a link, too large)
    matches no command line, not even one without overrides, and the log says so."""
    identity = run_identity(overrides)
    found = []
    for record in [*task_dir.glob(f"runs/*/{OVERRIDES}"), *task_dir.glob(f"multiruns/*/*/{OVERRIDES}")]:
        run = record.parent.parent
        if not last_checkpoint(run).is_file():
            continue
        try:
            recorded = read_overrides(run)
        except GenlabError as err:
            log.warning(f"ckpt_path=last: {err}; that run is not resumed")
            continue
        if recorded is not None and run_identity(recorded) == identity:
            found.append(last_checkpoint(run))
    return found


def is_run(folder: Path) -> bool:
    """Whether `folder` is a run's: src.train writes config.yaml at its start and metrics.json at its end."""
    return any(os.path.lexists(folder / name) for name in (CONFIG, METRICS))


def find_runs(folder: Path) -> list[Path]:
    """The run folders at any depth below `folder`, in order (a sweep's jobs by number: 2 before 10); links to
    folders are not followed."""
    runs = []
    for parent, children, _ in os.walk(folder):  # followlinks=False: a link planted in a sweep leads nowhere
        children[:] = [c for c in children if not c.startswith(".")]  # .hydra and the like: never runs
        path = Path(parent)
        if path != folder and is_run(path):
            runs.append(path)
            children.clear()  # runs do not nest: their csv/, images/, checkpoints/ hold none
    return sorted(runs, key=lambda run: [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in run.parts])


def read_metrics(run: Path) -> dict[str, float]:
    """The run's final metrics, {} when it wrote none; a file that is not a JSON object of numbers is refused."""
    path = run / METRICS
    if not os.path.lexists(path):
        return {}
    try:
        metrics = json.loads(read_bytes(path, CONFIG_FILE))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not the JSON that src.train writes ({one_line(err)})") from None
    if not isinstance(metrics, dict) or not all(type(v) in (int, float) for v in metrics.values()):
        raise ConfigError(f"{path}: expected an object of metric names and numbers")
    return metrics


def write_metrics(folder: Path, metrics: dict[str, float]) -> Path:
    path = folder / METRICS
    write_text_atomically(path, json.dumps(metrics, indent=2, sort_keys=True) + "\n", "the metrics")
    return path


def read_overrides(run: Path) -> list[str] | None:
    """The run's command-line overrides, as Hydra recorded them; None without that file (a run composed in Python,
    as the tests do, has none). The one reader: a damaged file is refused (ConfigError), never read as no overrides."""
    path = run / OVERRIDES
    if not os.path.lexists(path):
        return None
    try:
        overrides = yaml.safe_load(read_bytes(path, SMALL_FILE))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not the YAML that Hydra writes ({one_line(err)})") from None
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise ConfigError(f"{path}: expected the list of overrides that Hydra writes (key=value strings)")
    return overrides


def as_params(overrides: list[str]) -> dict[str, str]:
    """{key: value} of overrides; one with no value (`~callbacks.rich_progress_bar`) maps to ""."""
    return {key: value for key, _, value in (override.partition("=") for override in overrides)}


def varying(params: list[dict[str, str]]) -> list[dict[str, str]]:
    """Each run's parameters less those that all runs share (a sweep's fixed overrides): what tells them apart."""
    keys = {key for p in params for key in p}
    differ = {key for key in keys if len({p.get(key) for p in params}) > 1}
    return [{k: v for k, v in p.items() if k in differ} for p in params]


def read_error(run: Path) -> str | None:
    """Why a sweep's job failed, as it wrote it to error.txt; None without that file."""
    path = run / ERROR
    if not os.path.lexists(path):
        return None
    return read_bytes(path, SMALL_FILE).decode(errors="replace").strip()


def write_error(run: Path, message: str) -> None:
    write_text_atomically(run / ERROR, f"{message}\n", "the reason the job failed")


def read_multirun(sweep_dir: Path) -> DictConfig:
    """The record a sweeper keeps of its sweep (its config, with hydra.sweeper and hydra.overrides.task)."""
    path = sweep_dir / MULTIRUN
    try:
        return OmegaConf.load(io.StringIO(read_bytes(path, CONFIG_FILE).decode()))
    except (UnicodeDecodeError, yaml.YAMLError, ValueError) as err:  # damaged, hand-edited; OmegaConf's are ValueErrors
        raise ConfigError(f"{path}: not the record Hydra writes of a sweep ({one_line(err)})") from None


# where another program keeps links of its own in a run folder: W&B's latest-run and debug.log
OTHERS_FOLDERS = {"wandb"}


def check_nothing_planted(folder: Path) -> None:
    """Refuse, in one line, a run folder that exists already (a resumed run's, one the user named) and holds a link,
    a FIFO or a device, or a folder where genlab writes a file. A copied or shared run folder may hold one, and the
    writers that open a file by its name (Lightning's CSV and TensorBoard loggers) would write through it."""
    for parent, children, files in os.walk(folder):
        if parent == str(folder):
            children[:] = [child for child in children if child not in OTHERS_FOLDERS]
        for name in (*children, *files):
            if kind := kind_of(Path(parent) / name):
                raise FileRefusedError(
                    f"{Path(parent) / name} is {kind}: a run folder holds only the files and folders a run writes, "
                    f"and genlab never writes through a link; remove it, or use another folder"
                )
    for name in (CONFIG, CONFIG_TREE, METRICS, ERROR, LOCK):
        if (folder / name).is_dir():
            raise FileRefusedError(f"{folder / name} is a folder: genlab writes a file of that name there")


# --- what this process made, and may remove ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Claim:
    made: tuple[Path, ...]  # the folder and the ancestors this process makes, innermost first; () if it existed
    before: frozenset[str]  # what the folder held before (relative paths), kept whatever happens


_claims: dict[Path, _Claim] = {}  # by absolute path; cleared by `discard_unfinished` and `forget_claims`


def claim(folder: str | Path) -> Path:
    """Note what `folder` holds before this process writes into it (none of which it will ever remove), and which
    of it and its ancestors it will make; the absolute folder. A folder claimed twice keeps its first note."""
    folder = Path(os.path.abspath(folder))
    if folder not in _claims:
        made, missing = [], folder
        while not os.path.lexists(missing) and missing != missing.parent:
            made.append(missing)
            missing = missing.parent
        _claims[folder] = _Claim(tuple(made), frozenset() if made else _contents(folder))
    return folder


def claimed() -> bool:
    return bool(_claims)


def forget_claims() -> None:
    _claims.clear()


def discard_unfinished(also_setup: set[str] = frozenset()) -> None:
    """Remove what this process made in the folders it claimed, where nothing came of the run (it made only what
    every run writes before its work starts: SETUP_FILES, and `also_setup` such as Hydra's log file): its files,
    then the folders it made once they are empty. What was there before stays; a folder with results stays whole.
    """
    for folder, noted in _claims.items():
        if not folder.is_dir() or folder.is_symlink():
            continue
        new = _contents(folder) - noted.before
        if not {relative.split("/")[0] for relative in new} <= SETUP_FILES | set(also_setup):
            continue  # checkpoints, metrics, pictures: the run's results are kept
        for relative in sorted(new, key=lambda name: name.count("/"), reverse=True):  # the deepest first
            path = folder / relative
            with contextlib.suppress(OSError):  # a folder that holds something this process did not make stays
                if path.is_dir() and not path.is_symlink():
                    os.rmdir(path)
                else:
                    os.unlink(path)
        for made in noted.made:
            try:
                os.rmdir(made)
            except OSError:  # not empty: it holds what someone else put there meanwhile
                break
    _claims.clear()


def _contents(folder: Path) -> frozenset[str]:
    """Every path below `folder`, relative to it; links are listed, never followed."""
    found = set()
    for parent, children, files in os.walk(folder):
        relative = os.path.relpath(parent, folder)
        for name in (*children, *files):
            found.add(name if relative == "." else f"{relative}/{name}")
    return frozenset(found)
