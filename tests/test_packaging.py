"""genlab as an installed package: a wheel and an editable install, each run from another folder.

The dependencies are those of the environment running the tests (`--no-deps`): what is checked is
that the package itself carries what it needs (the configs, the shipped feature classifier, the
`genlab-*` commands).
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from tests.helpers import ROOT

# subprocesses and whole runs: the integration tier (make test-integration)
pytestmark = pytest.mark.integration

SITE_PACKAGES = next((p for p in sys.path if p.endswith("site-packages")), "")


def pip(*arguments: str, cwd: Path, python: str = sys.executable) -> None:
    subprocess.run([python, "-m", "pip", "-q", *arguments], cwd=cwd, check=True, capture_output=True, text=True)


def check_installed(python: str, bin_dir: Path, site: Path, cwd: Path, env: dict[str, str]) -> None:
    """From a folder that is not the checkout: the configs compose, and the classifier is found, where installed."""
    result = subprocess.run(
        [str(bin_dir / "genlab-train"), "--cfg", "job"], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "_target_: genlab.models.autoencoder.Autoencoder" in result.stdout
    located = subprocess.run(
        [
            python,
            "-c",
            "import genlab.metrics.features as q; p = q.default_classifier_path('fashion_mnist'); "
            "print(p.resolve(), p.is_file())",
        ],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert located[1] == "True" and located[0].startswith(str(site.resolve())), located


def test_a_wheel_adds_only_its_own_names_and_carries_every_module_and_config(
    tmp_path: Path, shakespeare_dir: Path
) -> None:
    pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(ROOT), cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("genlab-*.whl")
    files = set(zipfile.ZipFile(wheel).namelist())
    # nothing that could clash with another project's names at the top of site-packages: no src, conf, checkpoints
    assert {name.split("/")[0] for name in files} == {
        "genlab",
        "hydra_plugins",
        wheel.name.split("-py3")[0] + ".dist-info",
    }
    clone = {
        path.relative_to(ROOT).as_posix()
        for folder in ("genlab", "hydra_plugins")
        for path in (ROOT / folder).rglob("*")
        if path.suffix in (".py", ".ckpt") and "__pycache__" not in path.parts
    }
    configs = {"genlab/" + path.relative_to(ROOT).as_posix() for path in (ROOT / "conf").rglob("*.yaml")}
    assert clone | configs <= files, sorted((clone | configs) - files)

    pip("install", "--no-deps", "--target", str(tmp_path / "site"), str(wheel), cwd=tmp_path)
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    check_installed(sys.executable, tmp_path / "site" / "bin", tmp_path / "site", tmp_path, env)
    # a whole run of the installed command, from a folder that is not the clone: its outputs land there
    command = [
        str(tmp_path / "site" / "bin" / "genlab-train"),
        "model=gpt",
        "data=shakespeare",
        "debug=fdr",
        "logger=csv",
        *("model.n_layer=1", "model.n_head=2", "model.n_embd=32", "data.block_size=32", "model.sample_length=8"),
        f"paths.data_dir={shakespeare_dir}",
    ]
    trained = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert list((tmp_path / "outputs").rglob("last.ckpt")), "the installed genlab-train wrote no checkpoint"


@pytest.mark.skipif(not SITE_PACKAGES, reason="runs the new venv over the test environment's site-packages")
def test_an_editable_install_works_from_elsewhere(tmp_path: Path) -> None:
    venv.create(tmp_path / "venv", with_pip=True)
    python = str(tmp_path / "venv" / "bin" / "python")
    env = {**os.environ, "PYTHONPATH": SITE_PACKAGES}  # the locked environment's packages, under the new venv's
    subprocess.run(
        [python, "-m", "pip", "-q", "install", "--no-deps", "--no-build-isolation", "-e", str(ROOT)],
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    check_installed(python, tmp_path / "venv" / "bin", ROOT, tmp_path, env)
