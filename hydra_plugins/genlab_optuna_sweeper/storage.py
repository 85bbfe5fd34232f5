"""Where a study lives, and how trials whose process is gone are found: Optuna's storages with heartbeats.

A storage is named as Optuna's own command line names it (`optuna --storage`): a database URL
(`sqlite:///...`, `postgresql://...`, `mysql+pymysql://...`) or the path of a journal file. Every trial
that runs records a heartbeat; a RUNNING trial without one for `grace_period` seconds is failed (its
process is gone: killed, its machine down) and queued again with the same parameters, by whichever
sweep process looks next (`optuna.storages.fail_stale_trials`). A live trial keeps beating and is
never failed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from urllib.parse import quote

import optuna
import sqlalchemy
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback

# Optuna's heartbeat interface. Its module is private because RDBStorage is the only storage that
# implements it; journal storages have none in Optuna 5.0 (optuna/optuna#6615): JournalHeartbeatStorage
# adds one. This import can go when JournalStorage takes heartbeat_interval itself.
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from genlab.errors import FileRefusedError, one_line, without_passwords
from genlab.utils.files import MiB

log = logging.getLogger(__name__)

HEARTBEAT_ATTR = "genlab:heartbeat"  # a journal trial's last heartbeat, seconds since the epoch


def is_url(spec: str) -> bool:
    return "://" in spec


def shown(spec: str) -> str:
    """The storage for a log line or an error: a database URL without its password (also one that cannot be
    parsed)."""
    return without_passwords(spec)


def resolve_storage(storage: str | None, sweep_dir: Path) -> str:
    """The storage as every process and job of the sweep names it: an absolute SQLite or journal path; one line
    (its password hidden) for a URL that names no database."""
    if storage is None:
        return f"sqlite:///{sweep_dir / 'optuna.db'}"
    if not is_url(storage):  # a journal file
        return str(Path(storage).expanduser().resolve())
    try:
        url = sqlalchemy.engine.make_url(storage)
    except (sqlalchemy.exc.ArgumentError, ValueError) as err:  # SQLAlchemy reads the port with int()
        raise SystemExit(
            f"error: hydra.sweeper.storage={shown(storage)}: not a database URL ({one_line(err)})"
        ) from None
    if url.port is not None and not 0 < url.port < 2**16:
        raise SystemExit(
            f"error: hydra.sweeper.storage={shown(storage)}: port {url.port} is not a port number (1 to 65535)"
        )
    if url.drivername.startswith("sqlite"):
        if not url.database or url.database == ":memory:":
            raise SystemExit(
                f"error: hydra.sweeper.storage={shown(storage)}: an in-memory SQLite database is not shared "
                f"with the jobs; give a file (sqlite:///path/to/study.db)"
            )
        url = url.set(database=str(Path(url.database).expanduser().resolve()))
        return url.render_as_string(hide_password=False)
    return storage


def open_storage(
    spec: str | None,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    on_stale_trial: Callable[[optuna.Study, FrozenTrial], None] | None = None,
) -> optuna.storages.BaseStorage | None:
    """The storage `spec` names (a database URL or a journal file's path), with heartbeats if an interval is given.

    Also a job's pruning callback's storage (conf/hparams_search/optuna.yaml), without heartbeats: the
    sweeper beats for its trials.
    """
    if spec is None:  # outside a sweep: no study to report to
        return None
    check_storage_file(spec)
    if not is_url(spec):
        Path(spec).parent.mkdir(parents=True, exist_ok=True)
        return JournalHeartbeatStorage(JournalFileBackend(spec), heartbeat_interval, grace_period, on_stale_trial)
    # SQLite waits for a lock 5 s by default: several sweep processes writing heartbeats and trials at once can
    # take longer than that on a loaded machine, and "database is locked" would end a sweep
    engine_kwargs = {"connect_args": {"timeout": 60}} if spec.startswith("sqlite") else {}
    with warnings.catch_warnings():  # heartbeats are experimental in Optuna (since 2.9, documented in its FAQ)
        warnings.simplefilter("ignore", ExperimentalWarning)
        for attempt in range(3):
            try:
                return RDBStorage(
                    spec,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=heartbeat_interval,
                    grace_period=grace_period,
                    heartbeat_stale_trial_callback=on_stale_trial,
                )
            except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.IntegrityError):
                # two sweeps that start together on a new database both create its tables and version row (SQLAlchemy's
                # create_all checks, then creates): the one that loses the race finds them on its next try
                if attempt == 2:
                    raise
                time.sleep(1.0)
    raise AssertionError("unreachable")


# tables that every Optuna database has (optuna/storages/_rdb/models.py), however old
OPTUNA_TABLES = {"studies", "trials", "version_info"}
# every table Optuna 5 makes, and Alembic's of an upgraded one: a database holding only some of them may be one that
# a sweep started beside this one is still making (create_all makes them one by one); it is taken once whole
OPTUNA_ALL_TABLES = OPTUNA_TABLES | {
    "alembic_version",
    "study_directions",
    "study_system_attributes",
    "study_user_attributes",
    "trial_heartbeats",
    "trial_intermediate_values",
    "trial_params",
    "trial_system_attributes",
    "trial_user_attributes",
    "trial_values",
}
# how long a database that holds some of Optuna's tables, or is being written, is given to become a whole Optuna
# database (another sweep's create_all takes well under a second)
SETTLE_S = 10.0
SQLITE_HEADER = b"SQLite format 3\x00"


def check_storage_file(spec: str, settle_s: float = SETTLE_S) -> None:
    """Refuse, in one line, a storage file that is there and is not Optuna's: Optuna would create its tables inside
    another application's SQLite database, or append its records to any file named as a journal. The file is only
    read to tell (SQLite opened read-only and immutable: not a byte of it changes). A file not there is new: Optuna
    makes it. An SQLite database with only some of Optuna's tables, or one caught half-written, is looked at again
    for `settle_s`: a sweep started beside this one may be making it."""
    if is_url(spec):
        url = sqlalchemy.engine.make_url(spec)
        if not url.drivername.startswith("sqlite") or not url.database or url.database == ":memory:":
            return  # a database server's: its administrator's to keep apart
        path, kind = Path(url.database), "SQLite database"
    else:
        path, kind = Path(spec), "journal file"
    if not path.exists():
        return
    if not path.is_file():
        raise FileRefusedError(f"{shown(spec)}: not a file; an Optuna storage is a {kind} (or a database URL)")
    if path.stat().st_size == 0:
        return  # empty: as good as new
    if kind == "journal file":
        with open(path, "rb") as file:
            first = file.readline(MiB)
        try:
            record = json.loads(first)
        except ValueError:
            record = None
        if not isinstance(record, dict) or "op_code" not in record:
            raise FileRefusedError(
                f"{path}: not an Optuna journal (its first line is no Optuna record); genlab appends only to Optuna's "
                f"own: name a new file, or Optuna's"
            )
        return
    deadline = time.monotonic() + settle_s
    while True:
        try:
            with contextlib.closing(sqlite3.connect(f"file:{quote(str(path))}?mode=ro&immutable=1", uri=True)) as db:
                tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError as err:
            with open(path, "rb") as file:
                is_sqlite = file.read(len(SQLITE_HEADER)) == SQLITE_HEADER
            if is_sqlite and time.monotonic() < deadline:  # caught while another sweep writes it
                time.sleep(0.25)
                continue
            raise FileRefusedError(
                f"{path}: not an SQLite database ({one_line(err)}); name a new file, or Optuna's"
            ) from None
        if not tables or OPTUNA_TABLES <= tables:
            return
        if tables <= OPTUNA_ALL_TABLES and time.monotonic() < deadline:  # being made by another sweep
            time.sleep(0.25)
            continue
        shown_tables = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
        made = f" (not made whole within {settle_s:g} s)" if tables <= OPTUNA_ALL_TABLES else ""
        raise FileRefusedError(
            f"{path}: the SQLite database of another application (tables {shown_tables}){made}, not an Optuna "
            f"study's; genlab leaves it untouched: name a new file, or Optuna's"
        )


class JournalHeartbeatStorage(JournalStorage, BaseHeartbeat):
    """Optuna's journal storage with the heartbeat RDBStorage has: a trial's last heartbeat is a system attribute.

    Heartbeats are compared with this machine's clock: machines that share a journal file keep their clocks
    in step (NTP), as they must for the file's own lock. A trial that never beat counts from its start.
    """

    def __init__(
        self,
        backend: JournalFileBackend,
        heartbeat_interval: int | None,
        grace_period: int | None,
        on_stale_trial: Callable[[optuna.Study, FrozenTrial], None] | None,
    ) -> None:
        super().__init__(backend)
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period or (2 * heartbeat_interval if heartbeat_interval else None)
        self.on_stale_trial = on_stale_trial

    def record_heartbeat(self, trial_id: int) -> None:
        with contextlib.suppress(UpdateFinishedTrialError):  # it ended while this beat was on its way
            self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        running = self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
        last_beats = {t._trial_id: t.system_attrs.get(HEARTBEAT_ATTR, t.datetime_start.timestamp()) for t in running}
        return [trial_id for trial_id, last_beat in last_beats.items() if now - last_beat > self.grace_period]

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        return self.on_stale_trial


class RetryStaleTrial:
    """Optuna's RetryHeartbeatStaleTrialCallback, that also says why the trial failed: a finished trial takes no
    attribute, so the reason goes to the study's user attributes (`error of trial <n>`)."""

    def __init__(self, grace_period: int, max_retry: int | None) -> None:
        self.grace_period = grace_period
        self.max_retry = max_retry
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            self.retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        retried = self.max_retry is None or len(trial.system_attrs.get("retry_history", [])) < self.max_retry
        queued = "queued again with the same parameters" if retried else f"max_retry={self.max_retry} reached"
        reason = f"its process stopped: no heartbeat for over {self.grace_period} s; {queued}"
        study.set_user_attr(f"error of trial {trial.number}", reason)
        log.warning(f"Trial {trial.number} failed: {reason}")
        self.retry(study, trial)


def retry(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue `trial` again with its parameters, as Optuna's retry callback does (its retry history grows)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        RetryHeartbeatStaleTrialCallback(max_retry=None)(study, trial)


def retried_as(trials: Sequence[FrozenTrial]) -> dict[int, int]:
    """{number of a failed trial that was queued again: number of the trial that ran it again}: such failed trials
    do not count towards the study's trials."""
    retries = {t.system_attrs["retry_history"][-1]: t.number for t in trials if t.system_attrs.get("retry_history")}
    earlier = {t.user_attrs["retry_of"]: t.number for t in trials if "retry_of" in t.user_attrs}  # genlab's old sweeper
    return earlier | retries


def failure_reason(study: optuna.Study, trial: FrozenTrial) -> str:
    """Why a failed trial failed: its job's error, or what the study noted when its process was found gone."""
    return trial.user_attrs.get("error") or study.user_attrs.get(f"error of trial {trial.number}", "")


def fail_stale_trials(study: optuna.Study) -> None:
    """Optuna's fail_stale_trials, without its experimental warning at every call."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


@contextlib.contextmanager
def heartbeats(storage: optuna.storages.BaseStorage, trial_ids: Sequence[int]) -> Iterator[None]:
    """Beat for `trial_ids` every heartbeat interval while the block runs (the trials' jobs).

    Optuna beats only inside `Study.optimize` (optuna/optuna#3293: no heartbeat for ask-and-tell); the
    sweeper asks and tells, so it beats itself, through the storage's own `record_heartbeat`. A beat
    that fails (a database briefly out of reach) is logged and tried again at the next interval.
    """
    interval = storage.get_heartbeat_interval() if isinstance(storage, BaseHeartbeat) else None
    if interval is None:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while True:
            for trial_id in trial_ids:
                try:
                    storage.record_heartbeat(trial_id)
                except Exception as err:  # noqa: BLE001 (a missed beat must not end the thread: the next may pass)
                    log.warning(f"Could not record a heartbeat ({type(err).__name__}: {err}); trying again")
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name="optuna-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
