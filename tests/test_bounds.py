"""Bounds before work: what a few numbers in a config or a checkpoint may make genlab build, allocate or run, and what
kinds of tensor a checkpoint may hold.

The matrices: every entry point x hyperparameters that describe a huge model, for every family and every setting that
sizes it (found by building the family, not listed by hand); every entry point x every kind of tensor; every number
that a family or an entry point declares x {just past its bound, an absurd size}. Then the resume of another
optimizer's states, weights-only checkpoints, a signal during a slow load, prompt files and the feature classifier.
"""

from __future__ import annotations

import copy
import functools
import itertools
import os
import resource
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning
import lightning as L
import pytest
import torch
from hydra.errors import InstantiationException
from lightning.pytorch.callbacks import Callback
from omegaconf import OmegaConf
from torch.nn.modules.module import register_module_module_registration_hook

from benchmarks.families import tiny_net
from genlab.callbacks.checkpoint import RunCheckpointIO
from genlab.callbacks.finite_loss import NonFiniteLossError
from genlab.callbacks.size_limits import LazyNetworkLimits
from genlab.checkpoints import CheckpointError, build_model, load_model, model_from, read_checkpoint
from genlab.checkpoints.resume import check_resumable
from genlab.data.text import CharVocab
from genlab.errors import GenlabError, RunInterrupted
from genlab.eval import MAX_SAMPLES, EvalOptions, MetricsOptions, first_samples, kid_subset_size
from genlab.eval import main as eval_main
from genlab.models.classifier import Classifier
from genlab.models.vae import VAE
from genlab.sample import SampleOptions, sample
from genlab.sample import main as sample_main
from genlab.train import check_model_size, train
from genlab.train import main as train_main
from genlab.utils.checkpoint_reader import check_state_dict_fits
from genlab.utils.config import compose
from genlab.utils.instantiate import instantiate
from genlab.utils.model_size import SizeLimits, built_within
from genlab.utils.validation import check_config
from tests.helpers import (
    ROOT,
    TEST_OVERRIDES,
    Breach,
    absurd_sizes,
    built_on,
    compose_config,
    declared_breaches,
    family_config,
    model_class,
    options,
    run_main,
    save_gpt,
    short_autoencoder_run,
    start,
)

# the module limit a tenth of its default, so that a refusal by module count comes ten times sooner (building 10,000
# modules takes seconds); the defaults refuse the issue's own case: test_the_issues_checkpoint_with_the_default_limits
LIMITS = SizeLimits(max_modules=1_000)
LIMIT_OVERRIDES = [f"limits.max_modules={LIMITS.max_modules}"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """MNIST-format files, a short autoencoder run on them (its last checkpoint), and a tiny GPT checkpoint."""
    root = tmp_path_factory.mktemp("bounds")
    ae = short_autoencoder_run(root)
    save_gpt(root / "gpt.ckpt", vocab="\n abcdefghijklmnopqrstuvwxyz")
    save_model(root / "vae.ckpt", VAE(image_shape=(1, 28, 28), latent_dim=4, hidden_dims=(16,)))
    return {"root": root, "data": root / "data", "ae": ae, "gpt": root / "gpt.ckpt", "vae": root / "vae.ckpt"}


def save_model(path: Path, model: torch.nn.Module) -> None:
    """An untrained model's checkpoint, with what src.eval and src.sample read of one."""
    target = f"{type(model).__module__}.{type(model).__qualname__}"
    torch.save(
        {
            "state_dict": model.state_dict(),
            "hyper_parameters": dict(model.hparams),
            "config": {"model": {"_target_": target}},
        },
        path,
    )


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one_line_refusal(result: subprocess.CompletedProcess, starts: str) -> str:
    """The refusal's line, checked: exit code 1, one `error:` line starting as expected, no traceback."""
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: {starts}"), line
    return line


# --- which settings size a model: found by building each family, doubled ------------------------------------------


def model_config(model: str) -> dict[str, Any]:
    """The resolved `model` node of `model=<model>`'s config (a GPT's with a vocabulary: its data would give one)."""
    node = OmegaConf.to_container(family_config(model, Path("never-made/run")).model, resolve=True)
    return {**node, "vocab": "abcdefghij"} if model == "gpt" else node


def build(node: dict[str, Any], limits: SizeLimits = LIMITS) -> torch.nn.Module:
    """The model a config node describes, as a checkpoint's rebuild makes it: on the meta device, counted."""

    def configured() -> torch.nn.Module:
        model = build_model(OmegaConf.create(node), "model", limits)  # with the first stage it builds on, if any
        if hasattr(model, "configure_model"):
            model.configure_model()
        return model

    return built_within(limits, configured)


def size_of(model: torch.nn.Module) -> tuple[int, int]:
    return sum(1 for _ in model.modules()), sum(t.numel() for t in [*model.parameters(), *model.buffers()])


@functools.cache
def sizing_settings(model: str) -> tuple[str, ...]:
    """The whole-number settings of `model`'s constructor (alone or in tuples) that size it: doubled (an item, or a
    tuple's length), the family builds a model of another size, or refuses to. The others (steps, counts of
    batches, a class count an unconditional model ignores) leave the model as it was."""
    node = model_config(model)
    default = size_of(build(node))
    sizing = []
    for breach in absurd_sizes(model, node):
        reference, size = node, default
        if node.get(breach.name) is None and isinstance(breach.value, list):
            # stages by the image size by default (null): compared from one stage given by hand
            reference = {**node, breach.name: [1]}
            size = size_of(build(reference))
        base = reference.get(breach.name)
        whole = isinstance(base, int) or (isinstance(base, list) and all(isinstance(v, int) for v in base))
        if not whole or isinstance(base, bool):  # floats, and settings that are off (null) by default
            continue
        doubled = copy.deepcopy(reference)
        if isinstance(breach.value, int):
            doubled[breach.name] = 2 * base
        elif breach.bound == "absurd length":
            doubled[breach.name] = list(base) * 2
        else:
            i = int(breach.bound[1 : breach.bound.index("]")])
            doubled[breach.name] = [2 * v if j == i else v for j, v in enumerate(base)]
        try:
            check_config(OmegaConf.create({"model": doubled}))
            grows = size_of(build(doubled)) != size
        except (GenlabError, InstantiationException):  # refused (a network's own ValueError: stages that do not fit)
            grows = True
        if grows and breach.name not in sizing:
            sizing.append(breach.name)
    return tuple(sizing)


def huge_cases(model: str) -> list[Breach]:
    """Every absurd size of every setting that sizes `model`'s family. Found when a test runs, not when the tests
    are collected (by every pytest worker, for every run of the suite): a matrix test per family loops over them."""
    return [breach for breach in absurd_sizes(model, model_config(model)) if breach.name in sizing_settings(model)]


FAMILIES = options("model")


def case_id(breach: Breach) -> str:
    return f"{breach.model}:{breach.name}({breach.bound})"


def test_every_family_has_settings_that_size_it_and_steps_that_do_not() -> None:
    found = {model: sizing_settings(model) for model in options("model")}
    assert all(found.values()), found
    # what the doubling tells apart, checked on a few a reader knows: sizes in, steps and counts of batches out
    assert {"n_layer", "n_embd", "block_size"} <= set(found["gpt"]) and "warmup_steps" not in found["gpt"]
    assert {"num_res_blocks", "base_channels", "channel_multipliers"} <= set(found["diffusion"])
    assert "n_critic" not in found["gan"] and "num_classes" not in found["gan"]  # unconditional by default
    assert sum(len(huge_cases(model)) for model in FAMILIES) >= 40


def huge_checkpoint(breach: Breach, folder: Path) -> Path:
    """A small checkpoint as src.train writes one, whose hyperparameters hold `breach`: a few numbers describing a
    huge model. Its weights are none: the refusal must come before they are compared."""
    node = model_config(breach.model)
    target = node.pop("_target_")
    data = OmegaConf.to_container(family_config(breach.model, folder / "run").data, resolve=True)
    path = folder / f"{breach.model}-{breach.name}.ckpt"
    torch.save(
        {
            "state_dict": {},
            "hyper_parameters": {**node, breach.name: breach.value},
            "config": {"model": {"_target_": target}, "data": data},
            "global_step": 1,
            "epoch": 0,
            "pytorch-lightning_version": lightning.__version__,
            "optimizer_states": [],
            "lr_schedulers": [],
        },
        path,
    )
    return path


def refused_before_built(message: str, breach: Breach, path: Path | None) -> None:
    """A refusal of the settings themselves (a declared bound, a constraint between them, the size limits), never
    of weights that the model would not fit: nothing of the model was built for it."""
    cls = model_class(breach.model).__name__
    prefix = f"{path}: " if path else ""
    setting = "hyper_parameters" if path else "model"
    assert "\n" not in message, message
    assert (
        message.startswith(f"{prefix}{setting}.{breach.name}=")  # past a declared bound
        or message.startswith(f"{path}: cannot rebuild its {cls} (model.")  # a constraint between settings
        or message.startswith(f"{path}: its hyperparameters describe a {cls} that ")  # the size limits
        or message.startswith(f"model: the {cls} of these settings ")  # the size limits (src.train)
        or (not path and message.startswith("model."))  # a constraint between settings (src.train)
    ), message
    assert "other than its weights" not in message and "does not fit" not in message, message


def cli_check(breach: Breach, output_dir: Path) -> None:
    """What src.train runs on `model.<name>=<value>` before it builds the model: the config's check, the count of
    the model it describes, and of a network built once the data is known (LazyNetworkLimits: the GPT's)."""
    cfg = family_config(breach.model, output_dir)
    cfg.model[breach.name] = breach.value
    check_config(cfg)
    check_model_size(cfg.model, LIMITS)
    with torch.device("meta"):  # the shell src.train builds (a GPT's network waits for the data's vocabulary)
        shell = build_model(cfg.model, "model", LIMITS)
    data = SimpleNamespace(datamodule=SimpleNamespace(vocab=CharVocab("abcdefghij")))
    LazyNetworkLimits(LIMITS).setup(data, shell, "fit")


def load_as_src_sample_does(path: Path) -> torch.nn.Module:
    return load_model(path, limits=LIMITS)


def load_as_src_eval_does(path: Path) -> torch.nn.Module:
    return model_from(read_checkpoint(path), path, LIMITS)


@pytest.mark.parametrize("model", FAMILIES)
def test_a_huge_model_is_refused_before_it_is_built(model: str, tmp_path: Path) -> None:
    """Every setting that sizes the family, at an absurd size, at each entry point's check, in this process:
    src.sample's load_model, src.eval's rebuild, src.train's check of its command line. The entry points themselves:
    the next test (one case a family) and the slow tier's (every case)."""
    for breach in huge_cases(model):
        before, started = peak_rss_mb(), time.perf_counter()
        path = huge_checkpoint(breach, tmp_path)
        assert path.stat().st_size < 100_000
        for load in (load_as_src_sample_does, load_as_src_eval_does):
            with pytest.raises(CheckpointError) as refused:
                load(path)
            refused_before_built(str(refused.value), breach, path)
        with pytest.raises(GenlabError) as refused:
            cli_check(breach, tmp_path / "run")
        refused_before_built(str(refused.value), breach, None)
        assert time.perf_counter() - started < 60, f"{case_id(breach)}: the refusal did the work itself"
        assert peak_rss_mb() - before < 500, f"{case_id(breach)}: the refusal allocated what it describes"


@pytest.mark.parametrize("model", FAMILIES)
def test_src_sample_and_src_eval_refuse_a_huge_model_in_one_line(model: str, world: dict[str, Path], tmp_path: Path):
    refuse_a_huge_model_at_sample_and_eval(huge_cases(model)[0], world, tmp_path)


def refuse_a_huge_model_at_sample_and_eval(breach: Breach, world: dict[str, Path], tmp_path: Path) -> None:
    path = huge_checkpoint(breach, tmp_path)
    common = [f"ckpt_path={path}", f"paths.log_dir={tmp_path / 'logs'}", f"paths.data_dir={world['data']}"]
    for main in (sample_main, eval_main):
        line = one_line_refusal(run_main(main, *common, *LIMIT_OVERRIDES), f"{path}: ")
        refused_before_built(line.removeprefix("error: "), breach, path)
    assert not list((tmp_path / "logs").glob("*/runs/*")), "a refused run left its folder"


@pytest.mark.slow  # every entry point as its command line runs it (src.train fresh and resuming): seconds each
@pytest.mark.parametrize("model", FAMILIES)
def test_every_entry_point_refuses_every_huge_model_in_one_line(
    model: str, world: dict[str, Path], tmp_path_factory: pytest.TempPathFactory, shakespeare_dir: Path
) -> None:
    for breach in huge_cases(model):
        refuse_a_huge_model_everywhere(breach, world, tmp_path_factory.mktemp(breach.name), shakespeare_dir)


def refuse_a_huge_model_everywhere(breach: Breach, world: dict[str, Path], tmp_path: Path, shakespeare_dir: Path):
    refuse_a_huge_model_at_sample_and_eval(breach, world, tmp_path)
    data = ["model=gpt", "data=shakespeare", f"paths.data_dir={shakespeare_dir}"] if breach.model == "gpt" else []
    data = data or [
        f"model={breach.model}",
        *built_on(model_class(breach.model)),
        "data=mnist",
        "data.val_size=100",
        f"paths.data_dir={world['data']}",
    ]
    value = str(breach.value).replace(" ", "")
    common = [*TEST_OVERRIDES, *data, *LIMIT_OVERRIDES, f"paths.log_dir={tmp_path / 'logs'}"]
    line = one_line_refusal(run_main(train_main, *common, f"model.{breach.name}={value}"), "")
    refused_before_built(line.removeprefix("error: "), breach, None)
    # resuming from a checkpoint of a huge model: the run builds what its own config describes, and refuses weights
    # that do not fit it; the checkpoint's hyperparameters are never built
    path = huge_checkpoint(breach, tmp_path)
    one_line_refusal(run_main(train_main, *common, f"ckpt_path={path}"), "")
    assert not list((tmp_path / "logs").glob("*/runs/*")), "a refused run left its folder"


def test_the_issues_checkpoint_with_the_default_limits(tmp_path: Path) -> None:
    """A small GPT checkpoint with n_layer=1000000 (the issue's): src.sample used to build a million blocks."""
    path = tmp_path / "gpt.ckpt"
    save_gpt(path, vocab="abcdef", n_layer=1_000_000)
    started = time.perf_counter()
    result = run_main(sample_main, f"ckpt_path={path}", f"paths.log_dir={tmp_path / 'logs'}")
    line = one_line_refusal(result, f"{path}: its hyperparameters describe a GPT that has over 10,000 modules")
    assert "raise limits.max_modules" in line
    assert time.perf_counter() - started < 60


def test_a_model_at_the_limits_builds_and_one_past_them_is_refused() -> None:
    node = model_config("diffusion")  # weights, buffers (its noise schedule) and an EMA copy made by deepcopy
    modules, numbers = size_of(build(node, SizeLimits()))
    assert size_of(build(node, SizeLimits(max_parameters=numbers, max_modules=modules))) == (modules, numbers)
    for limits, what in [
        (SizeLimits(max_parameters=numbers - 1), "weights and buffers"),
        (SizeLimits(max_modules=modules - 1), "modules"),
    ]:
        with pytest.raises(GenlabError, match=f"^(has|holds) over [0-9,]+ {what} "):
            build(node, limits)
    # a tied weight (the GPT's head is its embedding) is counted once, as parameters() counts it
    gpt = build(model_config("gpt"), SizeLimits())
    assert (
        size_of(gpt)[1]
        == sum(t.numel() for t in gpt.parameters())
        < sum(t.numel() for _, t in gpt.state_dict().items())
    )


# --- every kind of tensor a checkpoint may hold, at every loader and entry point -----------------------------------


def swapped(checkpoint: dict[str, Any], kind: str) -> tuple[dict[str, Any], str]:
    """`checkpoint` with its first weight matrix replaced by a tensor of `kind` (holding the same values where it
    can), and that weight's name."""
    changed = copy.deepcopy(checkpoint)
    weights = changed["state_dict"]
    name = next(name for name, tensor in weights.items() if tensor.dim() == 2)
    weight = weights[name]
    first = (torch.tensor(0), torch.tensor(0))
    if kind == "complex with inf":
        weights[name] = weight.to(torch.complex64).index_put_(first, torch.tensor(complex("inf")))
    elif kind == "sparse COO":
        weights[name] = weight.to_sparse()
    elif kind == "sparse CSR":
        weights[name] = weight.to_sparse_csr()
    elif kind == "nested":
        weights[name] = torch.nested.nested_tensor(list(weight))
    elif kind == "quantized":
        weights[name] = torch.quantize_per_tensor(weight, 0.01, 0, torch.qint8)
    elif kind == "float8":
        weights[name] = weight.to(torch.float8_e4m3fn)
    elif kind == "int where float":
        weights[name] = weight.round().to(torch.int64)
    elif kind == "float64 past float32":  # finite, and infinite once cast to the model's float32
        weights[name] = weight.double().index_put_(first, torch.tensor(1e300, dtype=torch.float64))
    elif kind == "non-contiguous":  # the same values, stored transposed
        weights[name] = weight.t().contiguous().t()
    elif kind == "shared storage":  # the weight and a bias views into one storage, each with its own values
        bias = next(other for other, tensor in weights.items() if tensor.dim() == 1 and tensor.is_floating_point())
        storage = torch.cat([weight.flatten(), weights[bias]])
        weights[name], weights[bias] = storage[: weight.numel()].view(weight.shape), storage[weight.numel() :]
    elif kind == "bfloat16":  # a precision's cast: load_state_dict makes float32 of it
        weights[name] = weight.to(torch.bfloat16)
    else:
        raise ValueError(kind)
    return changed, name


# kind: what its refusal says ({name}: the weight's), or None where it loads, holding the values it has
TENSOR_KINDS = {
    "complex with inf": "its weights hold NaN or infinite values",
    "sparse COO": "holds a tensor of layout sparse_coo",
    "sparse CSR": "holds a tensor of layout sparse_csr",
    "nested": "holds a tensor of layout nested",
    "quantized": "holds a tensor of type qint8",
    "float8": "holds a tensor of type float8_e4m3fn",
    "int where float": "types {name} int64 instead of float32",
    "float64 past float32": "types {name} float64 instead of float32",
    "non-contiguous": None,
    "shared storage": None,
    "bfloat16": None,
}


def loaders(world: dict[str, Path]) -> dict[str, Callable[[Path], torch.nn.Module | None]]:
    """Every way a checkpoint's weights reach a model: src.sample's load_model, src.eval's read and rebuild, and a
    resumed fit's checks (the file, then the weights against the model the run builds) and Lightning's read."""

    def resume(path: Path) -> None:
        check_resumable(path, "genlab.models.autoencoder.Autoencoder")
        model = instantiate(compose_config(["data=mnist"], Path("never-made/run")).model)
        check_state_dict_fits(model, RunCheckpointIO({}).load_checkpoint(path)["state_dict"])

    return {
        "src.sample": load_model,
        "src.eval": lambda path: model_from(read_checkpoint(path), path),
        "resume": resume,
    }


@pytest.mark.parametrize("kind", list(TENSOR_KINDS))
def test_every_kind_of_tensor_is_refused_in_one_line_or_loads_as_it_is(
    world: dict[str, Path], tmp_path: Path, kind: str
) -> None:
    good = torch.load(world["ae"], weights_only=True)
    changed, name = swapped(good, kind)
    path = tmp_path / "kind.ckpt"
    torch.save(changed, path)
    refused = TENSOR_KINDS[kind]
    for loader_name, loader in loaders(world).items():
        if refused is None:
            model = loader(path)
            if model is not None:  # the values of the file, in the model's own types
                loaded = model.state_dict()
                saved = changed["state_dict"]
                assert all(torch.equal(loaded[k], saved[k].to(loaded[k].dtype)) for k in good["state_dict"])
            continue
        with pytest.raises(CheckpointError) as caught:
            loader(path)
        message = str(caught.value)
        assert "\n" not in message and refused.format(name=name) in message, (loader_name, message)


@pytest.mark.parametrize("kind", [kind for kind, refused in TENSOR_KINDS.items() if refused])
def test_every_entry_point_refuses_a_tensor_of_the_wrong_kind_in_one_line(
    world: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    monkeypatch.chdir(ROOT)
    changed, name = swapped(torch.load(world["ae"], weights_only=True), kind)
    path = tmp_path / "kind.ckpt"
    torch.save(changed, path)
    common = [f"ckpt_path={path}", f"paths.log_dir={tmp_path / 'logs'}", f"paths.data_dir={world['data']}"]
    resume = [*TEST_OVERRIDES[:5], "data=mnist", "data.val_size=100"]
    for main, extra in [(sample_main, []), (eval_main, []), (train_main, resume)]:
        line = one_line_refusal(run_main(main, *common, *extra), "")
        assert TENSOR_KINDS[kind].format(name=name) in line, line
    assert not list((tmp_path / "logs").glob("*/runs/*")), "a refused run left its folder"


# --- every number an entry point declares: just past its bound, and at an absurd size -----------------------------

ENTRY_OPTIONS = {"src.sample": SampleOptions, "src.eval": EvalOptions, "src.eval metrics": MetricsOptions}
ENTRY_BREACHES = [breach for name, cls in ENTRY_OPTIONS.items() for breach in declared_breaches(name, cls)]


def entry_config(breach: Breach, tmp_path: Path, ckpt: Path) -> Any:
    command = "sample" if breach.model == "src.sample" else "eval"
    key = f"metrics.{breach.name}" if breach.model.endswith("metrics") else breach.name
    cfg = compose([f"ckpt_path={ckpt}", f"paths.output_dir={tmp_path / 'run'}"], command)
    OmegaConf.update(cfg, key, breach.value)
    return cfg, key, {"src.sample": sample_main, "src.eval": eval_main}[f"src.{command}"]


def test_the_entry_points_declare_their_bounds() -> None:
    assert {breach.name for breach in ENTRY_BREACHES} >= {"num_samples", "max_new_tokens", "batch_size", "top_p"}


@pytest.mark.parametrize("breach", ENTRY_BREACHES, ids=str)
def test_an_option_past_its_declared_bound_is_refused_before_the_checkpoint_is_read(
    breach: Breach, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    cfg, key, main = entry_config(breach, tmp_path, Path("/nonexistent.ckpt"))
    with pytest.raises(SystemExit) as exit_info:
        main.__wrapped__(cfg)  # the entry point as Hydra calls it
    command = breach.model.removesuffix(" metrics")
    assert exit_info.value.code.startswith(f"error: {key}={breach.value!r} is not valid for {command}: expected ")
    assert capsys.readouterr().err == "" and not (tmp_path / "run").exists()


def test_the_size_limits_are_declared_as_every_range_is(tmp_path: Path) -> None:
    for breach in declared_breaches("limits", SizeLimits):
        limit = f"limits.{breach.name}={breach.value}"
        result = run_main(sample_main, "ckpt_path=x.ckpt", limit, f"paths.log_dir={tmp_path}")
        one_line_refusal(result, f"limits.{breach.name}={breach.value!r} is not valid for SizeLimits: expected int")


# --- every number a family declares, at an absurd size -------------------------------------------------------------


def passes_before_building(breach: Breach) -> torch.nn.Module | None:
    """The model of the family's defaults with `breach`, as src.train checks and a checkpoint's rebuild counts it
    (on the meta device); None where either refuses it, in one line."""
    changed = {**model_config(breach.model), breach.name: breach.value}
    try:
        check_config(OmegaConf.create({"model": changed}))
        return build(changed)
    except GenlabError as err:
        assert "\n" not in str(err), case_id(breach)
        return None


@pytest.mark.parametrize("model", FAMILIES)
def test_an_absurd_size_of_any_number_is_refused_or_leaves_the_model_as_it_was(model: str) -> None:
    """Every number the family declares: a value of 2**40 or 1e300 is refused in one line before anything is built,
    or it is not a size (a learning rate, a count of warm-up steps) and the model is the one of the defaults. Those
    that pass train one batch in the slow tier's test below."""
    default = size_of(build(model_config(model)))
    for breach in absurd_sizes(model, model_config(model)):
        built = passes_before_building(breach)
        if built is not None:
            assert breach.name not in sizing_settings(model) and size_of(built) == default, case_id(breach)


@pytest.mark.slow  # a fast_dev_run each: the absurd values that are not sizes, trained for one batch
@pytest.mark.parametrize("model", FAMILIES)
def test_an_absurd_value_that_is_not_a_size_trains_or_stops_in_one_line(
    model: str, world: dict[str, Path], tmp_path_factory: pytest.TempPathFactory, shakespeare_dir: Path
) -> None:
    for breach in absurd_sizes(model, model_config(model)):
        if passes_before_building(breach) is not None:
            train_one_batch(breach, world, tmp_path_factory.mktemp(breach.name), shakespeare_dir)


def train_one_batch(breach: Breach, world: dict[str, Path], tmp_path: Path, shakespeare_dir: Path) -> None:
    # the GPT: its CPU recipe (4 layers of 128 channels, context 64), a tenth of the default's work per batch
    family = ["experiment=gpt_shakespeare_cpu", f"paths.data_dir={shakespeare_dir}"] if breach.model == "gpt" else []
    family = family or [
        f"model={breach.model}",
        *built_on(model_class(breach.model)),
        "data=mnist",
        "data.val_size=100",
        f"paths.data_dir={world['data']}",
    ]
    family += tiny_net(breach.model)  # the breach's own value is set after: it wins
    cfg = compose_config([*TEST_OVERRIDES, *family, "debug=fdr"], tmp_path / "run")
    cfg.model[breach.name] = breach.value

    def endless(signum: int, frame: object) -> None:
        raise AssertionError(f"{case_id(breach)}: one batch took over ten minutes")

    previous = signal.signal(signal.SIGALRM, endless)
    signal.alarm(600)  # bounded: a value that made the work endless fails here rather than hanging the suite
    try:
        train(cfg)
    except GenlabError as err:  # a NaN loss from a learning rate of 1e300: one line naming the step
        assert "\n" not in str(err), case_id(breach)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


class InfiniteAfterLastStep(Callback):
    """Fault injection: after the epoch's last training step (its loss finite), one weight infinite, as a learning
    rate of 1e300 leaves them; a validation batch that runs on it fails the test."""

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        if batch_idx == trainer.num_training_batches - 1:
            with torch.no_grad():
                next(pl_module.parameters()).fill_(float("inf"))

    def on_validation_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if not trainer.sanity_checking:
            raise AssertionError("a validation ran on infinite weights")


def test_weights_made_infinite_by_a_finite_step_stop_the_run_before_its_validation(
    world: dict[str, Path], tmp_path: Path
) -> None:
    """The GPT's text sample of such weights crashed the validation (NaN probabilities): the stop comes first."""
    fault = "+callbacks.fault._target_=tests.test_bounds.InfiniteAfterLastStep"
    overrides = [*TEST_OVERRIDES, "data=mnist", "data.val_size=100", f"paths.data_dir={world['data']}", fault]
    with pytest.raises(NonFiniteLossError, match="^weights became NaN or infinite by step 4 "):
        train(compose_config(overrides, tmp_path / "run"))


@pytest.mark.parametrize("breach", absurd_sizes("src.sample", {}, SampleOptions), ids=case_id)
def test_an_absurd_sampling_option_is_refused_or_bounded(world: dict[str, Path], tmp_path: Path, breach: Breach):
    """Text and images: each number src.sample declares, at an absurd size, ends in one line or samples as a small
    value does (texts of 20 characters, 64 images: within seconds)."""
    for ckpt in (world["gpt"], world["vae"]):
        overrides = [f"ckpt_path={ckpt}", f"paths.output_dir={tmp_path / breach.name}", f"{breach.name}={breach.value}"]
        short = [] if breach.name == "max_new_tokens" else ["max_new_tokens=20"]
        started = time.perf_counter()
        try:
            sample(compose([*overrides, *short], "sample"))
        except GenlabError as err:
            assert "\n" not in str(err)
        assert time.perf_counter() - started < 120


def test_absurd_scoring_options_of_src_eval_are_held_to_their_bounds(world: dict[str, Path]) -> None:
    """Those past a declared bound are refused (above); the others are clamped: a sampling time of 1e300 minutes
    scores at most MAX_SAMPLES samples, a KID subset of 2**40 images half of those scored."""
    cfg = OmegaConf.create({"batch_size": 8, "num_samples": None, "sampling_minutes": 1e300})
    images, count = first_samples(load_model(world["vae"]), cfg)
    assert count == MAX_SAMPLES and len(images) == 8
    assert kid_subset_size(2**40, 100, MAX_SAMPLES) == 50


def test_text_is_generated_a_batch_at_a_time_and_bounded_in_all(world: dict[str, Path], tmp_path: Path) -> None:
    def texts(num_samples: int, seed: int = 3) -> list[str]:
        cfg = compose(
            [f"ckpt_path={world['gpt']}", f"paths.output_dir={tmp_path / str(num_samples)}", "max_new_tokens=5"]
            + [f"num_samples={num_samples}", f"seed={seed}", "prompt=ab"],
            "sample",
        )
        separator = "\n\n" + "-" * 40 + "\n\n"
        return sample(cfg).read_text().removesuffix("\n").split(separator)

    many = texts(70)  # two batches: 64, then 6 from the next seed
    assert len(many) == 70 and all(len(text) == 7 and text.startswith("ab") for text in many)
    assert many[:64] == texts(64)  # the first batch is what a run of 64 draws
    with pytest.raises(GenlabError, match=r"^num_samples=100000 texts of 2 \+ max_new_tokens=1,000,000 characters"):
        sample(
            compose(
                [f"ckpt_path={world['gpt']}", f"paths.output_dir={tmp_path}", "num_samples=100000"]
                + ["max_new_tokens=1000000", "prompt=ab"],
                "sample",
            )
        )


# --- prompt files ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["not UTF-8", "200 MB", "FIFO", "folder", "missing"])
def test_a_prompt_file_is_read_bounded_and_refused_in_one_line(tmp_path: Path, case: str) -> None:
    path = tmp_path / "prompt.txt"
    expected = {
        "not UTF-8": f"prompt_file={path}: not UTF-8 text (byte 0xff at offset 10)",
        "200 MB": f"prompt_file={path}: larger than 1,000,000 bytes, the most a prompt may hold",
        "FIFO": f"prompt_file={path}: not a regular file",
        "folder": f"prompt_file={path}: not a regular file",
        "missing": f"prompt_file={path}: cannot be read (No such file or directory)",
    }[case]
    if case == "not UTF-8":
        path.write_bytes(b"To be, or \xff not")
    elif case == "200 MB":  # sparse: no disk used, and encoded whole it was 1.6 GB of token ids
        with open(path, "wb") as file:
            file.truncate(200_000_000)
    elif case == "FIFO":  # a reader that opened it would wait for a writer for ever
        os.mkfifo(path)
    elif case == "folder":
        path.mkdir()
    cfg = compose(
        ["ckpt_path=/nonexistent.ckpt", f"paths.output_dir={tmp_path / 'run'}", f"prompt_file={path}"], "sample"
    )
    started = time.perf_counter()
    with pytest.raises(GenlabError) as refused:
        sample(cfg)  # refused before the checkpoint is read: the missing checkpoint is never reached
    assert str(refused.value).startswith(expected) and "\n" not in str(refused.value), str(refused.value)
    assert time.perf_counter() - started < 5


# --- resuming another optimizer's state ----------------------------------------------------------------------------


def changed_optimizer_state(checkpoint: dict[str, Any], case: str) -> dict[str, Any]:
    changed = copy.deepcopy(checkpoint)
    state = changed["optimizer_states"][0]
    if case == "another optimizer":  # SGD's state for the same parameters
        params = [torch.nn.Parameter(torch.zeros(1)) for _ in state["param_groups"][0]["params"]]
        sgd = torch.optim.SGD(params, lr=0.1, momentum=0.9)
        sgd_state = sgd.state_dict()
        sgd_state["state"] = {i: {"momentum_buffer": torch.zeros(1)} for i in range(len(params))}
        changed["optimizer_states"][0] = sgd_state
    elif case == "another number of parameter groups":
        group = state["param_groups"][0]
        half = len(group["params"]) // 2
        state["param_groups"] = [
            {**group, "params": group["params"][:half]},
            {**group, "params": group["params"][half:]},
        ]
    elif case == "another number of optimizers":
        changed["optimizer_states"].append(copy.deepcopy(state))
    elif case == "a moment of another shape":
        state["state"][0]["exp_avg"] = torch.zeros(3, 3)
    elif case == "a scheduler it does not have":
        changed["lr_schedulers"] = [{"last_epoch": 3, "base_lrs": [0.1]}]
    else:
        raise ValueError(case)
    return changed


OPTIMIZER_CASES = {
    "another optimizer": "its optimizer 0 (AdamW) state is another optimizer's (settings dampening, momentum",
    "another number of parameter groups": "its optimizer 0 (AdamW) has 2 parameter group(s), and this run's 1",
    "another number of optimizers": "holds 2 optimizer state(s), and this run has 1 optimizer(s)",
    "a moment of another shape": "its optimizer 0 (AdamW) state of parameter 0 (exp_avg) is not of its shape",
    "a scheduler it does not have": "holds 1 learning-rate scheduler state(s), and this run has 0",
}


@pytest.mark.parametrize("case", list(OPTIMIZER_CASES))
def test_resuming_optimizer_states_that_are_not_this_runs_is_one_line(
    world: dict[str, Path], tmp_path: Path, case: str
) -> None:
    path = tmp_path / "changed.ckpt"
    torch.save(changed_optimizer_state(torch.load(world["ae"], weights_only=True), case), path)
    overrides = [*TEST_OVERRIDES, "data=mnist", "data.val_size=100", f"paths.data_dir={world['data']}", "test=false"]
    with pytest.raises(CheckpointError) as refused:
        train(compose_config([*overrides, f"ckpt_path={path}", "trainer.max_epochs=2"], tmp_path / "run"))
    assert str(refused.value).startswith(f"{path}: {OPTIMIZER_CASES[case]}"), str(refused.value)
    assert str(refused.value).endswith("; resume with the model options it was trained with, or start anew")
    assert not (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()  # refused before a step was taken


# --- save_weights_only ---------------------------------------------------------------------------------------------


def test_weights_only_checkpoints_serve_eval_and_sample_and_a_resume_says_it_needs_a_full_one(
    world: dict[str, Path], tmp_path: Path
) -> None:
    overrides = [
        *TEST_OVERRIDES,
        "data=mnist",
        "data.val_size=100",
        f"paths.data_dir={world['data']}",
        "test=false",
        "+callbacks.model_checkpoint.save_weights_only=true",
    ]
    train(compose_config(overrides, tmp_path / "run"))
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert "optimizer_states" not in read_checkpoint(last)  # weights only, as asked
    model = load_model(last)  # src.sample's and src.eval's rebuild: the config is in it
    saved = read_checkpoint(last)["state_dict"]
    assert all(torch.equal(model.state_dict()[name], tensor) for name, tensor in saved.items())
    with pytest.raises(CheckpointError, match=f"^ckpt_path={last}: holds weights only .* a resume needs the optimizer"):
        check_resumable(last, "genlab.models.autoencoder.Autoencoder")
    # a signal's checkpoint is written to be resumed from, whatever save_weights_only says: its line says how
    fault = f"+callbacks.fault={{_target_:tests.test_hardening.SignalAt,phase:train,signum:{int(signal.SIGTERM)}}}"
    with pytest.raises(RunInterrupted, match="Resume with"):
        train(compose_config([*overrides, fault, "trainer.max_epochs=2"], tmp_path / "signalled"))
    signalled = tmp_path / "signalled" / "checkpoints" / "last.ckpt"
    assert "optimizer_states" in check_resumable(signalled, "genlab.models.autoencoder.Autoencoder")
    train(compose_config([*overrides, f"ckpt_path={signalled}", "trainer.max_epochs=2"], tmp_path / "resumed"))


# --- a signal during a slow load ---------------------------------------------------------------------------------


def terminate_once_handled(pid: int, handled: Callable[[], bool]) -> threading.Thread:
    """Send `pid` SIGTERM once `handled()` says a handler is set (before it, SIGTERM would kill the process at once),
    and a second more: the load is under way."""

    def wait_and_send() -> None:
        deadline = time.monotonic() + 120
        while not handled() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1)
        os.kill(pid, signal.SIGTERM)

    thread = threading.Thread(target=wait_and_send, daemon=True)
    thread.start()
    return thread


HUGE_LOAD = ["limits.max_modules=1000000000", "limits.max_parameters=1000000000000000"]  # a minutes-long meta build


@pytest.mark.parametrize("command", ["sample", "eval"])
def test_a_sigterm_during_a_slow_load_exits_143_with_one_line(tmp_path: Path, command: str) -> None:
    """With the limits raised, a million GPT layers are built on the meta device for minutes: a SIGTERM then ends the
    command as it ends every phase (it was taken for a failed rebuild: exit 1). Sent from the build itself, at its
    2,000th module, as a signal from outside landing then."""
    path = tmp_path / "huge.ckpt"
    save_gpt(path, vocab="abcdef", n_layer=1_000_000)
    registered = itertools.count()

    def terminate_mid_build(parent: torch.nn.Module, name: str, module: torch.nn.Module | None) -> None:
        if next(registered) == 2_000:
            os.kill(os.getpid(), signal.SIGTERM)

    main = sample_main if command == "sample" else eval_main
    hook = register_module_module_registration_hook(terminate_mid_build)
    try:
        result = run_main(main, f"ckpt_path={path}", f"paths.log_dir={tmp_path / 'logs'}", *HUGE_LOAD)
    finally:
        hook.remove()
    assert result.returncode == 143, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith("interrupted: SIGTERM during loading the checkpoint")


@pytest.mark.integration
def test_a_sigterm_during_a_slow_load_exits_143_as_a_process(tmp_path: Path) -> None:
    path = tmp_path / "huge.ckpt"
    save_gpt(path, vocab="abcdef", n_layer=1_000_000)
    process = start("src.sample", [f"ckpt_path={path}", f"paths.log_dir={tmp_path}", *HUGE_LOAD])

    def loading() -> bool:
        # genlab handles signals from before Hydra composes; Hydra's job log exists once the command itself runs,
        # which reads its options (a moment) and then the checkpoint (minutes)
        status = Path(f"/proc/{process.pid}/status").read_text()
        caught = int(next(line for line in status.splitlines() if line.startswith("SigCgt:")).split()[1], 16)
        return bool(caught & (1 << (signal.SIGTERM - 1))) and any(tmp_path.rglob("*.log"))

    terminate_once_handled(process.pid, loading)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 143, stderr[-2000:]
    assert stderr.strip().splitlines()[-1].startswith("interrupted: SIGTERM during loading the checkpoint")


# --- the feature classifier of src.eval ----------------------------------------------------------------------------


def test_a_feature_classifier_of_another_image_shape_is_refused_before_any_work(
    world: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    classifier = Classifier(image_shape=(3, 32, 32), num_classes=10, channels=(4,), feature_dim=8)
    path = tmp_path / "cifar_classifier.ckpt"
    torch.save(
        {
            "state_dict": classifier.state_dict(),
            "hyper_parameters": dict(classifier.hparams),
            "config": {"model": {"_target_": "genlab.models.classifier.Classifier"}},
        },
        path,
    )

    def no_test(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the test phase ran before the classifier was checked")

    monkeypatch.setattr("lightning.Trainer.test", no_test)
    result = run_main(
        eval_main,
        f"ckpt_path={world['ae']}",
        f"metrics.classifier_ckpt={path}",
        f"paths.data_dir={world['data']}",
        f"paths.log_dir={tmp_path / 'logs'}",
    )
    one_line_refusal(result, f"{path}: its classifier takes images of shape (3, 32, 32), and mnist's are (1, 28, 28)")
