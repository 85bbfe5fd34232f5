"""The house's rules that no single module can check: imports run one way through the layers, the config groups
and the checkpoint allow-lists name the same classes, and the always-on callbacks are listed as the code has them."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from genlab.callbacks.interrupt import CheckpointOnInterrupt
from genlab.checkpoints import DATA_CLASSES, MODEL_CLASSES
from genlab.train import always_on_callbacks, always_on_plugins
from genlab.utils.config import CONF_DIR
from tests.helpers import ROOT, compose_config

# top to bottom: a module imports from its own layer and those below it, never from one above. A module belongs to
# the layer of the longest prefix naming it (genlab.models.nets is a net, not a family).
LAYERS = {
    "entry points": [
        "genlab.train",
        "genlab.eval",
        "genlab.sample",
        "genlab.report",
        "genlab.sweep_summary",
        "genlab.fid_stats",
        "genlab.run_logs",
        "genlab.curve_plots",
    ],
    "callbacks/metrics/checkpoints": ["genlab.callbacks", "genlab.metrics", "genlab.checkpoints"],
    "models/data": ["genlab.models", "genlab.data"],
    "nets/utils": ["genlab.models.nets", "genlab.utils", "genlab.capabilities"],
    "errors": ["genlab.errors"],
}
RANK = {layer: rank for rank, layer in enumerate(reversed(LAYERS))}  # errors 0 ... entry points 4


def layer_of(module: str) -> str:
    if module == "genlab":  # the package's __init__: it may import nothing of its own
        return "errors"
    prefixes = [(prefix, layer) for layer, names in LAYERS.items() for prefix in names]
    matches = [
        (len(prefix), layer) for prefix, layer in prefixes if module == prefix or module.startswith(prefix + ".")
    ]
    if not matches:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS in {__file__}")
    return max(matches)[1]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, is_package: bool) -> set[str]:
    """The genlab modules that `source` imports anywhere (top level, functions, TYPE_CHECKING blocks alike)."""
    package = module if is_package else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]) if node.level else ""
            name = ".".join(part for part in (base, node.module) if part)
            # `from genlab.models import previews` imports a module; `from genlab.models import MODEL_CLASSES` a name
            submodules = {f"{name}.{alias.name}" for alias in node.names}
            names |= {sub for sub in submodules if is_module(sub)} or {name}
    return {name for name in names if name == "genlab" or name.startswith("genlab.")}


def is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def upward_imports(module: str, source: str, is_package: bool = False) -> set[tuple[str, str]]:
    """(importer, imported) for each import of `source` (as `module`) that reaches a layer above its own."""
    own = RANK[layer_of(module)]
    return {
        (module, imported)
        for imported in imported_modules(source, module, is_package)
        if RANK[layer_of(imported)] > own
    }


def test_imports_run_one_way_through_the_layers() -> None:
    found = set()
    for path in sorted((ROOT / "genlab").rglob("*.py")):
        found |= upward_imports(module_name(path), path.read_text(), path.name == "__init__.py")
    assert not found, "imports that reach up a layer: " + ", ".join(f"{a} -> {b}" for a, b in sorted(found))


@pytest.mark.parametrize(
    ("module", "source", "upward"),
    [
        ("genlab.utils.config", "from genlab.train import train", True),  # utils -> entry point
        ("genlab.models.vae", "from genlab.callbacks.progress import ProgressBar", True),  # family -> callback
        ("genlab.models.nets.conv", "import genlab.models.vae", True),  # net -> family
        ("genlab.errors", "from genlab.utils import config", True),  # errors -> utils, as a module of a package
        ("genlab", "import genlab.errors", False),
        ("genlab.models.gan", "def f():\n    from genlab.eval import main", True),  # an import inside a function
        ("genlab.models.gan", "from .vae import VAE\nfrom genlab.models.nets.dcgan import Generator", False),
        (
            "genlab.callbacks.resume",
            "from genlab.capabilities import require\nfrom genlab.models.gpt import GPT",
            False,
        ),
    ],
)
def test_the_layer_check_tells_upward_imports_from_downward_ones(module: str, source: str, upward: bool) -> None:
    assert bool(upward_imports(module, source)) == upward


def test_every_genlab_module_is_in_a_layer() -> None:
    for path in (ROOT / "genlab").rglob("*.py"):
        layer_of(module_name(path))  # raises for a module that no layer names
    with pytest.raises(AssertionError, match="genlab.newcomer is in no layer"):
        layer_of("genlab.newcomer")


def _targets(group: str) -> dict[str, str]:
    return {path.stem: OmegaConf.load(path)._target_ for path in sorted((CONF_DIR / group).glob("*.yaml"))}


@pytest.mark.parametrize(("group", "allowed"), [("model", MODEL_CLASSES), ("data", DATA_CLASSES)])
def test_config_groups_and_checkpoint_allow_lists_name_the_same_classes(group: str, allowed: dict) -> None:
    targets = _targets(group)
    unlisted = {f"conf/{group}/{name}.yaml: {target}" for name, target in targets.items() if target not in allowed}
    assert not unlisted, f"configs whose class a checkpoint may not name (add it to the allow-list): {unlisted}"
    configless = allowed.keys() - set(targets.values())
    assert not configless, f"allowed classes that no conf/{group}/ config builds: {sorted(configless)}"


def always_on_names(tmp_path: Path) -> list[str]:
    cfg = compose_config([], tmp_path)
    built = [*always_on_callbacks(cfg, CheckpointOnInterrupt()), *always_on_plugins(cfg)]
    return [type(item).__name__ for item in built]


def test_default_callbacks_comment_lists_the_always_on_callbacks_in_order(tmp_path: Path) -> None:
    comment = (CONF_DIR / "callbacks" / "default.yaml").read_text()
    listed = re.findall(r"^# - (\w+) \(", comment, flags=re.MULTILINE)
    assert listed == always_on_names(tmp_path)


def test_architecture_page_lists_the_always_on_callbacks(tmp_path: Path) -> None:
    page = (ROOT / "docs" / "architecture.md").read_text()
    writing = page[page.index("- **Writing**") : page.index("- **Reading**")]
    listed = set(re.findall(r"`([A-Z]\w+)`", writing))
    assert listed == set(always_on_names(tmp_path))


def test_the_commands_that_only_read_files_import_no_torch() -> None:
    # src.report and src.sweep_summary use no torch: importing it with Lightning took 5 of their 6-8 s on 2 cores,
    # for a refusal of a missing run_dir as for a report. A fresh Python: this one has torch loaded already.
    code = "import sys, genlab.report, genlab.sweep_summary; print(sorted({'torch', 'lightning'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout
