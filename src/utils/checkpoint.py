"""Write this project's checkpoints atomically; read them as data and rebuild only genlab's own models from them."""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_class
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from src.errors import ConfigError, GenlabError, one_line
from src.models import MODEL_CLASSES
from src.utils.config import run_identity

log = logging.getLogger(__name__)


class CheckpointError(GenlabError):
    """A checkpoint path that is missing, unreadable, unsafe, or not one of this project's."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write each checkpoint to a temporary file beside its target, sync it to disk, then rename it over the target.

    A run killed during a save (kill -9, a node lost) leaves the previous checkpoint whole; at worst a stray
    `.<name>.partial` remains, overwritten by the next save. Lightning's own writer stages the file in the
    system's temporary folder and moves it, which is a copy, not a rename, when that folder is on another
    file system (tmpfs, a node's local disk against a shared one). Remote URLs keep Lightning's writer.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        partial = path.with_name(f".{path.name}.partial")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(partial, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())  # the bytes are on disk before the name points at them
            os.replace(partial, path)
            _fsync_folder(path.parent)  # and the rename itself survives a power cut
        except OSError as err:  # a full disk, a read-only or missing folder: the previous checkpoint stays whole
            with contextlib.suppress(OSError):
                partial.unlink(missing_ok=True)
            cause = (err.strerror or one_line(err)) + (f" ({err.filename})" if err.filename else "")
            raise CheckpointError(
                f"could not write the checkpoint {path}: {cause}; the previous one, if any, is unchanged"
            ) from None


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def resume_path(ckpt_path: str | None, task_dir: Path) -> str | None:
    """The checkpoint to resume from: `ckpt_path` as given, or for `last` the newest `checkpoints/last.ckpt`
    among the earlier runs under `task_dir` (runs/ and multiruns/) started with this run's overrides, aside
    from those in NOT_THE_RUN (src/utils/config.py): re-running the same command continues it, and so does the
    same command with a longer trainer.max_steps or max_epochs. None, with a log line, when there is none.
    """
    if ckpt_path != "last":
        if ckpt_path and "://" not in ckpt_path and not Path(ckpt_path).is_file():
            raise CheckpointError(f"ckpt_path={ckpt_path}: no such checkpoint file (or ckpt_path=last to resume)")
        return ckpt_path
    if not HydraConfig.initialized():
        raise ConfigError("ckpt_path=last finds earlier runs of the same command line: run through `python -m`")
    overrides = run_identity(HydraConfig.get().overrides.task)
    candidates = []
    for pattern in ("runs/*/.hydra/overrides.yaml", "multiruns/*/*/.hydra/overrides.yaml"):
        for overrides_file in task_dir.glob(pattern):
            last = overrides_file.parent.parent / "checkpoints" / "last.ckpt"
            if last.is_file() and run_identity(yaml.safe_load(overrides_file.read_text()) or []) == overrides:
                candidates.append(last)
    if not candidates:
        log.warning(
            f"ckpt_path=last: no earlier run of these overrides under {task_dir} has a last.ckpt; starting anew"
        )
        return None
    newest = max(candidates, key=lambda path: path.stat().st_mtime)
    log.info(f"ckpt_path=last: resuming from {newest}")
    return str(newest)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a genlab checkpoint as data: `torch.load(weights_only=True)`, which never runs code from the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
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
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint, or truncated (not a zip or pickle file)"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as err:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint, or truncated ({one_line(err)})") from None
    if not isinstance(checkpoint, dict) or not {"state_dict", "config", "hyper_parameters"} <= set(checkpoint):
        found = sorted(map(str, checkpoint))[:8] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(
            f"{path}: not a genlab checkpoint (expected 'state_dict', 'hyper_parameters' and 'config' entries, "
            f"found {found}); checkpoints written by `python -m src.train` have them"
        )
    return checkpoint


def model_class(checkpoint: dict[str, Any], path: str | Path) -> type[L.LightningModule]:
    """The genlab model class the checkpoint was trained as; anything outside `MODEL_CLASSES` is refused unimported."""
    model_config = checkpoint["config"].get("model") if isinstance(checkpoint["config"], dict) else None
    target = model_config.get("_target_") if isinstance(model_config, dict) else None
    if target not in MODEL_CLASSES:
        raise CheckpointError(
            f"{path}: names the model class {target!r}, which is not one of genlab's models "
            f"({', '.join(sorted(name.rsplit('.', 1)[1] for name in MODEL_CLASSES))}); refused without importing it"
        )
    return get_class(target)


def check_finite_weights(checkpoint: dict[str, Any], path: str | Path) -> None:
    """Refuse weights holding NaN or infinity: every output of such a model is NaN, so every metric is meaningless."""
    bad = [
        name
        for name, tensor in checkpoint["state_dict"].items()
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and not torch.isfinite(tensor).all()
    ]
    if bad:
        raise CheckpointError(
            f"{path}: its weights hold NaN or infinite values ({len(bad)} tensor(s): {', '.join(bad[:3])}"
            f"{', ...' if len(bad) > 3 else ''}): the training that wrote it diverged"
        )


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> L.LightningModule:
    """The model of a genlab checkpoint, in eval mode: Lightning's `load_from_checkpoint(weights_only=True)` on
    the class the checkpoint names, once it is known to be one of genlab's and its weights are finite."""
    checkpoint = load_checkpoint(path)
    cls = model_class(checkpoint, path)
    check_finite_weights(checkpoint, path)
    try:
        model = cls.load_from_checkpoint(path, map_location=map_location, weights_only=True)
    except (RuntimeError, TypeError, ValueError, KeyError) as err:  # shapes or hyperparameters that do not fit
        raise CheckpointError(f"{path}: cannot rebuild its {cls.__name__} ({one_line(err)})") from None
    return model.eval()


def check_resumable(path: str | Path, target: str) -> dict[str, Any]:
    """Before Lightning resumes from `path`: a readable genlab checkpoint of the family being trained; returned."""
    checkpoint = load_checkpoint(path)
    cls = model_class(checkpoint, path)
    if f"{cls.__module__}.{cls.__qualname__}" != target:
        raise CheckpointError(
            f"ckpt_path={path}: holds a {cls.__name__}, and this run trains a {target.rsplit('.', 1)[1]}: "
            f"resume with the model it was trained as (model= of that run), or start anew without ckpt_path"
        )
    check_finite_weights(checkpoint, path)
    return checkpoint


def run_folder_of(ckpt_path: str) -> Path | None:
    """The genlab run folder whose latest state `ckpt_path` is (`<run>/checkpoints/last.ckpt`): resuming it goes
    on writing there, so that one training is one folder and one line in TensorBoard. None for any other
    checkpoint: resuming from an earlier one branches off, into the new run's own folder."""
    path = Path(ckpt_path).resolve()
    run = path.parent.parent
    if path.name == "last.ckpt" and path.parent.name == "checkpoints" and (run / ".hydra").is_dir():
        return run
    return None


def check_state_dict_fits(model: L.LightningModule, state_dict: dict[str, Any]) -> None:
    """Every weight the model has (so far: a lazily built network checks when built) is in the checkpoint, with
    the same shape: a resumed run continues the same network."""
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    found = {name: tuple(tensor.shape) for name, tensor in state_dict.items() if isinstance(tensor, torch.Tensor)}
    missing = sorted(expected.keys() - found.keys())
    wrong = [f"{name} {found[name]} instead of {shape}" for name, shape in expected.items()
             if name in found and found[name] != shape]  # fmt: skip
    if missing or wrong:
        detail = "; ".join(filter(None, [wrong and "shapes " + ", ".join(wrong[:3]),
                                         missing and "missing " + ", ".join(missing[:3])]))  # fmt: skip
        raise CheckpointError(
            f"the checkpoint does not fit this run's {type(model).__name__} ({detail}): resume with the model "
            f"options it was trained with"
        )
