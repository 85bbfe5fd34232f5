"""What an Optuna sweep searches: the config's search space, with the command line's last word on each key; and one
line, before anything is written, for a search or a storage that cannot be used. In this process, through src.train's
real main (Hydra's parsing, the sweeper) up to where the sweep would start its first trial."""

from __future__ import annotations

import logging
from pathlib import Path

import optuna
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from genlab.errors import one_line, without_passwords
from genlab.train import main as train_main
from hydra_plugins.genlab_optuna_sweeper.optuna_sweeper import hide_passwords, search_space_and_fixed
from tests.helpers import run_main

CONFIG_SPACE = [  # conf/hparams_search/vae_optuna.yaml's, as the sweeper reads hydra.sweeper.params
    "model.lr=tag(log, interval(1e-4, 3e-3))",
    "model.latent_dim=choice(8, 16, 32, 64)",
    "model.architecture=choice(mlp, conv)",
]


def space_and_fixed(*command_line: str) -> tuple[dict, list[str]]:
    parser = OverridesParser.create()
    return search_space_and_fixed(parser.parse_overrides(CONFIG_SPACE), parser.parse_overrides(list(command_line)))


def test_a_key_fixed_on_the_command_line_leaves_the_search_space_and_a_search_given_there_replaces_the_configs():
    space, fixed = space_and_fixed("model.architecture=mlp", "model.latent_dim=choice(2, 4)", "~model.beta", "seed=3")
    assert space == {
        "model.lr": optuna.distributions.FloatDistribution(1e-4, 3e-3, log=True),
        "model.latent_dim": optuna.distributions.CategoricalDistribution([2, 4]),
    }
    assert fixed == ["model.architecture=mlp", "~model.beta", "seed=3"]  # a deletion without a value deletes any
    # the same key with a `+` (an override that adds the key) is the same key
    space, fixed = space_and_fixed("+model.architecture=mlp")
    assert "model.architecture" not in space and fixed == ["+model.architecture=mlp"]


@pytest.mark.parametrize(
    ("search", "distribution"),
    [
        ("range(2, 10, 2)", optuna.distributions.IntDistribution(2, 8, step=2)),  # Hydra's stop is left out
        ("range(10, 2, -3)", optuna.distributions.IntDistribution(4, 10, step=3)),  # counting down: 10, 7, 4
        ("range(0, 1, 0.25)", optuna.distributions.FloatDistribution(0.0, 0.75, step=0.25)),
        ("interval(0.5, 0.5)", optuna.distributions.FloatDistribution(0.5, 0.5)),
    ],
)
def test_ranges_search_the_values_hydra_would_sweep(search: str, distribution) -> None:
    space, _ = space_and_fixed(f"model.beta={search}")
    assert space["model.beta"] == distribution


# (a command line's search or storage, the one line it is refused with); the password never shown
REFUSED = [
    ("model.latent_dim=range(10,2)", "model.latent_dim=range(10,2): holds no value; range(start, stop, step) counts"),
    ("model.latent_dim=range(2,10,0)", "model.latent_dim=range(2,10,0): a step of 0 never reaches stop"),
    ("model.lr=interval(1,0)", "model.lr=interval(1,0): starts above its end"),
    ("model.lr=tag(log,interval(-1,1))", "model.lr=tag(log,interval(-1,1)): a log scale takes only values > 0"),
    ("model.lr=tag(log,interval(0,1))", "model.lr=tag(log,interval(0,1)): a log scale takes only values > 0"),
    ("model.lr=glob(*)", "model.lr=glob(*): a search is choice(...), range(...), interval(...) or tag(log, "),
    (
        "hydra.sweeper.params.model.latent_dim=choice(8,16)",
        "hydra.sweeper.params.model.latent_dim=choice(8,16): give the search as model.latent_dim=choice(8,16) (it "
        "replaces the config's search over model.latent_dim), or in a config file under hydra.sweeper.params",
    ),
    (
        "+hydra.sweeper.params.model.beta='interval(0, 1)'",
        "+hydra.sweeper.params.model.beta='interval(0, 1)': give the search as model.beta='interval(0, 1)'",
    ),
    (
        "hydra.sweeper.storage=postgresql://u:secret@localhost:abc/db",
        "hydra.sweeper.storage=postgresql://u:***@localhost:abc/db: not a database URL (invalid literal for int()",
    ),
    (
        "hydra.sweeper.storage=postgresql://u:secret@localhost:99999/db",
        "hydra.sweeper.storage=postgresql://u:***@localhost:99999/db: port 99999 is not a port number (1 to 65535)",
    ),
    (
        "hydra.sweeper.storage=postgresql+nosuchdriver://u:secret@localhost/db",
        "hydra.sweeper.storage=postgresql+nosuchdriver://u:***@localhost/db: cannot open it: Can't load plugin",
    ),
    ("hydra.sweeper.storage=sqlite://", "hydra.sweeper.storage=sqlite://: an in-memory SQLite database is not shared"),
]


@pytest.mark.parametrize(("argument", "message"), REFUSED, ids=[argument for argument, _ in REFUSED])
def test_a_search_or_storage_that_cannot_be_used_is_one_line_and_nothing_is_written(
    argument: str, message: str, tmp_path: Path
) -> None:
    sweep_dir = tmp_path / "sweep"
    result = run_main(train_main, "-m", "hparams_search=vae_optuna", argument, f"hydra.sweep.dir={sweep_dir}")
    assert result.returncode == 1, result.stderr[-3000:]
    line = result.stderr.strip()
    assert "\n" not in line and line.startswith(f"error: {message}"), result.stderr[-3000:]
    assert "secret" not in result.stdout + result.stderr
    assert not sweep_dir.exists()


def test_passwords_are_left_out_of_messages_and_of_the_launchers_log_lines() -> None:
    assert without_passwords("cannot open postgresql://u:s3cr/t@h:5432/db; mysql://a:b@c/d") == (
        "cannot open postgresql://u:***@h:5432/db; mysql://a:***@c/d"
    )
    assert without_passwords("postgresql://u@h/db and /path:with@colons") == "postgresql://u@h/db and /path:with@colons"
    assert "secret" not in one_line(ValueError("no route to mysql+pymysql://root:secret@db:3306/studies"))
    # Hydra's launcher logs each job's overrides, the study's storage among them
    record = logging.LogRecord(
        "hydra", logging.INFO, __file__, 1, "\t#%d : %s", (0, "optuna.storage='postgresql://u:secret@h/db'"), None
    )
    assert hide_passwords(record) and record.getMessage() == "\t#0 : optuna.storage='postgresql://u:***@h/db'"
