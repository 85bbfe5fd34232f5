"""A checkpoint is data, at every depth: nothing named inside it runs, whichever loader reads it.

The matrix: a `_target_` (with `_args_`, `_partial_` or keyword arguments) planted at every node of a real
checkpoint's `config` and `hyper_parameters` (an autoencoder's, a GPT's with its vocabulary) down to depth 4, and
in place of every value down to depth 3, read by every loader genlab has; and in every mapping of the entries
Lightning restores (loops, callbacks, optimizer states, ...), read by a resumed fit. A run of code would create a
marker file (each payload is shown to create it when run); none may exist afterwards, and a refusal is one
CheckpointError line naming the file. Classes that can be imported but are not genlab's are refused unimported.
Then the other classes of untrusted bytes: resource bombs (views
larger than their storage, zip and pickle-memo bombs, hyperparameters describing a network larger than the
file's weights), vocabularies with control characters, paths that are not checkpoint files, and callback
state naming files outside the run.
"""

from __future__ import annotations

import copy
import io
import resource
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, get_args, get_type_hints

import hydra
import pytest
import torch
from annotated_types import Le, Lt
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lightning.pytorch.demos.boring_classes import BoringModel

from genlab.checkpoints import CheckpointError, datamodule_from, load_model, model_from, read_checkpoint
from genlab.checkpoints.rebuild import checked_arguments
from genlab.checkpoints.resume import check_resumable
from genlab.data.vocab import CharVocab
from genlab.eval import main as eval_main
from genlab.models.autoencoder import Autoencoder
from genlab.models.gpt import GPT
from genlab.sample import main as sample_main
from genlab.sample import terminal_safe
from genlab.train import main as train_main
from genlab.utils.checkpoint_writer import AtomicCheckpointIO
from tests.helpers import (
    ROOT,
    TEST_OVERRIDES,
    Breach,
    declared_breaches,
    run_main,
    run_module,
    save_gpt,
    short_autoencoder_run,
)

AE = "genlab.models.autoencoder.Autoencoder"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A short autoencoder run on MNIST-format files (its data folder and last checkpoint), and a GPT checkpoint."""
    root = tmp_path_factory.mktemp("trust")
    gpt = root / "gpt.ckpt"
    save_gpt(gpt, vocab="\n !,.:;?abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
    return {"data": root / "data", "ckpt": short_autoencoder_run(root), "gpt": gpt}


# --- the matrix: a _target_ planted at every depth, read by every loader -------------------------------------


def payloads(marker: Path) -> list[dict[str, Any]]:
    """Config nodes that Hydra's instantiate would run, each creating `marker` (test_each_payload_creates_its_marker
    runs them): a call, a method called on an object that a nested node builds, keyword arguments."""
    return [
        {"_target_": "builtins.open", "_args_": [str(marker), "w"]},
        {
            "_target_": "pathlib.Path.write_text",
            "_args_": [{"_target_": "pathlib.Path", "_args_": [str(marker)]}, "ran"],
        },
        {"_target_": "shutil.copyfile", "src": __file__, "dst": str(marker)},
    ]


@pytest.mark.parametrize("index", range(3))
def test_each_payload_creates_its_marker_when_run(tmp_path: Path, index: int) -> None:
    """The planted nodes are real attacks: run by Hydra's instantiate, as a loader that trusted them would, each
    creates the marker whose absence the tests below take as proof that nothing ran."""
    marker = tmp_path / "ran.txt"
    result = hydra.utils.instantiate(payloads(marker)[index])
    if hasattr(result, "close"):
        result.close()
    assert marker.exists()


def positions(tree: dict[str, Any], max_depth: int = 4) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """(path, how) of every place to plant a node: a new key in every mapping down to `max_depth`, and in place of
    every value down to depth 3."""

    def walk(node: Any, path: tuple[str | int, ...]) -> Iterator[tuple[tuple[str | int, ...], str]]:
        if isinstance(node, dict) and len(path) < max_depth:
            yield (*path, "planted"), "add"
            for key, value in node.items():
                if len(path) < 3:
                    yield (*path, key), "replace"
                yield from walk(value, (*path, key))
        elif isinstance(node, list) and len(path) < 3:
            for i, value in enumerate(node):
                yield (*path, i), "replace"
                yield from walk(value, (*path, i))

    yield from walk(tree, ())


def planted(checkpoint: dict[str, Any], section: str, path: tuple[str | int, ...], node: Any) -> dict[str, Any]:
    changed = copy.deepcopy(checkpoint)
    parent = changed[section]
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = node
    return changed


def loaders(data_dir: Path) -> dict[str, Callable[[Path], Any]]:
    """Every way genlab reads a checkpoint. load_model serves src.sample, the leaderboard, the benchmarks and the
    feature classifier of the sample-quality metrics; src.eval builds the model and the data; a resumed fit checks
    the file, then Lightning reads it through AtomicCheckpointIO; ExportBestCheckpoint reads with read_checkpoint."""

    def evaluate(path: Path) -> Any:
        checkpoint = read_checkpoint(path)
        return model_from(checkpoint, path), datamodule_from(checkpoint, path, data_dir=str(data_dir), batch_size=8)

    def resume(path: Path) -> Any:
        check_resumable(path, AE)
        return AtomicCheckpointIO().load_checkpoint(path)

    return {"load_model": load_model, "src.eval": evaluate, "resume": resume}


def read_or_refuse(loader: Callable[[Path], Any], path: Path) -> str | None:
    """None if the loader took the file, else its one-line refusal (which must name the file)."""
    try:
        loader(path)
    except CheckpointError as err:
        message = str(err)
        assert "\n" not in message and str(path) in message, message
        return message
    return None


@pytest.mark.parametrize("max_depth", [2, pytest.param(4, marks=pytest.mark.slow)], ids=["depth 1-2", "depth 1-4"])
@pytest.mark.parametrize(
    ("model", "section"),
    [("ckpt", "config"), ("ckpt", "hyper_parameters"), ("gpt", "hyper_parameters")],
    ids=["config", "hyper_parameters", "GPT hyper_parameters (its vocabulary)"],
)
def test_a_target_planted_anywhere_never_runs(
    trained: dict[str, Path], tmp_path: Path, model: str, section: str, max_depth: int
) -> None:
    marker = tmp_path / "ran.txt"
    checkpoint = torch.load(trained[model], weights_only=True)
    nodes = payloads(marker)
    cases = [
        (path, how, nodes[i % len(nodes)]) for i, (path, how) in enumerate(positions(checkpoint[section], max_depth))
    ]
    assert len(cases) >= {"config": 80, "hyper_parameters": 15}[section]  # every node, not a few
    refused = set()
    for i, (path, how, node) in enumerate(cases):
        file = tmp_path / f"{i}.ckpt"
        torch.save(planted(checkpoint, section, path, node), file)
        for name, loader in loaders(trained["data"]).items():
            if read_or_refuse(loader, file) is not None:
                refused.add((name, path))
            assert not marker.exists(), f"{name} ran {node['_target_']} planted at {section}.{path} ({how})"
        file.unlink()
    # what genlab builds from is refused wherever a node is planted in it (the rest is never used)
    if section == "config":
        assert {("src.eval", ("data", "planted")), ("src.eval", ("data", "seed"))} <= refused
        assert {("load_model", ("model", "_target_")), ("resume", ("model", "_target_"))} <= refused
    elif model == "gpt":
        assert {("load_model", ("planted",)), ("load_model", ("vocab",)), ("load_model", ("n_head",))} <= refused
    else:
        assert {("load_model", ("planted",)), ("load_model", ("latent_dim",)), ("src.eval", ("channels", 0))} <= refused


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_target_planted_at_a_random_place_never_runs(trained: dict[str, Path], tmp_path: Path, data) -> None:
    marker = tmp_path / "ran.txt"
    checkpoint = torch.load(trained["ckpt"], weights_only=True)
    section = data.draw(st.sampled_from(["config", "hyper_parameters"]))
    path, _ = data.draw(st.sampled_from(list(positions(checkpoint[section]))))
    node = data.draw(st.sampled_from(payloads(marker)))
    # the planted node wrapped in lists and mappings, as deep as the drawing goes
    node = data.draw(
        st.recursive(
            st.just(node),
            lambda inner: (
                st.lists(inner, min_size=1, max_size=2)
                | st.dictionaries(st.sampled_from(["x", "_target_", "net"]), inner, min_size=1, max_size=2)
            ),
            max_leaves=4,
        )
    )
    file = tmp_path / "planted.ckpt"
    torch.save(planted(checkpoint, section, path, node), file)
    for loader in loaders(trained["data"]).values():
        read_or_refuse(loader, file)
    assert not marker.exists(), f"ran what was planted at {section}.{path}"


# (module, overrides): each entry point that reads a checkpoint, from the command line; {ckpt} is the planted file
ENTRY_POINTS = {
    "src.train (resume)": ("src.train", ["data=mnist", "data.val_size=100", "ckpt_path={ckpt}", *TEST_OVERRIDES[:5]]),
    "src.eval": ("src.eval", ["ckpt_path={ckpt}", "num_samples=20", "batch_size=20", "metrics.kid_subset_size=10"]),
    "src.sample": ("src.sample", ["ckpt_path={ckpt}", "num_samples=4"]),
}
MAINS = {"src.train": train_main, "src.eval": eval_main, "src.sample": sample_main}
PLANTED = {  # where: (section, path); the first is the one that ran code through src.eval before
    "config.data": ("config", ("data", "planted")),
    "config.model": ("config", ("model", "planted")),
    "config.data.image_shape[0]": ("config", ("data", "image_shape", 0)),
    "config.callbacks.model_checkpoint": ("config", ("callbacks", "model_checkpoint", "planted")),
    "hyper_parameters.latent_dim": ("hyper_parameters", ("latent_dim",)),
}


def run_entry_point(
    entry_point: str, ckpt: Path | str, trained: dict[str, Path], tmp_path: Path, as_a_process: bool
) -> subprocess.CompletedProcess:
    """The entry point's command line on `ckpt`, writing under tmp_path/logs: its real `main` run in this process
    (tests.helpers.run_main), or `python -m` as a process."""
    module, overrides = ENTRY_POINTS[entry_point]
    arguments = [
        *[o.format(ckpt=ckpt) for o in overrides],
        f"paths.log_dir={tmp_path / 'logs'}",
        f"paths.data_dir={trained['data']}",
    ]
    return run_module(module, *arguments) if as_a_process else run_main(MAINS[module], *arguments)


def check_planted_target_not_run(
    result: subprocess.CompletedProcess, entry_point: str, where: str, file: Path, tmp_path: Path
) -> None:
    """Nothing planted ran; a refusal is one line naming the file, exit code 1, and no run folder left."""
    assert not (tmp_path / "ran.txt").exists(), f"{entry_point} ran what was planted at {where}"
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    if result.returncode != 0:
        assert result.returncode == 1, result.stderr[-2000:]
        last_line = result.stderr.strip().splitlines()[-1]
        # src.eval reads nothing of what is planted outside config.data and hyper_parameters: it goes on to score
        # the reconstructions, which needs an MNIST feature classifier that these tests do not train
        past_the_checkpoint = entry_point == "src.eval" and last_line.startswith(
            "error: No feature classifier for mnist"
        )
        assert last_line.startswith(f"error: {file}") or past_the_checkpoint, result.stderr[-2000:]
        assert not list((tmp_path / "logs").glob("*/runs/*")), "a refused run left its folder"


def planted_file(trained: dict[str, Path], tmp_path: Path, where: str) -> Path:
    """The trained checkpoint with a node planted `where`, which would create tmp_path/ran.txt if it ran."""
    section, path = PLANTED[where]
    checkpoint = planted(
        torch.load(trained["ckpt"], weights_only=True), section, path, payloads(tmp_path / "ran.txt")[0]
    )
    torch.save(checkpoint, tmp_path / "planted.ckpt")
    return tmp_path / "planted.ckpt"


# what genlab builds its model and data from: the matrix above; the rest is read by Lightning's restore of a fit
BUILT_FROM = {"state_dict", "config", "hyper_parameters"}


def plant_in_every_mapping(tree: Any, nodes: list[dict[str, Any]], count: int = 0) -> int:
    """A `planted` key in every mapping of `tree` and below, holding the payloads in turn; the number planted.
    Not among the file names of ModelCheckpoint's best_k_models: a key there is a path, refused as one."""
    if isinstance(tree, dict):
        for key, value in list(tree.items()):
            if key != "best_k_models":
                count = plant_in_every_mapping(value, nodes, count)
        tree["planted"] = nodes[count % len(nodes)]
        count += 1
    elif isinstance(tree, list):
        for value in tree:
            count = plant_in_every_mapping(value, nodes, count)
    return count


def test_a_resumed_fit_runs_nothing_planted_in_the_states_lightning_restores(
    trained: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every other entry of a checkpoint (loops, callbacks' states, optimizer and scheduler states, the random
    generators, the datamodule's hyperparameters, whatever Lightning writes next) with a node planted in each of its
    mappings: every loader reads the file, and a resumed fit restores it all and trains on, running none of them."""
    monkeypatch.chdir(ROOT)
    checkpoint = torch.load(trained["ckpt"], weights_only=True)
    sections = sorted(key for key, value in checkpoint.items() if key not in BUILT_FROM and isinstance(value, dict))
    assert {"loops", "callbacks", "rng_states", "datamodule_hyper_parameters"} <= set(sections)
    planted_count = plant_in_every_mapping({key: checkpoint[key] for key in sections}, payloads(tmp_path / "ran.txt"))
    file, in_optimizer = tmp_path / "planted.ckpt", tmp_path / "planted in the optimizer.ckpt"
    torch.save(checkpoint, file)
    for optimizer in checkpoint["optimizer_states"]:  # a list: its mappings, the parameters' states and groups
        planted_count += plant_in_every_mapping(optimizer, payloads(tmp_path / "ran.txt"))
    assert planted_count > 60
    torch.save(checkpoint, in_optimizer)
    for name, loader in loaders(trained["data"]).items():
        assert read_or_refuse(loader, in_optimizer) is None, name  # data that nothing reads: taken as it is
        assert not (tmp_path / "ran.txt").exists(), f"{name} ran what was planted"
    _, overrides = ENTRY_POINTS["src.train (resume)"]
    common = ["trainer.max_epochs=2", "test=false", f"paths.log_dir={tmp_path / 'logs'}"]
    common += [f"paths.data_dir={trained['data']}"]
    # optimizer settings that are not the run's (the planted keys among them): the resume refuses them, running none
    refused = run_main(train_main, *[o.format(ckpt=in_optimizer) for o in overrides], *common)
    assert refused.returncode == 1 and "state is another optimizer's (settings planted" in refused.stderr
    assert not (tmp_path / "ran.txt").exists(), "a refused resume ran what was planted"
    result = run_main(train_main, *[o.format(ckpt=file) for o in overrides], *common)
    assert not (tmp_path / "ran.txt").exists(), "a resumed fit ran what was planted"
    assert result.returncode == 0, result.stderr[-3000:]
    (resumed,) = (tmp_path / "logs").glob("*/runs/*/checkpoints/last.ckpt")
    assert read_checkpoint(resumed)["global_step"] == 8  # it restored the states and trained its second epoch


@pytest.mark.slow  # a second or two each in this process; src.train trains on what it is given
@pytest.mark.parametrize("where", list(PLANTED))
@pytest.mark.parametrize("entry_point", list(ENTRY_POINTS))
def test_no_entry_point_runs_a_planted_target(
    trained: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, entry_point: str, where: str
) -> None:
    monkeypatch.chdir(ROOT)  # where `python -m src.<entry point>` runs
    file = planted_file(trained, tmp_path, where)
    result = run_entry_point(entry_point, file, trained, tmp_path, as_a_process=False)
    check_planted_target_not_run(result, entry_point, where, file, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("entry_point", list(ENTRY_POINTS))
def test_no_entry_point_run_as_a_process_runs_a_planted_target(
    trained: dict[str, Path], tmp_path: Path, entry_point: str
) -> None:
    where = "config.data"  # what ran code through src.eval before; every place in every main: the test above
    file = planted_file(trained, tmp_path, where)
    result = run_entry_point(entry_point, file, trained, tmp_path, as_a_process=True)
    check_planted_target_not_run(result, entry_point, where, file, tmp_path)


# --- resource bombs: what a checkpoint may make genlab allocate --------------------------------------------------


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bomb(case: str, good: Path, folder: Path) -> Path:
    """A small file built to make a reader allocate or walk far more than its size."""
    checkpoint = torch.load(good, weights_only=True)
    path = folder / f"{case}.ckpt"
    if case == "expanded weights":  # 4 bytes of data, 12 GB as a tensor
        name = next(iter(checkpoint["state_dict"]))
        checkpoint["state_dict"][name] = torch.zeros(1).expand(3_000_000_000)
    elif case == "expanded optimizer state":
        checkpoint["optimizer_states"][0]["state"][0]["exp_avg"] = torch.zeros(1).expand(10**13)
    elif case == "shared lists":  # pickle's memo: 40 levels of [a, a] are 2^40 leaves in a few hundred bytes
        tree: Any = [0]
        for _ in range(40):
            tree = [tree, tree]
        checkpoint["config"]["extra"] = tree
    elif case == "deep nesting":
        tree = 0
        for _ in range(200):  # deeper than any genlab checkpoint nests, as deep as torch.save writes
            tree = [tree]
        checkpoint["hyper_parameters"]["channels"] = tree
    elif case == "network larger than its weights":  # 2.5 GB of encoder and decoder described by one number (within
        # limits.max_parameters, whose own refusal tests/test_bounds.py holds: this is the comparison with the weights)
        checkpoint["hyper_parameters"]["latent_dim"] = largest_allowed(Autoencoder, "latent_dim", 100_000)
    elif case == "zip bomb":  # entries compressed: a few KB unpacking to 100 MB of zeros
        torch.save(checkpoint, path)
        buffer = io.BytesIO()
        with zipfile.ZipFile(path) as source, zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as target:
            for entry in source.infolist():
                target.writestr(entry.filename, source.read(entry))
            target.writestr("archive/data/bomb", bytes(100_000_000))
        path.write_bytes(buffer.getvalue())
        return path
    else:
        raise ValueError(case)
    torch.save(checkpoint, path)
    return path


def largest_allowed(cls: type, name: str, otherwise: int) -> int:
    """The largest whole number that `cls`'s declaration of the parameter `name` allows, `otherwise` if unbounded:
    a value past a declared bound is refused by that bound (test_hyperparameters_past_a_declared_bound...)."""
    (hint,) = [hint for key, hint in get_type_hints(cls.__init__, include_extras=True).items() if key == name]
    bounds = [bound for declared in get_args(hint)[1:] for bound in getattr(declared, "metadata", [])]
    return min(
        [otherwise, *(b.le for b in bounds if isinstance(b, Le)), *(b.lt - 1 for b in bounds if isinstance(b, Lt))]
    )


# each bomb and the start of its refusal (after "<file>: "): the check that is there for it, not any check
TOO_LARGE = "holds over 1000000 entries or nests deeper than 64; not a genlab checkpoint"
BOMBS = {
    "expanded weights": "holds a tensor of shape (3000000000,) over a storage of 4 bytes (a view larger than its data)",
    "expanded optimizer state": "holds a tensor of shape (10000000000000,) over a storage of 4 bytes",
    "shared lists": TOO_LARGE,
    "deep nesting": TOO_LARGE,
    "zip bomb": "unpacks to 10",  # a hundred million bytes and more, from a few
    "network larger than its weights": (
        "its weights are not those of the Autoencoder its hyperparameters describe (shapes "
    ),
}


@pytest.mark.parametrize("case", BOMBS)
def test_a_resource_bomb_is_refused_before_it_allocates(trained: dict[str, Path], tmp_path: Path, case: str):
    path = bomb(case, trained["ckpt"], tmp_path)
    assert path.stat().st_size < 5_000_000
    before = _peak_rss_mb()
    for name, loader in loaders(trained["data"]).items():
        if case == "network larger than its weights" and name == "resume":
            continue  # a resumed run builds the network its own config describes, not the checkpoint's
        message = read_or_refuse(loader, path)
        assert message is not None and message.startswith(f"{path}: {BOMBS[case]}"), f"{name} on the {case}: {message}"
    assert _peak_rss_mb() - before < 500, "the refusal itself allocated what the file described"


# --- hyperparameters outside the ranges their family declares ---------------------------------------------------


@pytest.mark.parametrize("breach", [*declared_breaches("ae"), *declared_breaches("gpt")], ids=str)
def test_hyperparameters_past_a_declared_bound_are_refused_in_one_line(
    trained: dict[str, Path], tmp_path: Path, breach: Breach
) -> None:
    path = tmp_path / f"{breach.model}.ckpt"
    checkpoint = torch.load(trained["ckpt" if breach.model == "ae" else "gpt"], weights_only=True)
    checkpoint["hyper_parameters"][breach.name] = breach.value
    torch.save(checkpoint, path)
    for name, loader in loaders(trained["data"]).items():
        if name == "resume" or (breach.model == "gpt" and name != "load_model"):
            continue  # a resumed run builds the model its own config describes; the GPT file has no data to score
        message = read_or_refuse(loader, path)
        assert message is not None, f"{name} took {breach}"
        assert message.startswith(f"{path}: hyper_parameters.{breach.name}={breach.value!r} is not valid for "), message


# --- text: a vocabulary is data too -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "vocab, refused",
    [
        ("ab\x1b[31", "control or invisible characters"),
        ("aabcde", "repeats the characters 'a'"),
        ("abcd\x07e", "control or invisible characters"),
        ("abcd\u202ee", "control or invisible characters"),
    ],
)
def test_a_vocabulary_with_control_or_repeated_characters_is_refused(tmp_path: Path, vocab: str, refused: str):
    path = tmp_path / "gpt.ckpt"
    save_gpt(path, vocab="abcdef")  # six characters, as each bad vocabulary has: only its characters are wrong
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["hyper_parameters"]["vocab"] = vocab
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match=refused):
        load_model(path)


def test_generated_text_reaches_the_terminal_escaped() -> None:
    assert terminal_safe("To be,\tor\nnot\r\x1b[2J\x07") == "To be,\tor\nnot\\r\\x1b[2J\\x07"
    with pytest.raises(ValueError, match="control or invisible"):
        CharVocab("ab\x1b")


def test_a_gpt_checkpoint_with_a_valid_vocabulary_loads(trained: dict[str, Path]) -> None:
    model = load_model(trained["gpt"])
    assert model.vocab.chars == "\n !,.:;?abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    assert model.generate_text("ab", 5, 1.0, None, None, 1, seed=0)[0].startswith("ab")


@pytest.mark.parametrize(
    ("target", "loads"),
    [
        ("genlab.models.gpt.GPT", True),  # as genlab 0.1 wrote it, before the code was the package genlab
        ("genlab.models.gpt.Nothing", False),
        ("src.os.system", False),  # the old prefix does not widen the allow-list
        ("genlab.os.system", False),
    ],
)
def test_checkpoints_of_genlab_0_1_load_and_the_old_prefix_names_nothing_new(
    tmp_path: Path, target: str, loads: bool
) -> None:
    path = tmp_path / "gpt.ckpt"
    save_gpt(path, vocab="abc")
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["config"]["model"]["_target_"] = target
    torch.save(checkpoint, path)
    if loads:
        assert isinstance(load_model(path), GPT)
        assert check_resumable(path, "genlab.models.gpt.GPT")["global_step"] == 0
    else:
        with pytest.raises(CheckpointError, match="not one of genlab's models"):
            load_model(path)


# importable classes that are not genlab's: each file below would load were the loader to import what it names
# (its hyperparameters and weights are the named class's own). `planted.Planted` is a LightningModule whose module,
# imported, creates the marker; the others are a LightningModule of Lightning's, a torch module, genlab classes that
# are no model family, and a function
FOREIGN_MODELS = {
    "lightning.pytorch.demos.boring_classes.BoringModel": ({}, lambda: BoringModel().state_dict()),
    "planted.Planted": ({}, lambda: torch.nn.Linear(2, 2).state_dict()),
    "torch.nn.Linear": ({"in_features": 2, "out_features": 2}, lambda: torch.nn.Linear(2, 2).state_dict()),
    "genlab.models.hooks.SharedHooks": ({}, dict),
    "genlab.data.text.ShakespeareDataModule": ({}, dict),
    "builtins.eval": ({"source": "1"}, dict),
}
FOREIGN_DATA = [
    "lightning.pytorch.demos.boring_classes.BoringDataModule",
    "planted.PlantedData",
    "torchvision.datasets.MNIST",
    "genlab.models.autoencoder.Autoencoder",
    "builtins.eval",
]

PLANTED_MODULE = """
from pathlib import Path

import lightning as L
import torch

Path({marker!r}).write_text("imported")


class Planted(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 2)


class PlantedData(L.LightningDataModule):
    def __init__(self, data_dir=None, batch_size=None):
        super().__init__()
"""


@pytest.fixture
def planted_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A module `planted` that creates tmp_path/imported.txt when imported (yields that path), on sys.path."""
    marker = tmp_path / "imported.txt"
    (tmp_path / "planted.py").write_text(PLANTED_MODULE.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield marker
    sys.modules.pop("planted", None)


@pytest.mark.parametrize("target", FOREIGN_MODELS)
def test_an_importable_class_that_is_no_genlab_model_is_refused_unimported(
    trained: dict[str, Path], tmp_path: Path, planted_module: Path, target: str
) -> None:
    hyper_parameters, state_dict = FOREIGN_MODELS[target]
    checkpoint = torch.load(trained["ckpt"], weights_only=True)
    checkpoint["config"]["model"] = {"_target_": target, **hyper_parameters}
    checkpoint["hyper_parameters"], checkpoint["state_dict"] = hyper_parameters, state_dict()
    path = tmp_path / "foreign.ckpt"
    torch.save(checkpoint, path)
    refused = f"{path}: names the model class {target!r}, which is not one of genlab's models"
    for name, loader in [
        *loaders(trained["data"]).items(),
        ("resume as its class", lambda p: check_resumable(p, target)),
    ]:
        message = read_or_refuse(loader, path)
        assert message is not None and message.startswith(refused), f"{name}: {message}"
    assert not planted_module.exists() and "planted" not in sys.modules


@pytest.mark.parametrize("target", FOREIGN_DATA)
def test_an_importable_class_that_is_no_genlab_datamodule_is_refused_unimported(
    trained: dict[str, Path], tmp_path: Path, planted_module: Path, target: str
) -> None:
    checkpoint = torch.load(trained["ckpt"], weights_only=True)
    checkpoint["config"]["data"] = {"_target_": target}
    path = tmp_path / "foreign.ckpt"
    torch.save(checkpoint, path)
    message = read_or_refuse(loaders(trained["data"])["src.eval"], path)
    assert message.startswith(
        f"{path}: names the data class {target!r}, which is not one of genlab's datamodules; refused without "
        f"importing it. Give the data on the command line"
    )
    assert not planted_module.exists() and "planted" not in sys.modules


class TakesAnything:
    """A constructor that declares a parameter of any type: what pydantic's check lets through, the plain-value
    check must refuse (genlab's own constructors declare narrower types today, which would refuse it too)."""

    def __init__(self, anything: Any = None) -> None:
        self.anything = anything


@pytest.mark.parametrize(
    "value",
    [{"_target_": "os.system", "_args_": ["touch ran.txt"]}, [1, {"_target_": "os.system"}], torch.zeros(1), print],
    ids=["mapping", "mapping in a list", "tensor", "function"],
)
def test_only_plain_values_reach_a_constructor(value: Any) -> None:
    with pytest.raises(CheckpointError) as refusal:
        checked_arguments(TakesAnything, {"anything": value}, "hyper_parameters", "model.ckpt")
    assert str(refusal.value) == (
        f"model.ckpt: its hyper_parameters.anything holds a {type(value).__name__} where TakesAnything takes text, "
        f"numbers or lists of them; refused without using it"
    )
    assert checked_arguments(TakesAnything, {"anything": [1, "a", None]}, "hyper_parameters", "model.ckpt")


# --- paths that are not checkpoint files -------------------------------------------------------------------------


def not_a_checkpoint(case: str, folder: Path, good: Path) -> tuple[str, str]:
    """A ckpt_path of one kind that is no checkpoint file, and the start of its refusal."""
    text = folder / "notes.txt"
    text.write_text("not a checkpoint\n")
    if case == "url":
        return "https://example.invalid/model.ckpt", "checkpoints are read from local files only"
    if case == "text file":
        return str(text), "not a readable PyTorch checkpoint"
    if case == "link to a text file":
        (folder / "link.ckpt").symlink_to(text)
        return str(folder / "link.ckpt"), "not a readable PyTorch checkpoint"
    if case == "folder":
        return str(folder), "a folder, not a checkpoint file"
    if case == "link to a folder":
        (folder / "dir.ckpt").symlink_to(folder, target_is_directory=True)
        return str(folder / "dir.ckpt"), "a folder, not a checkpoint file"
    if case == "dangling link":
        (folder / "gone.ckpt").symlink_to(folder / "nowhere.ckpt")
        return str(folder / "gone.ckpt"), "a link to nothing"
    if case == "malformed generator states":
        checkpoint = torch.load(good, weights_only=True)
        checkpoint["rng_states"]["python"] = (3, (1, 2), None)
        torch.save(checkpoint, folder / "rng.ckpt")
        return str(folder / "rng.ckpt"), "its random generators' states cannot be restored"
    if case == "callback paths outside the run":
        checkpoint = torch.load(good, weights_only=True)
        state = next(value for key, value in checkpoint["callbacks"].items() if key.startswith("ModelCheckpoint"))
        state["best_k_models"] = {str(folder / ".." / ".." / ".bashrc"): 0.1}
        torch.save(checkpoint, folder / "escape.ckpt")
        return str(folder / "escape.ckpt"), "outside the checkpoint's folder"
    raise ValueError(case)


NOT_CHECKPOINTS = [
    "url",
    "text file",
    "link to a text file",
    "folder",
    "link to a folder",
    "dangling link",
    "callback paths outside the run",
    "malformed generator states",
]


@pytest.mark.parametrize("case", NOT_CHECKPOINTS)
def test_a_path_that_is_no_checkpoint_file_is_one_line_for_every_loader(
    trained: dict[str, Path], tmp_path: Path, case: str
) -> None:
    path, refused = not_a_checkpoint(case, tmp_path, trained["ckpt"])
    for name, loader in loaders(trained["data"]).items():
        message = read_or_refuse(loader, path)
        assert message is not None and refused in message, f"{name}: {message}"


def check_refused_in_one_line(result: subprocess.CompletedProcess, refused: str, tmp_path: Path) -> None:
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error: ") and refused in last_line, last_line
    assert not list((tmp_path / "logs").glob("*/runs/*")), "a refused run left its folder"


@pytest.mark.parametrize("case", NOT_CHECKPOINTS)  # a fraction of a second each in this process
@pytest.mark.parametrize("entry_point", list(ENTRY_POINTS))
def test_every_entry_point_refuses_a_non_checkpoint_in_one_line(
    trained: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, entry_point: str, case: str
) -> None:
    monkeypatch.chdir(ROOT)  # where `python -m src.<entry point>` runs
    path, refused = not_a_checkpoint(case, tmp_path, trained["ckpt"])
    result = run_entry_point(entry_point, path, trained, tmp_path, as_a_process=False)
    check_refused_in_one_line(result, refused, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("entry_point", list(ENTRY_POINTS))
def test_every_entry_point_run_as_a_process_refuses_a_non_checkpoint_in_one_line(
    trained: dict[str, Path], tmp_path: Path, entry_point: str
) -> None:
    path, refused = not_a_checkpoint("text file", tmp_path, trained["ckpt"])  # every case in every main: above
    result = run_entry_point(entry_point, path, trained, tmp_path, as_a_process=True)
    check_refused_in_one_line(result, refused, tmp_path)
