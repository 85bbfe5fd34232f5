"""The README's and docs' tables, links and commands held to conf/ and the code: a config option, family or recipe
added and left out of the docs, a page moved, or a module renamed fails here, naming the file and the line."""

from __future__ import annotations

import ast
import importlib.util
import re
import shlex
import tomllib
from pathlib import Path

import pytest
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from genlab.utils.config import CONF_DIR, compose
from genlab.utils.validation import check_config
from tests.helpers import ROOT, compose_config, options

README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def groups() -> list[str]:
    """Every config group: each folder of conf/ that holds options (`hydra/launcher` for a nested one)."""
    return sorted({path.parent.relative_to(CONF_DIR).as_posix() for path in CONF_DIR.rglob("*.yaml")} - {"."})


def table(heading: str) -> list[list[str]]:
    """The rows (as lists of cells) of the first table under README's `heading`."""
    section = README.read_text().split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line.strip("|").split(" | ") for line in section.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in row] for row in rows[1:]]  # rows[0] is the header


def names(cell: str) -> set[str]:
    """The backticked names of a cell, with `a_{b,c}` expanded to a_b and a_c."""
    found = set()
    for name in re.findall(r"`([^`]+)`", cell):
        head, _, alternatives = name.partition("{")
        found |= {head + alt for alt in alternatives.rstrip("}").split(",")} if alternatives else {name}
    return found


@pytest.mark.parametrize("group", groups())
def test_config_groups_table_names_every_option_of_every_group(group: str) -> None:
    rows = [row for row in table("## Config groups (`conf/`)") if group in names(row[0])]
    assert rows, f"README.md, config groups table: no row for `{group}`"
    missing = set(options(group)) - names(rows[0][1])
    assert not missing, f"README.md, config groups table, row `{group}`: missing {sorted(missing)}"


def tour() -> dict[str, str]:
    """README's tour: each `model=` option and the page its row links to."""
    rows = [row for row in table("## Tour") if len(row) == 4]
    return {option: LINK.search(row[3]).group(1) for row in rows for option in names(row[1])}


def test_tour_links_every_family_to_its_page() -> None:
    pages = tour()
    assert set(pages) == set(options("model")), "README.md, tour: the `model=` column against conf/model/"
    for option, page in pages.items():
        assert page.startswith("docs/families/"), f"README.md, tour, `{option}`: {page}"
        assert (ROOT / page).is_file(), f"README.md, tour, `{option}`: no page {page}"
        assert f"`model={option}`" in (ROOT / page).read_text(), f"{page} does not say `model={option}`"


@pytest.mark.parametrize("recipe", options("experiment"))
def test_every_recipe_is_named_on_its_familys_page(recipe: str, tmp_path: Path) -> None:
    by_target = {OmegaConf.load(CONF_DIR / "model" / f"{name}.yaml")._target_: name for name in options("model")}
    page = tour()[by_target[compose_config([f"experiment={recipe}"], tmp_path).model._target_]]
    assert re.search(rf"\b{recipe}\b", (ROOT / page).read_text()), f"{page} does not name the recipe {recipe}"


def anchors(page: Path) -> set[str]:
    """GitHub's anchors for the headings of a Markdown page."""
    headings = re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_relative_links_reach_a_file_and_heading(page: Path) -> None:
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+://|mailto:", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{page.relative_to(ROOT)}: link to {target}: no such file"
        if anchor and linked.suffix == ".md":
            assert anchor in anchors(linked), f"{page.relative_to(ROOT)}: link to {target}: no such heading"


def commands() -> list[tuple[str, str]]:
    """(page, command) for every `python -m ...` line of a bash block in README and docs, continuations joined."""
    found = []
    for page in PAGES:
        for block in re.findall(r"```bash\n(.*?)```", page.read_text(), flags=re.DOTALL):
            for line in block.replace("\\\n", " ").splitlines():
                command = line.strip()
                if "python -m " in command:
                    found.append((page.relative_to(ROOT).as_posix(), command))
    return found


def modules() -> list[tuple[str, str]]:
    """(page, module) for every `python -m <module>` in README and docs (not a pattern like `benchmarks.<name>`)."""
    module = re.compile(r"python -m ((?:\w+\.)*\w+)\b(?!\.<)")
    found = {(page, name) for page in PAGES for name in module.findall(page.read_text())}
    return sorted((page.relative_to(ROOT).as_posix(), module) for page, module in found)


@pytest.mark.parametrize("page, module", modules())
def test_every_python_module_named_exists(page: str, module: str) -> None:
    assert importlib.util.find_spec(module) is not None, f"{page}: `python -m {module}`: no such module"


def composable(command: str) -> list[str] | None:
    """The overrides of a `src.train` command with nothing to fill in (a sweep's first point), else None."""
    if "python -m src.train " not in command:
        return None
    words = shlex.split(command.split("python -m src.train ", 1)[1], comments=True)
    if any("<" in word or "..." in word for word in words):
        return None  # a placeholder for the user's own run
    # a sweep (-m) composes as its first point: `key=a,b` as `key=a`
    return [re.sub(r"=([^\[{,]+),.*", r"=\1", word) for word in words if word != "-m"]


@pytest.mark.parametrize("command", sorted({c for _, c in commands() if composable(c)}))
def test_every_training_command_composes_and_passes_the_declared_checks(command: str, tmp_path: Path) -> None:
    """Each documented `python -m src.train` command is one that Hydra accepts (its options and keys exist) and
    that src.train's first step accepts: every value of the type and in the range its constructor declares."""
    overrides = composable(command)
    if any(word.startswith("hparams_search=") for word in overrides):  # an Optuna sweep's job, as the sweeper runs
        # it: with the trial it reports to (hydra_plugins/genlab_optuna_sweeper/optuna_sweeper.py adds these)
        overrides += [f"optuna.storage=sqlite:///{tmp_path / 'optuna.db'}", "optuna.study_name=study", "optuna.trial=0"]
    cfg = compose([f"paths.output_dir={tmp_path}", *overrides], return_hydra_config=True)
    hydra_config = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(cfg)  # as in a run: ${hydra:...} resolves
    try:
        with open_dict(cfg):
            del cfg["hydra"]
        check_config(cfg)
    finally:
        HydraConfig.instance().cfg = hydra_config


def test_no_test_module_imports_another() -> None:
    # the README's claim: what tests share lives in tests/helpers.py and tests/conftest.py
    for module in sorted((ROOT / "tests").glob("test_*.py")):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            assert not [name for name in names if name.startswith("tests.test_")], f"{module.name} imports {names}"


def test_every_declared_marker_is_used() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["markers"]
    tests = "".join(path.read_text() for path in (ROOT / "tests").glob("test_*.py"))
    for marker in (line.split(":")[0] for line in declared):
        assert f"pytest.mark.{marker}" in tests, f"pyproject.toml declares the marker {marker}; no test uses it"
