"""Every list of the model families is held to the one registry, conf/model/ (one YAML per family; `families()` in
tests/helpers.py): a family added there and forgotten in a list fails, naming the list, here or, for a test module's
own list, in a test beside it (tests/test_fuzz.py, tests/test_resume.py: no test module imports another), as
docs/adding-a-family.md, step 7, says. Prose that only needs the families' pattern says `genlab/models/<family>.py`
and points at conf/model/ instead of listing them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from benchmarks.families import FAMILIES, NOT_LISTED, Family
from benchmarks.leaderboard import ENTRIES, NOT_ON_THE_BOARD
from tests.helpers import ROOT, TEST_OVERRIDES, compose_config, families, options


def test_leaderboard_entries_cover_every_family_not_excused(tmp_path: Path) -> None:
    on_board = set()
    by_target = {target: name for name, target in families().items()}
    for name, entry in ENTRIES.items():
        cfg = compose_config(list(entry.overrides), tmp_path / name)
        assert cfg.data.get("image_shape") is not None, f"leaderboard entry {name}: not an image family's recipe"
        on_board.add(by_target[cfg.model._target_])
    assert not on_board & NOT_ON_THE_BOARD.keys(), "benchmarks/leaderboard.py: both ENTRIES and NOT_ON_THE_BOARD"
    assert on_board | NOT_ON_THE_BOARD.keys() == set(families()), "benchmarks/leaderboard.py ENTRIES"


def test_the_families_that_benchmarks_and_tests_loop_over_are_every_family_of_conf_model(tmp_path: Path) -> None:
    """benchmarks/families.py: the GPU suite, the efficiency benchmark and the host-sync test run what it lists; a
    family of conf/model/ that is neither there nor in NOT_LISTED (with its reason) would be run by none of them."""
    listed = {family.option for family in FAMILIES}
    assert not listed & NOT_LISTED.keys(), "both in FAMILIES and in NOT_LISTED"
    assert listed | NOT_LISTED.keys() == families().keys(), "benchmarks/families.py: conf/model/"
    assert len({family.name for family in FAMILIES}) == len(FAMILIES)
    for family in FAMILIES:  # each recipe is an experiment of that family's option, and composes with its tiny net
        assert compose_config(family.tiny_recipe, tmp_path).model._target_ == families()[family.option]


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
    assert readme_row(group) == set(options(group)), f"README.md, config groups table, row `{group}`"


# a fast_dev_run of each family's tiny recipe: about a second each
@pytest.mark.parametrize("family", FAMILIES, ids=lambda family: family.name)
def test_every_family_clips_its_gradients_under_bf16_mixed_with_its_fused_optimizer(
    family: Family, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """trainer.gradient_clip_val with bf16-mixed, which Lightning refuses for a fused optimizer unless the family
    clips through fused.clip_gradients (SharedHooks): the normalizing flow's recipe failed so on the GPU suite."""
    from genlab.train import train

    data = "shakespeare_dir" if family.unit == "tokens" else "fashion_mnist_dir"
    clip = "model.gradient_clip_val=1.0" if family.option == "gan" else "++trainer.gradient_clip_val=1.0"
    overrides = [*TEST_OVERRIDES, *family.tiny_recipe, f"paths.data_dir={request.getfixturevalue(data)}"]
    cfg = compose_config([*overrides, "debug=fdr", "trainer.precision=bf16-mixed", clip], tmp_path / "run")
    train(cfg)  # no error: the step clipped
