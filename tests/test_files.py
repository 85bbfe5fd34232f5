"""What genlab may write, read and remove in a run or sweep folder (genlab/utils/files.py, genlab/utils/run_folder.py),
as matrices run in this process through the entry points' real `main`:

- every writer x {a link to a file outside, a link to a folder outside, a FIFO, a user's folder} in its target's place,
  and a full disk while it writes: one `error:` line naming the file (or, for Lightning's CSV log, the log written
  beside it), the outside file and folder and the planted thing as they were, no temporary file left;
- every reader of a run or sweep folder x {a link to /dev/zero, a FIFO, a huge (sparse) file, a damaged file}: one
  line, or a warning at the top of the report, within seconds and without reading the file whole;
- issue 30 §1: a refused run leaves a folder it did not make as it was, a refused resume leaves its run byte for byte
  as it was, and a foreign SQLite database named as a sweep's storage is refused with its bytes unchanged.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import random
import re
import shutil
import signal
import socket
import stat
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import optuna
import pytest
import yaml

from genlab.errors import FileRefusedError, GenlabError
from genlab.eval import main as eval_main
from genlab.report import main as report_main
from genlab.sample import main as sample_main
from genlab.sweep_summary import main as sweep_summary_main
from genlab.train import main as train_main
from genlab.utils import run_folder
from genlab.utils.files import (
    MiB,
    check_replaceable,
    read_bytes,
    replaced_atomically,
    write_bytes_atomically,
    write_text_atomically,
)
from hydra_plugins.genlab_optuna_sweeper.optuna_sweeper import write_record
from tests.helpers import run_main, write_mnist_raw

QUIET = [
    "trainer.accelerator=cpu",
    "+trainer.enable_progress_bar=false",
    "+trainer.enable_model_summary=false",
    "~callbacks.rich_progress_bar",
    "extras.print_config=false",
    "test=false",
]
# a GPT of one small block, two steps on a small text, validated (and sampled) at the second
GPT = [
    "model=gpt",
    "data=shakespeare",
    "data.md5=null",
    "data.block_size=16",
    "data.batch_size=8",
    "data.num_val_windows=16",
    "model.n_layer=1",
    "model.n_head=2",
    "model.n_embd=16",
    "model.sample_length=8",
    "model.warmup_steps=1",
    "trainer.max_epochs=-1",
    "trainer.max_steps=2",
    "+trainer.val_check_interval=2",
    "trainer.limit_val_batches=1",
    *QUIET,
]
IMAGES = [
    "data=mnist",
    "data.val_size=50",
    "data.batch_size=25",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    *QUIET,
]


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small data, a GPT run, a VAE run, a grid sweep's folder and an Optuna sweep's, made once."""
    root = tmp_path_factory.mktemp("made")
    write_mnist_raw(root / "data" / "MNIST" / "raw", num_train=200, num_test=50)
    words = ["to", "be", "or", "not", "that", "is", "the", "question", "whether", "tis", "nobler"]
    rng = random.Random(0)
    text = "\n".join(" ".join(rng.choice(words) for _ in range(8)) for _ in range(400))
    (root / "data" / "tinyshakespeare").mkdir(parents=True)
    (root / "data" / "tinyshakespeare" / "input.txt").write_text(text)
    data = f"paths.data_dir={root / 'data'}"
    for name, overrides in (("gpt", GPT), ("vae", ["model=vae", *IMAGES])):
        result = run_main(train_main, *overrides, data, f"hydra.run.dir={root / name}")
        assert result.returncode == 0, result.stderr[-3000:]

    grid = root / "grid"  # what Hydra's basic sweeper leaves: its record, and a folder per job
    for job, loss in enumerate((1.5, 1.25)):
        (grid / str(job) / ".hydra").mkdir(parents=True)
        (grid / str(job) / ".hydra" / "overrides.yaml").write_text(f"- model.lr={job + 1}e-3\n")
        (grid / str(job) / "metrics.json").write_text(f'{{"val/loss": {loss}}}\n')
    (grid / "2" / ".hydra").mkdir(parents=True)  # a job that failed, and said why
    (grid / "2" / ".hydra" / "overrides.yaml").write_text("- model.lr=3e-3\n")
    (grid / "2" / "config.yaml").write_text("task_name: gpt\n")
    (grid / "2" / run_folder.ERROR).write_text("model.lr=3e-3 is not valid\n")
    record = {"task_name": "gpt", "monitor": {"metric": "val/loss", "mode": "min"}, "hydra": {"sweeper": {}}}
    (grid / run_folder.MULTIRUN).write_text(yaml.safe_dump(record))

    study_dir = root / "optuna"  # an Optuna sweep's folder, its study in <sweep>/optuna.db
    study_dir.mkdir()
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{study_dir / 'optuna.db'}")
    lr = optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)
    for value, rate in ((2.0, 1e-3), (1.0, 2e-3), (1.5, 3e-3)):
        study.add_trial(
            optuna.trial.create_trial(params={"model.lr": rate}, distributions={"model.lr": lr}, value=value)
        )
    record = {**record, "hydra": {"sweeper": {"study_name": "s", "direction": "minimize"}}}
    (study_dir / run_folder.MULTIRUN).write_text(yaml.safe_dump(record))
    return {
        "root": root,
        "data": root / "data",
        "gpt": root / "gpt",
        "vae": root / "vae",
        "grid": grid,
        "optuna": study_dir,
    }


def copy(source: Path, folder: Path, curves: bool = False) -> None:
    """A copy of a run or sweep folder, links kept as links; without its CSV log unless `curves` (drawing the curves
    is most of the time src.report takes, and only the CSV's own cases need them)."""
    shutil.copytree(source, folder, symlinks=True, ignore=None if curves else shutil.ignore_patterns("csv"))


def finished(argv: list[str], returncode: int, stderr: str) -> subprocess.CompletedProcess:
    return subprocess.CompletedProcess(argv, returncode, "", stderr)


def as_entry_point(write: Callable[[], None]) -> subprocess.CompletedProcess:
    """A writer called directly, its refusal as an entry point would print it."""
    try:
        write()
    except GenlabError as err:
        return finished([], 1, f"error: {err}\n")
    except SystemExit as exit_info:
        return finished([], 1, f"{exit_info.code}\n")
    return finished([], 0, "")


# --- every writer ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Writer:
    name: str
    target: str  # where it writes, relative to the folder it is given
    write: Callable[[Path, dict[str, Path]], subprocess.CompletedProcess]  # (folder, made) -> how it ended
    base: str | None = None  # the folder of `made` it writes into (copied first); None: a new folder of the user's
    beside: bool = False  # Lightning's CSV log: a folder in its place stays, the log goes into a folder of its own
    trains: bool = False  # trains a model to get to its write

    def __str__(self) -> str:
        return self.name


def train_gpt(*extra: str) -> Callable[[Path, dict[str, Path]], subprocess.CompletedProcess]:
    def write(folder: Path, made: dict[str, Path]) -> subprocess.CompletedProcess:
        return run_main(train_main, *GPT, *extra, f"paths.data_dir={made['data']}", f"hydra.run.dir={folder}")

    return write


def train_vae(folder: Path, made: dict[str, Path]) -> subprocess.CompletedProcess:
    return run_main(train_main, "model=vae", *IMAGES, f"paths.data_dir={made['data']}", f"hydra.run.dir={folder}")


def evaluate(folder: Path, made: dict[str, Path]) -> subprocess.CompletedProcess:
    checkpoint = run_folder.last_checkpoint(made["gpt"])
    return run_main(eval_main, f"ckpt_path={checkpoint}", f"paths.data_dir={made['data']}", f"hydra.run.dir={folder}")


def sample(model: str) -> Callable[[Path, dict[str, Path]], subprocess.CompletedProcess]:
    def write(folder: Path, made: dict[str, Path]) -> subprocess.CompletedProcess:
        checkpoint = run_folder.last_checkpoint(made[model])
        options = ["num_samples=4", "max_new_tokens=8"]
        return run_main(sample_main, f"ckpt_path={checkpoint}", *options, f"hydra.run.dir={folder}")

    return write


def report(folder: Path, made: dict[str, Path]) -> subprocess.CompletedProcess:
    return run_main(report_main, f"run_dir={folder}")


def summarise(folder: Path, made: dict[str, Path]) -> subprocess.CompletedProcess:
    return run_main(sweep_summary_main, f"sweep_dir={folder}")


WRITERS = [
    Writer("checkpoint", "checkpoints/last.ckpt", train_gpt(), trains=True),
    Writer("metrics.json of src.train", "metrics.json", train_gpt(), trains=True),
    Writer("config.yaml", "config.yaml", train_gpt(), trains=True),
    Writer("config_tree.log", "config_tree.log", train_gpt("extras.print_config=full"), trains=True),
    Writer("text sample", "samples/step_000002.txt", train_gpt(), trains=True),
    Writer("picture", "images/samples_epoch000.png", train_vae, trains=True),
    Writer("run lock", run_folder.LOCK, train_gpt(), trains=True),
    Writer("CSV log (Lightning's)", "csv/metrics.csv", train_gpt(), beside=True, trains=True),
    Writer("metrics.json of src.eval", "metrics.json", evaluate),
    Writer("samples.txt", "samples.txt", sample("gpt")),
    Writer("samples.png", "samples.png", sample("vae")),
    Writer("report.html", "report.html", report, base="gpt"),
    Writer("summary.csv", "summary.csv", summarise, base="grid"),
    Writer("summary.png", "summary.png", summarise, base="grid"),
    Writer("Optuna's plot", "optuna_history.png", summarise, base="optuna"),
    Writer("error.txt", "error.txt", lambda f, m: as_entry_point(lambda: run_folder.write_error(f, "it failed"))),
    Writer(
        "multirun.yaml",
        "multirun.yaml",
        lambda f, m: as_entry_point(lambda: write_record(f / run_folder.MULTIRUN, yaml.safe_load("{a: 1}"))),
    ),
]
PLANTED = ["link to a file outside", "link to a folder outside", "FIFO", "a user's folder"]
PRECIOUS = b"the user's own bytes\n"


def plant(case: str, target: Path, outside: Path) -> Callable[[], object]:
    """Put the case's thing in `target`'s place; return what tells it is still there, as it was."""
    target.parent.mkdir(parents=True, exist_ok=True)
    outside.mkdir()
    (outside / "precious").write_bytes(PRECIOUS)
    (outside / "folder").mkdir()
    (outside / "folder" / "kept").write_bytes(PRECIOUS)
    if case == "link to a file outside":
        target.symlink_to(outside / "precious")
    elif case == "link to a folder outside":
        target.symlink_to(outside / "folder")
    elif case == "FIFO":
        os.mkfifo(target)
    elif case == "a user's folder":
        target.mkdir()
        (target / "kept").write_bytes(PRECIOUS)

    def state() -> object:
        mode = os.lstat(target).st_mode
        inside = sorted((p.name, p.read_bytes()) for p in target.iterdir()) if stat.S_ISDIR(mode) else None
        link = os.readlink(target) if stat.S_ISLNK(mode) else None
        return stat.S_IFMT(mode), link, inside, sorted((p.name, p.is_file()) for p in outside.rglob("*"))

    return state


class FillingUp:
    """A file on a disk that fills up after its first `room` bytes: the write that goes past them fails, as on a
    real disk (torch's zip writer then raises a RuntimeError of its own), and so does the sync of a smaller file."""

    def __init__(self, file: IO, room: int = 1024) -> None:
        self.file, self.room = file, room

    def write(self, data: str | bytes) -> int:
        self.room -= len(data)
        if self.room < 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.file.write(data)

    def __getattr__(self, name: str) -> object:  # flush, tell, seek, fileno, close: the file's own
        return getattr(self.file, name)

    def __enter__(self) -> FillingUp:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.file.close()


@contextlib.contextmanager
def full_disk(target: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The disk fills up while `target` is written: genlab's writer finds out in a write of its temporary file (or,
    for a file of a few bytes, when it syncs it, as network file systems say it), Lightning's CSV log when it opens
    its file."""
    real_fsync, real_open = os.fsync, open

    def temporary_of_target(descriptor: int) -> bool:
        name = os.path.basename(os.readlink(f"/proc/self/fd/{descriptor}"))
        return name.startswith(f".{target.name}.") and name.endswith(".tmp")

    def fsync(descriptor: int) -> None:
        if temporary_of_target(descriptor):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(descriptor)

    def opened(file, mode="r", *args, **kwargs):
        if isinstance(file, int) and temporary_of_target(file):  # genlab's writer opens its temporary file so
            return FillingUp(real_open(file, mode, *args, **kwargs))
        if isinstance(file, (str, Path)) and Path(file) == target and set(mode) & set("wa"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(file))  # Lightning's, through fsspec
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr("builtins.open", opened)
    yield
    monkeypatch.undo()


def check_one_line(result: subprocess.CompletedProcess, naming: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    assert naming in lines[0], lines[0]


def no_temporary_files(folder: Path) -> None:
    assert not [p for p in folder.rglob("*") if p.name.endswith(".tmp") or p.name.endswith(".partial")]


def writer_cases() -> list:
    """Each writer with each case; those that train a model to get to their write are integration tests (in this
    process, 3-5 s each), but for a link or a FIFO in a run folder that exists already: refused before anything."""
    return [
        pytest.param(
            writer,
            case,
            id=f"{writer}-{case}",
            marks=[pytest.mark.integration] if writer.trains and case in ("a user's folder", "full disk") else [],
        )
        for writer in WRITERS
        for case in [*PLANTED, "full disk"]
        if not (writer.name == "run lock" and case == "full disk")  # the lock writes no byte
    ]


@pytest.mark.parametrize(("writer", "case"), writer_cases())
def test_every_writer_refuses_in_one_line_and_touches_nothing_it_did_not_make(
    writer: Writer, case: str, made: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "folder"
    if writer.base is not None:
        copy(made[writer.base], folder)
    target = folder / writer.target
    if case == "full disk":
        previous = target.read_bytes() if target.is_file() else None
        with full_disk(target, monkeypatch):
            result = writer.write(folder, made)
        check_one_line(result, "No space left on device")
        assert str(target) in result.stderr
        assert (target.read_bytes() if target.is_file() else None) == previous
    else:
        state = plant(case, target, tmp_path / "outside")
        before = state()
        result = writer.write(folder, made)
        if writer.beside and case == "a user's folder":  # the log went into csv/from_step_0/, beside it
            assert result.returncode == 0, result.stderr[-3000:]
            assert (folder / "csv" / "from_step_0" / "metrics.csv").is_file()
        else:
            check_one_line(result, str(target))
        assert state() == before
        assert (tmp_path / "outside" / "precious").read_bytes() == PRECIOUS
    no_temporary_files(folder)


def test_a_writer_leaves_the_previous_file_whole_and_nothing_beside_it(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    write_text_atomically(path, '{"val/loss": 1.0}\n')
    write_text_atomically(path, '{"val/loss": 0.5}\n')
    assert path.read_text() == '{"val/loss": 0.5}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    with pytest.raises(FileRefusedError, match="could not write .*metrics.json: No space left"):
        with replaced_atomically(path) as file:
            file.write('{"val/lo')  # the disk fills up here
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert path.read_text() == '{"val/loss": 0.5}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_a_writer_never_goes_through_a_link_in_place_of_its_folder(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoints").symlink_to(tmp_path / "elsewhere")  # planted in a copied run folder
    with pytest.raises(FileRefusedError, match=r"its folder .*/run/checkpoints is a link to .*elsewhere; never"):
        write_text_atomically(tmp_path / "run" / "checkpoints" / "last.ckpt", "x")
    assert list((tmp_path / "elsewhere").iterdir()) == []


@pytest.mark.parametrize("name", [".hydra", ".hydra/overrides.yaml", "train.log"])
def test_hydra_never_writes_through_a_link_in_a_run_folder_that_exists(tmp_path: Path, name: str) -> None:
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (tmp_path / "precious").write_bytes(PRECIOUS)
    if name == ".hydra":
        (run / ".hydra").rmdir()
    (run / name).symlink_to(tmp_path / "precious")
    result = run_main(train_main, f"hydra.run.dir={run}", "model.latent_dim=0")
    check_one_line(result, f"hydra.run.dir={run}: {run / name} is a link to {tmp_path / 'precious'}")
    assert (tmp_path / "precious").read_bytes() == PRECIOUS


# --- every reader of a run or sweep folder -----------------------------------------------------------------------


@dataclass(frozen=True)
class Reader:
    name: str
    source: str  # the folder of `made` it reads (copied first)
    target: str  # the file, relative to that folder
    read: Callable[[Path], subprocess.CompletedProcess]
    damaged: bytes
    warns: bool = False  # the report can do without it: a warning on its page, not a refusal

    def __str__(self) -> str:
        return self.name


def read_overrides_as_resume(folder: Path) -> subprocess.CompletedProcess:
    return as_entry_point(lambda: run_folder.read_overrides(folder))


def report_of(folder: Path) -> subprocess.CompletedProcess:
    return run_main(report_main, f"run_dir={folder}")


def summary_of(folder: Path) -> subprocess.CompletedProcess:
    return run_main(sweep_summary_main, f"sweep_dir={folder}")


READERS = [
    Reader("report: metrics.json", "gpt", "metrics.json", report_of, b"{not json"),
    Reader("report: overrides.yaml", "gpt", ".hydra/overrides.yaml", report_of, b"[model=gpt\n"),
    Reader("report: CSV log", "gpt", "csv/metrics.csv", report_of, b"step,val/loss\n1,abc\n"),
    Reader("report: config.yaml", "gpt", "config.yaml", report_of, b"task_name: [gpt\n", warns=True),
    Reader("report: text sample", "gpt", "samples/step_000002.txt", report_of, b"to be \xe2\x80", warns=True),
    Reader("report: picture", "vae", "images/samples_epoch000.png", report_of, b"<html>", warns=True),
    Reader("report of a sweep: error.txt", "grid", "2/error.txt", report_of, b"\xff\xfe", warns=True),
    Reader("summary: a job's error.txt", "grid", "2/error.txt", summary_of, b"\xff\xfe"),
    Reader("summary: multirun.yaml", "grid", run_folder.MULTIRUN, summary_of, b"{{"),
    Reader("summary: a job's metrics.json", "grid", "1/metrics.json", summary_of, b"[1, 2]"),
    Reader("summary: a job's overrides.yaml", "grid", "1/.hydra/overrides.yaml", summary_of, b"{a: 1}"),
    Reader("summary: the study's database", "optuna", "optuna.db", summary_of, b"SQLite format 2\0" * 64),
    Reader("ckpt_path=last: overrides.yaml", "gpt", ".hydra/overrides.yaml", read_overrides_as_resume, b"- [a\n"),
]
READ_CASES = ["link to /dev/zero", "FIFO", "huge file", "damaged file"]


class StillReading(BaseException):
    """Raised into a reader that has not returned in time: no `except Exception` (nor OSError) of genlab's or Hydra's
    can take it for a file that could not be read."""


@contextlib.contextmanager
def within(seconds: int) -> Iterator[None]:
    """Fail, rather than wait for ever, if the block does not end in `seconds` (a reader blocked on a FIFO)."""

    def too_long(signum: int, frame: object) -> None:
        raise StillReading(f"still reading after {seconds} s")

    previous = signal.signal(signal.SIGALRM, too_long)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("case", READ_CASES)
@pytest.mark.parametrize("reader", READERS, ids=str)
def test_every_reader_refuses_or_warns_in_bounded_time_and_memory(
    reader: Reader, case: str, made: dict[str, Path], tmp_path: Path
) -> None:
    folder = tmp_path / reader.source
    copy(made[reader.source], folder, curves=reader.target.startswith("csv/"))
    target = folder / reader.target
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    if case == "link to /dev/zero":
        target.symlink_to("/dev/zero")
    elif case == "FIFO":
        os.mkfifo(target)
    elif case == "huge file":
        with open(target, "wb") as file:
            file.truncate(64 * 2**30)  # 64 GiB, sparse: no byte of it is on the disk
    else:
        target.write_bytes(reader.damaged)
    with within(30):
        result = reader.read(folder)
    if reader.target.endswith("error.txt") and case == "damaged file":
        assert result.returncode == 0, result.stderr  # shown as the job's note, bytes that are not UTF-8 as U+FFFD
    elif reader.warns:
        assert result.returncode == 0, result.stderr[-3000:]
        page = (folder / "report.html").read_text()
        warning = re.search(r'<div id="warnings">.*?</div>', page, re.S)
        assert warning and str(target) in warning.group(0), page[:3000]
    else:
        check_one_line(result, str(target))
    kind = {"link to /dev/zero": stat.S_ISLNK, "FIFO": stat.S_ISFIFO}.get(case, stat.S_ISREG)
    assert kind(os.lstat(target).st_mode)  # read, never replaced nor removed


def test_ckpt_path_last_skips_a_run_whose_record_cannot_be_read(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    task = tmp_path / "train"
    for name, record in (("good", "- model.lr=1\n- trainer.max_steps=5\n"), ("damaged", "[model.lr=1"), ("zero", None)):
        run = task / "runs" / name
        (run / ".hydra").mkdir(parents=True)
        run_folder.last_checkpoint(run).parent.mkdir()
        run_folder.last_checkpoint(run).write_bytes(b"weights")
        if record is None:
            (run / run_folder.OVERRIDES).symlink_to("/dev/zero")
        else:
            (run / run_folder.OVERRIDES).write_text(record)
    good = run_folder.last_checkpoint(task / "runs" / "good")
    assert run_folder.earlier_runs(task, ["trainer.max_steps=10", "model.lr=1"]) == [good]  # longer: the same run
    assert run_folder.earlier_runs(task, []) == []  # a record that cannot be read is no run without overrides
    assert "damaged/.hydra/overrides.yaml: not the YAML that Hydra writes" in caplog.text
    assert "zero/.hydra/overrides.yaml: a link (to /dev/zero)" in caplog.text


def test_a_bounded_read_refuses_what_is_not_a_regular_file_within_its_limit(tmp_path: Path) -> None:
    (tmp_path / "small").write_bytes(b"12345")
    assert read_bytes(tmp_path / "small", 5) == b"12345"
    with pytest.raises(FileRefusedError, match=r"small: 5 bytes, more than the 4 bytes genlab reads of it"):
        read_bytes(tmp_path / "small", 4)
    (tmp_path / "zero").symlink_to("/dev/zero")
    with pytest.raises(FileRefusedError, match=r"refused to read .*zero: a link \(to /dev/zero\)"):
        read_bytes(tmp_path / "zero", 4)
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(FileRefusedError, match=r"fifo: it is a FIFO, not a regular file"), within(10):
        read_bytes(tmp_path / "fifo", 4)
    with pytest.raises(FileNotFoundError):
        read_bytes(tmp_path / "absent", 4)


# --- issue 30 §1: what a refused run may remove, and a refused resume ---------------------------------------------


def contents(folder: Path) -> dict[str, str]:
    """Every path below `folder` and its bytes' hash ("folder", "link to ..."): what byte-identical compares."""
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            found[str(path.relative_to(folder))] = f"link to {os.readlink(path)}"
        elif path.is_dir():
            found[str(path.relative_to(folder))] = "folder"
        else:
            found[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def test_a_refused_run_leaves_a_folder_it_did_not_make_as_it_was(
    made: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # mkdir -p P/csv/old P/wandb/offline-run-1 && echo logs > P/csv/old/metrics.csv &&
    # python -m src.train paths.output_dir=$PWD/P model.latent_dim=0
    monkeypatch.chdir(tmp_path)
    (tmp_path / "P" / "csv" / "old").mkdir(parents=True)
    (tmp_path / "P" / "wandb" / "offline-run-1").mkdir(parents=True)
    (tmp_path / "P" / "csv" / "old" / "metrics.csv").write_text("logs\n")
    before = contents(tmp_path / "P")
    result = run_main(train_main, f"paths.output_dir={tmp_path / 'P'}", "model.latent_dim=0")
    check_one_line(result, "model.latent_dim=0 is not valid for Autoencoder")
    assert contents(tmp_path / "P") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["P"]  # Hydra's own run folder (outputs/...) is gone
    # refused once the run has begun writing there: its lock, its CSV log (beside the user's), its logger's files
    data = [f"paths.data_dir={made['data']}", f"paths.cache_dir={made['data'].parent / 'cache'}"]  # the ids kept there
    result = run_main(train_main, *GPT, *data, f"paths.output_dir={tmp_path / 'P'}", "monitor.metric=val/nope")
    check_one_line(result, "monitor.metric='val/nope' is never logged by GPT")
    assert contents(tmp_path / "P") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["P"]


def test_a_refused_run_removes_what_it_made_and_only_that(tmp_path: Path) -> None:
    user = tmp_path / "user"
    (user / "csv").mkdir(parents=True)
    (user / "csv" / "notes.txt").write_text("mine\n")
    new = tmp_path / "new" / "deeper"
    for folder in (user, new):
        run_folder.claim(folder)
    for folder in (user, new):
        (folder / "csv" / "version_0").mkdir(parents=True)
        (folder / "csv" / "version_0" / "hparams.yaml").write_text("{}\n")
        (folder / "config.yaml").write_text("{}\n")
    run_folder.discard_unfinished()
    assert contents(user) == {"csv": "folder", "csv/notes.txt": contents(user)["csv/notes.txt"]}
    assert not (tmp_path / "new").exists()  # made by the run, with the folder above it
    # a run that made results keeps them all
    run = tmp_path / "run"
    run_folder.claim(run)
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"weights")
    run_folder.discard_unfinished()
    assert (run / "checkpoints" / "last.ckpt").read_bytes() == b"weights"


@pytest.mark.integration  # trains a GPT (in this process), then resumes it three ways
def test_a_refused_resume_leaves_its_run_byte_for_byte_as_it_was(made: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(made["gpt"], run, symlinks=True)
    data = f"paths.data_dir={made['data']}"
    resume = f"ckpt_path={run_folder.last_checkpoint(run)}"
    before = contents(run)
    refusals = {  # other model options (found as Lightning restores the weights), another family, a bad setting
        "model.n_embd=32": "the checkpoint does not fit this run's GPT",
        "trainer.max_steps=4 model.lr=-1": "model.lr=-1",
        "trainer.max_steps=4 callbacks.model_checkpoint.mode=sideways": "`mode` can be min, max",
    }
    for overrides, message in refusals.items():
        result = run_main(train_main, *GPT, data, resume, *overrides.split(), f"hydra.run.dir={tmp_path / 'new'}")
        check_one_line(result, message)
        assert contents(run) == before, overrides
        assert not (tmp_path / "new").exists()  # nor does the session's own folder stay


def test_a_foreign_sqlite_database_is_refused_untouched(tmp_path: Path) -> None:
    import sqlite3

    database = tmp_path / "app.db"
    with contextlib.closing(sqlite3.connect(database)) as db:
        db.execute("CREATE TABLE accounts (name TEXT, balance REAL)")
        db.execute("INSERT INTO accounts VALUES ('alice', 10.5)")
        db.commit()
    before = database.read_bytes(), database.stat().st_mtime_ns
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    record = {
        "monitor": {"metric": "val/loss"},
        "hydra": {"sweeper": {"study_name": "s", "storage": f"sqlite:///{database}"}},
    }
    (sweep / run_folder.MULTIRUN).write_text(yaml.safe_dump(record))
    result = run_main(sweep_summary_main, f"sweep_dir={sweep}")
    check_one_line(result, f"{database}: the SQLite database of another application (tables accounts)")
    assert (database.read_bytes(), database.stat().st_mtime_ns) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db", "sweep"]  # no journal, no -shm beside it


def test_an_optuna_database_another_sweep_is_still_making_is_taken_and_a_mixed_one_refused(tmp_path: Path) -> None:
    """Two sweeps started together on a new SQLite study: the second may look while the first's create_all has made
    only some of Optuna's tables. A database caught at any stage of a real Optuna database's making is taken once
    the other sweep has made it whole; one that stays partial (another application's tables of the same names), or
    holds a table of another application beside Optuna's names, is refused."""
    import sqlite3
    import threading

    from hydra_plugins.genlab_optuna_sweeper.storage import OPTUNA_ALL_TABLES, check_storage_file

    made = tmp_path / "made.db"
    optuna.storages.RDBStorage(f"sqlite:///{made}")
    with contextlib.closing(sqlite3.connect(made)) as db:
        schemas = [sql for (sql,) in db.execute("SELECT sql FROM sqlite_master WHERE type = 'table' ORDER BY rowid")]
        names = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY rowid")]
    assert set(names) <= OPTUNA_ALL_TABLES  # a new Optuna table would be taken for a foreign one

    def make(database: Path, statements: list[str]) -> None:
        with contextlib.closing(sqlite3.connect(database)) as db:
            for sql in statements:
                db.execute(sql)
            db.commit()

    for count in (1, len(schemas) // 2, len(schemas) - 1):  # create_all caught after its first, middle, last-but-one
        partial = tmp_path / f"partial-{count}.db"
        make(partial, schemas[:count])
        rest = threading.Timer(0.5, make, (partial, schemas[count:]))  # the other sweep goes on
        rest.start()
        check_storage_file(f"sqlite:///{partial}", settle_s=20)
        rest.join()
    stays_partial = tmp_path / "stays.db"
    make(stays_partial, schemas[:2])
    with pytest.raises(FileRefusedError, match=r"another application .*not made whole within 0.5 s"):
        check_storage_file(f"sqlite:///{stays_partial}", settle_s=0.5)
    make(made, ["CREATE TABLE accounts (name TEXT)"])
    check_storage_file(f"sqlite:///{made}", settle_s=0)  # Optuna's own, with a table of the user's beside
    mixed = tmp_path / "mixed.db"
    make(mixed, ["CREATE TABLE studies (id INTEGER)", "CREATE TABLE accounts (name TEXT)"])
    with pytest.raises(FileRefusedError, match="another application"):
        check_storage_file(f"sqlite:///{mixed}")  # at once: accounts is no table of Optuna's


# --- the messages and the early check (mutation testing: make mutate found these unpinned) ------------------------
def test_check_replaceable_refuses_before_the_work_and_makes_no_folder(tmp_path: Path) -> None:
    """src.eval and src.sample refuse a bad target before their long work: the refusal the write would give at the
    end, naming what is written and where, while an absent folder is left to the write to make."""
    target = tmp_path / "run" / "metrics.json"
    check_replaceable(target, "the metrics")
    assert not target.parent.exists()
    target.parent.mkdir()
    check_replaceable(target, "the metrics")  # absent: written later
    target.write_text("{}")
    check_replaceable(target)  # a regular file: replaced later
    target.unlink()
    target.symlink_to(tmp_path / "outside.json")
    with pytest.raises(FileRefusedError, match=rf"^refused to write the metrics {re.escape(str(target))}: a link \("):
        check_replaceable(target, "the metrics")
    with pytest.raises(FileRefusedError, match=rf"^refused to write {re.escape(str(target))}: a link \("):
        check_replaceable(target)
    target.unlink()
    target.mkdir()
    with pytest.raises(FileRefusedError, match=r": a folder is in its place; genlab replaces only a regular file"):
        check_replaceable(target, "the metrics")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "linked").symlink_to(tmp_path / "elsewhere")
    linked_target = tmp_path / "linked" / "metrics.json"
    with pytest.raises(FileRefusedError, match=rf"^refused to write the metrics {re.escape(str(linked_target))}: its"):
        check_replaceable(linked_target, "the metrics")


@pytest.mark.parametrize(
    ("error", "cause"),
    [
        (OSError("the device went away"), "the device went away"),  # no errno: the message itself
        (OSError(errno.EIO, os.strerror(errno.EIO)), os.strerror(errno.EIO)),
        (OSError(errno.EIO, os.strerror(errno.EIO), "/dev/sdz"), f"{os.strerror(errno.EIO)} (/dev/sdz)"),
    ],
)
def test_a_failed_write_names_its_cause_in_one_line(tmp_path: Path, error: OSError, cause: str) -> None:
    target = tmp_path / "metrics.json"
    expected = f"could not write the metrics {target}: {cause}; the previous one, if any, is unchanged"
    with pytest.raises(FileRefusedError) as refused, replaced_atomically(target, "w", "the metrics"):
        raise error
    assert str(refused.value) == expected


@pytest.mark.parametrize(
    ("size", "limit", "said"),
    [(2_000, 1_000, "2,000 bytes, more than the 1,000 bytes"), (3 * MiB, MiB, "3.0 MiB, more than the 1.0 MiB")],
)
def test_a_file_past_the_readers_limit_is_refused_with_both_sizes(tmp_path: Path, size: int, limit: int, said: str):
    path = tmp_path / "big"
    with open(path, "wb") as file:
        file.truncate(size)  # sparse
    with pytest.raises(FileRefusedError) as refused:
        read_bytes(path, limit)
    assert str(refused.value) == f"refused to read {path}: {said} genlab reads of it"


@pytest.mark.parametrize("what", ["", "the picture"])
def test_a_bytes_writer_names_what_it_writes_when_refused(tmp_path: Path, what: str) -> None:
    target = tmp_path / "grid.png"
    target.mkdir()
    with pytest.raises(FileRefusedError) as refused:
        write_bytes_atomically(target, b"png", *([what] if what else []))
    assert str(refused.value).startswith(f"refused to write {what} {target}: a folder".replace("  ", " ", 1).lstrip())


def test_a_folder_or_a_device_in_a_read_files_place_is_refused_naming_it(tmp_path: Path) -> None:
    (tmp_path / "metrics.json").mkdir()
    for path, kind in [(tmp_path / "metrics.json", "a folder"), (Path("/dev/null"), "a device")]:
        with pytest.raises(FileRefusedError) as refused:
            read_bytes(path, MiB)
        assert str(refused.value) == f"refused to read {path}: it is {kind}, not a regular file"


def test_a_socket_in_a_written_files_place_is_refused_naming_it(tmp_path: Path) -> None:
    target = tmp_path / "metrics.json"
    with socket.socket(socket.AF_UNIX) as listening:
        listening.bind(str(target))
        with pytest.raises(FileRefusedError, match=r"^refused to write the metrics .*: a socket is in its place"):
            check_replaceable(target, "the metrics")


def test_a_link_planted_at_the_temporary_files_name_is_never_opened(tmp_path: Path, monkeypatch) -> None:
    """The temporary name is random; one guessed and planted as a link (here: the guess made certain) is passed over
    for a fresh name, and what it points at is left as it was."""
    names = iter(["00000000", "11111111"])
    monkeypatch.setattr("secrets.token_hex", lambda _: next(names))
    outside = tmp_path / "outside.txt"
    outside.write_text("theirs")
    run = tmp_path / "run"
    run.mkdir()
    (run / ".metrics.json.00000000.tmp").symlink_to(outside)
    write_text_atomically(run / "metrics.json", "ours")
    assert outside.read_text() == "theirs" and (run / "metrics.json").read_text() == "ours"
    assert (run / "metrics.json").is_file() and not (run / "metrics.json").is_symlink()
