"""The one reader of checkpoint files: bytes in, checked plain data out.

A checkpoint is data someone may have downloaded. Every load in genlab (src.eval, src.sample, the
feature classifier, a resumed fit, Lightning's own loads through AtomicCheckpointIO) reads the file
here, and nothing read here is ever imported, instantiated or called: genlab/checkpoints/rebuild.py
builds genlab's own classes from the checked values.
"""

from __future__ import annotations

import os
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genlab.errors import GenlabError, one_line

# more entries than this in a checkpoint's containers is not a genlab checkpoint (a GPT's has about 3,000), and
# pickle's memo can make a few bytes stand for a tree of billions of nodes that a walk would never finish
MAX_ENTRIES = 1_000_000
MAX_DEPTH = 64
PLAIN = (str, int, float, bool, type(None))
# the element types a checkpoint's tensors may have: the weights' floating types (any of them: a precision's cast),
# integer counters and generator states (NumPy's keys are uint32), and complex numbers (no genlab model has any:
# refused against the model's own types, once finite). Not float8, nor the quantized types: no check (finite or
# not) is defined on them
DTYPES = frozenset(
    {
        *(torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex64, torch.complex128),
        *(torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.uint32),
    }
)


class CheckpointError(GenlabError):
    """A checkpoint path that is missing, unreadable, unsafe, or not one of this project's."""


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a genlab checkpoint as checked data, or raise CheckpointError with one line saying why not.

    - a local regular file (a URL is refused: download it first), in PyTorch's zip format;
    - read with `torch.load(weights_only=True)`, which builds tensors and plain containers only;
    - no more bytes unpacked than the file holds, and no tensor larger than its storage (an expanded view
      of one number would make any later check allocate terabytes);
    - every tensor dense and strided (not sparse, nested or quantized), on the CPU, of one of DTYPES;
    - 'state_dict', 'hyper_parameters' and 'config' present, the latter two trees of plain values;
    - finite weights (complex ones too), and paths in its checkpoint-callback state inside the checkpoint's own
      folder.
    Whether each weight has the type and shape of the model's: `state_dict_mismatch`, once the model is known.
    """
    path = _local_file(path)
    checkpoint = _load(path)
    if not isinstance(checkpoint, dict) or not {"state_dict", "config", "hyper_parameters"} <= set(checkpoint):
        found = sorted(map(str, checkpoint))[:8] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(
            f"{path}: not a genlab checkpoint (expected 'state_dict', 'hyper_parameters' and 'config' entries, "
            f"found {found}); checkpoints written by `python -m src.train` have them"
        )
    _check_tree(checkpoint, path)
    for key in ("config", "hyper_parameters"):
        if not isinstance(checkpoint[key], dict) or not _is_plain(checkpoint[key]):
            raise CheckpointError(
                f"{path}: its '{key}' is not a mapping of plain values (text, numbers, lists and mappings of them)"
            )
    _check_state_dict(checkpoint["state_dict"], path)
    _check_callback_paths(checkpoint.get("callbacks"), path)
    _check_rng_states(checkpoint.get("rng_states"), path)
    return checkpoint


def _load(path: Path, legacy_format: bool = False) -> Any:
    """The file's content through torch.load(weights_only=True), no more bytes unpacked than the file holds;
    `legacy_format`: also torch.save's format before PyTorch 1.6, a pickle stream that is no zip."""
    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as archive:
            unpacked = sum(entry.file_size for entry in archive.infolist())
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        if not legacy_format:
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint, or truncated (not a zip file)") from None
        unpacked = 0  # weights_only reads the old format too, each storage from the file's own bytes
    if unpacked > size:  # torch.save stores its entries uncompressed: more would be a zip bomb
        raise CheckpointError(f"{path}: unpacks to {unpacked} bytes from {size}; PyTorch's checkpoints never do")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # weights_only's unpickler refuses any global it does not know: a class, or a function to call
        refused = next((line for line in str(err).splitlines() if "GLOBAL" in line), None)
        if refused:
            raise CheckpointError(
                f"{path}: refused to load objects other than tensors and plain data ({refused.strip()}); "
                f"a genlab checkpoint never holds any"
            ) from None
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint, or truncated ({one_line(err)})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, MemoryError, RecursionError) as err:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint, or truncated ({one_line(err)})") from None
    return checkpoint


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A file of bare weights (a network's state dict, as torch.save writes it: the Inception-v3 of FID) as checked
    data: read as a checkpoint is (local file, weights_only, bounded sizes), named finite tensors only. Weights
    published before PyTorch 1.6 (pytorch-fid's Inception-v3 of 2019) may be in torch.save's older format."""
    path = _local_file(path)
    state_dict = _load(path, legacy_format=True)
    _check_tree(state_dict, path)
    _check_state_dict(state_dict, path)
    return state_dict


def _local_file(path: str | Path) -> Path:
    if "://" in str(path):
        raise CheckpointError(
            f"{path}: checkpoints are read from local files only; download it first and give its path"
        )
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: a folder, not a checkpoint file (checkpoints are <run>/checkpoints/*.ckpt)")
    if not path.is_file():
        if path.is_symlink() and not path.exists():
            raise CheckpointError(f"{path}: a link to nothing ({os.readlink(path)} does not exist)")
        raise CheckpointError(f"{path}: not a regular file" if path.exists() else f"{path}: no such checkpoint file")
    if not os.access(path, os.R_OK):
        raise CheckpointError(f"{path}: not readable (permission denied)")
    return path


def _check_tree(checkpoint: dict[str, Any], path: Path) -> None:
    """Bound the containers' size and depth, and every tensor's size by the storage behind it."""
    entries = 0
    stack: list[tuple[Any, int]] = [(checkpoint, 0)]
    while stack:
        node, depth = stack.pop()
        entries += 1
        if entries > MAX_ENTRIES or depth > MAX_DEPTH:
            raise CheckpointError(
                f"{path}: holds over {MAX_ENTRIES} entries or nests deeper than {MAX_DEPTH}; not a genlab checkpoint"
            )
        if isinstance(node, torch.Tensor):
            _check_tensor_kind(node, path)
            _check_tensor_size(node, path)
        elif isinstance(node, dict):
            if not all(isinstance(key, PLAIN) for key in node):
                raise CheckpointError(f"{path}: holds a mapping whose keys are not plain values")
            stack.extend((value, depth + 1) for value in node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend((value, depth + 1) for value in node)


def _check_tensor_kind(tensor: torch.Tensor, path: Path) -> None:
    # torch.save keeps what torch.load(weights_only=True) rebuilds: sparse and nested tensors have no storage to
    # bound, and every other check would crash on them (or on float8's and quantized types, which none defines)
    if tensor.layout != torch.strided or tensor.is_nested:
        kind = "nested" if tensor.is_nested else str(tensor.layout).removeprefix("torch.")
        raise CheckpointError(
            f"{path}: holds a tensor of layout {kind}; genlab checkpoints hold dense tensors only, refused unused"
        )
    if tensor.is_quantized or tensor.dtype not in DTYPES:
        raise CheckpointError(
            f"{path}: holds a tensor of type {str(tensor.dtype).removeprefix('torch.')}, which no genlab checkpoint "
            f"has; refused unused"
        )
    if tensor.device.type != "cpu":  # read with map_location="cpu": a tensor elsewhere (meta) has no data at all
        raise CheckpointError(f"{path}: holds a tensor on the {tensor.device.type} device, without data; refused")


def _check_tensor_size(tensor: torch.Tensor, path: Path) -> None:
    # a view may only address the bytes its storage has: `zeros(1).expand(3e9)` holds 4 bytes and claims 12 GB
    if tensor.numel() * tensor.element_size() > tensor.untyped_storage().nbytes():
        raise CheckpointError(
            f"{path}: holds a tensor of shape {tuple(tensor.shape)} over a storage of "
            f"{tensor.untyped_storage().nbytes()} bytes (a view larger than its data); refused before touching it"
        )


def _is_plain(tree: Any) -> bool:
    """Text, numbers, booleans and None, in lists, tuples and mappings with text keys."""
    if isinstance(tree, dict):
        return all(isinstance(key, str) and _is_plain(value) for key, value in tree.items())
    if isinstance(tree, (list, tuple)):
        return all(_is_plain(value) for value in tree)
    return isinstance(tree, PLAIN)


def _check_state_dict(state_dict: Any, path: Path) -> None:
    """Named tensors, each finite (complex ones too): every output of a network with NaN or infinite weights is
    NaN."""
    if not isinstance(state_dict, dict) or not all(
        isinstance(name, str) and isinstance(tensor, torch.Tensor) for name, tensor in state_dict.items()
    ):
        raise CheckpointError(f"{path}: its 'state_dict' is not a mapping of names to tensors")
    bad = [
        name
        for name, tensor in state_dict.items()
        if (tensor.is_floating_point() or tensor.is_complex()) and not torch.isfinite(tensor).all()
    ]
    if bad:
        raise CheckpointError(
            f"{path}: its weights hold NaN or infinite values ({len(bad)} tensor(s): {', '.join(bad[:3])}"
            f"{', ...' if len(bad) > 3 else ''}): the training that wrote it diverged"
        )


# the ModelCheckpoint state entries that name files: Lightning deletes some of them as better checkpoints arrive
_PATH_KEYS = ("best_model_path", "kth_best_model_path", "last_model_path")


def _check_callback_paths(callbacks: Any, path: Path) -> None:
    """Refuse a checkpoint-callback state that names files outside the checkpoint's own folder.

    Lightning's ModelCheckpoint restores these paths on resume, later loads the best one and deletes those
    that fall out of its top k: a path like `<dir>/../../.bashrc` would point both outside the run.
    """
    if callbacks is None:
        return
    if not isinstance(callbacks, dict):
        raise CheckpointError(f"{path}: its 'callbacks' entry is not a mapping of callback states")
    folder = path.resolve().parent
    for name, state in callbacks.items():
        if not str(name).startswith("ModelCheckpoint") or not isinstance(state, dict):
            continue
        named = [state.get(key) for key in _PATH_KEYS] + list((state.get("best_k_models") or {}).keys())
        for value in named:
            if value in (None, ""):
                continue
            if not isinstance(value, str) or "://" in value or not _inside(Path(value), folder, state.get("dirpath")):
                raise CheckpointError(
                    f"{path}: its checkpoint-callback state names {value!r}, outside the checkpoint's folder; "
                    f"refused (genlab's runs keep their checkpoints side by side)"
                )


def _check_rng_states(states: Any, path: Path) -> None:
    """The random generators' states a resumed run restores (genlab/callbacks/resume.py): each one must set a
    generator of its kind, tried on fresh generators so that the process's own stay as they are."""
    if states is None:
        return
    try:
        random.Random().setstate(states["python"])
        numpy = states["numpy"]
        np.random.RandomState().set_state(
            (numpy["kind"], numpy["keys"].numpy(), numpy["position"], numpy["has_gauss"], numpy["cached_gaussian"])
        )
        torch.Generator().set_state(states["torch"])
        if not all(isinstance(state, torch.Tensor) and state.dtype == torch.uint8 for state in states.get("cuda", [])):
            raise TypeError("CUDA states that are not byte tensors")
    except (TypeError, ValueError, RuntimeError, KeyError, AttributeError, OverflowError) as err:
        raise CheckpointError(f"{path}: its random generators' states cannot be restored ({one_line(err)})") from None


def _inside(named: Path, folder: Path, dirpath: Any) -> bool:
    """`named` is a file directly in `folder`, or in the folder the run wrote to (`dirpath`: a moved run)."""
    if ".." in named.parts:
        return False
    parent = named.parent
    return parent == folder or named.resolve().parent == folder or (isinstance(dirpath, str) and str(parent) == dirpath)


def check_state_dict_fits(model: torch.nn.Module, state_dict: dict[str, Any]) -> None:
    """Every weight the model has (so far: a lazily built network checks when built) is in the checkpoint, with
    the same shape and type: a resumed run continues the same network."""
    mismatch = state_dict_mismatch(model, state_dict)
    if mismatch:
        raise CheckpointError(
            f"the checkpoint does not fit this run's {type(model).__name__} ({mismatch}): resume with the model "
            f"options it was trained with"
        )


def state_dict_mismatch(model: torch.nn.Module, state_dict: dict[str, Any]) -> str:
    """The model's weights that `state_dict` lacks, or holds in another shape or type, said in a few words ('' if
    none). A floating weight may come in any floating type (a precision's: load_state_dict casts it) whose values
    stay finite in the model's; any other type must be the model's own (an integer weight would load silently)."""
    expected = model.state_dict()
    found = {name: tensor for name, tensor in state_dict.items() if isinstance(tensor, torch.Tensor)}
    missing = sorted(expected.keys() - found.keys())
    both = [name for name in expected if name in found]
    shapes = [
        f"{name} {tuple(found[name].shape)} instead of {tuple(expected[name].shape)}"
        for name in both
        if found[name].shape != expected[name].shape
    ]
    types = [
        f"{name} {_type_name(found[name])} instead of {_type_name(expected[name])}"
        for name in both
        if not _castable(found[name], expected[name].dtype)
    ]
    return "; ".join(
        filter(
            None,
            [
                shapes and "shapes " + ", ".join(shapes[:3]),
                types and "types " + ", ".join(types[:3]),
                missing and "missing " + ", ".join(missing[:3]),
            ],
        )
    )


def _castable(found: torch.Tensor, expected: torch.dtype) -> bool:
    if found.dtype == expected:
        return True
    if not (found.dtype.is_floating_point and expected.is_floating_point):
        return False
    # a float64 weight of 1e300 is finite, and infinite once cast to float32
    return torch.finfo(found.dtype).max <= torch.finfo(expected).max or bool(
        found.abs().max() <= torch.finfo(expected).max if found.numel() else True
    )


def _type_name(tensor: torch.Tensor) -> str:
    return str(tensor.dtype).removeprefix("torch.")
