"""Every list of the model families is held to the one registry, conf/model/ (one YAML per family): a family added
there and forgotten in a list fails here, naming the list (docs/adding-a-family.md, step 7). Prose that only
needs the families' pattern says `genlab/models/<family>.py` and points at conf/model/ instead of listing them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from benchmarks.leaderboard import ENTRIES, NOT_ON_THE_BOARD
from genlab.utils.config import CONF_DIR
from tests import test_fuzz, test_resume
from tests.helpers import ROOT, compose_config


def options(group: str) -> set[str]:
    return {path.stem for path in (CONF_DIR / group).glob("*.yaml")}


def families() -> dict[str, str]:
    """The registry: each `model=` option and the class it builds."""
    return {name: OmegaConf.load(CONF_DIR / "model" / f"{name}.yaml")._target_ for name in options("model")}


def test_fuzzed_families_are_the_registry() -> None:
    assert set(test_fuzz.FAMILIES) == set(families()), "tests/test_fuzz.py FAMILIES"


def test_resumed_families_and_the_excused_ones_are_the_registry() -> None:
    assert not set(test_resume.FAMILIES) & set(test_resume.NOT_RESUMED), "tests/test_resume.py: both lists"
    assert set(test_resume.FAMILIES) | set(test_resume.NOT_RESUMED) == set(families()), "tests/test_resume.py"


def test_leaderboard_entries_cover_every_family_not_excused(tmp_path: Path) -> None:
    on_board = set()
    by_target = {target: name for name, target in families().items()}
    for name, entry in ENTRIES.items():
        cfg = compose_config(list(entry.overrides), tmp_path / name)
        assert cfg.data.get("image_shape") is not None, f"leaderboard entry {name}: not an image family's recipe"
        on_board.add(by_target[cfg.model._target_])
    assert not on_board & NOT_ON_THE_BOARD.keys(), "benchmarks/leaderboard.py: both ENTRIES and NOT_ON_THE_BOARD"
    assert on_board | NOT_ON_THE_BOARD.keys() == set(families()), "benchmarks/leaderboard.py ENTRIES"


def readme_row(group: str) -> set[str]:
    """The options in the README's config-groups table row of `group`, with `a_{b,c}` expanded."""
    readme = (ROOT / "README.md").read_text()
    (cell,) = re.findall(rf"^\| `{group}` \| (.*?) \|", readme, flags=re.MULTILINE)
    names = set()
    for option in re.findall(r"`([^`]+)`", cell):
        head, _, alternatives = option.partition("{")
        names |= {head + alt for alt in alternatives.rstrip("}").split(",")} if alternatives else {option}
    return names


@pytest.mark.parametrize("group", ["model", "data", "experiment"])
def test_readme_config_groups_table_lists_every_option(group: str) -> None:
    assert readme_row(group) == options(group), f"README.md, config groups table, row `{group}`"
