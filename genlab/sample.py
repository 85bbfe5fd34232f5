"""Sample from a checkpoint: `python -m src.sample ckpt_path=... [num_samples=64 | prompt="ROMEO:"]`.

Models that sample in steps (diffusion, flow matching) also take steps=, sampler= and guidance_scale=.

Needs only the checkpoint (it names one of genlab's models and holds its hyperparameters, a text
model's vocabulary among them), not the dataset. Image models write a grid, samples.png; text
models print their texts and write them to samples.txt; both in the run folder.
"""

from __future__ import annotations

import logging
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import hydra
import lightning as L
import torch
from omegaconf import DictConfig
from pydantic import Field
from torchvision.utils import save_image

from genlab.capabilities import ImageSampler, Temperature, TextGenerator, TopK, TopP, use_sampling_options
from genlab.checkpoints import load_model
from genlab.errors import ConfigError
from genlab.models.previews.image_grid import tile_grid
from genlab.utils.config import CONF_DIR
from genlab.utils.failed_runs import exit_on_user_error
from genlab.utils.files import check_replaceable, replaced_atomically, write_text_atomically
from genlab.utils.model_size import SizeLimits
from genlab.utils.signals import interruptible, signals_end_the_command
from genlab.utils.validation import check_config, check_options

log = logging.getLogger(__name__)

# generated a batch at a time, so that the network's activations stay small whatever num_samples is
BATCH_SIZE = 500
TEXT_BATCH_SIZE = 64
# a million characters: hours of generation on a CPU, and far more than a prompt or a sample needs
MAX_NEW_TOKENS = 1_000_000
MAX_PROMPT_BYTES = 1_000_000
MAX_TEXT_CHARACTERS = 100_000_000  # all the texts of one command together


def sample(cfg: DictConfig) -> Path:
    """Generate samples as the config says and write them to the run folder; return the file written."""
    check_options(SampleOptions, cfg, "src.sample")
    prompt = read_prompt(cfg.prompt_file) if cfg.prompt_file is not None else cfg.prompt  # nanoGPT's start=FILE:
    if "data" in cfg:
        log.info(f"src.sample draws from the checkpoint alone: data ({cfg.data.get('_target_')}) is not used")
    device = torch.device("cuda" if cfg.accelerator != "cpu" and torch.cuda.is_available() else "cpu")
    model = load_model(  # within limits.*; model.first_stage=...: see conf/sample.yaml
        cfg.ckpt_path, map_location=device, limits=SizeLimits.of(cfg.limits), trained=cfg.model
    )
    if not isinstance(model, (TextGenerator, ImageSampler)):
        raise ConfigError(
            f"{cfg.ckpt_path}: its model, {type(model).__name__}, does not generate samples (it is neither an "
            f"ImageSampler nor a TextGenerator); evaluate it with: python -m src.eval ckpt_path={cfg.ckpt_path}"
        )
    use_sampling_options(model, cfg)  # steps=, sampler=, guidance_scale=: refused for models that take none
    L.seed_everything(cfg.seed)
    path = Path(cfg.paths.output_dir) / ("samples.txt" if isinstance(model, TextGenerator) else "samples.png")
    check_replaceable(path, "the samples")  # not after the sampling
    with interruptible("sampling", "Run the same command again"), torch.no_grad():
        if isinstance(model, TextGenerator):
            num_samples = cfg.num_samples or 1
            check_text_size(num_samples, prompt, cfg.max_new_tokens)
            # a batch at a time, as images are: a text model's caches grow with the texts generated together
            texts = [
                text
                for start in range(0, num_samples, TEXT_BATCH_SIZE)
                for text in model.generate_text(
                    prompt,
                    cfg.max_new_tokens,
                    cfg.temperature,
                    cfg.top_k,
                    cfg.top_p,
                    min(TEXT_BATCH_SIZE, num_samples - start),
                    seed=None if cfg.seed is None else cfg.seed + start // TEXT_BATCH_SIZE,
                )
            ]
        else:
            num_samples = cfg.num_samples or 64
            check_fits_in_memory(model, num_samples)
            images = torch.cat(
                [
                    model.sample(min(BATCH_SIZE, num_samples - start)).cpu()
                    for start in range(0, num_samples, BATCH_SIZE)
                ]
            )
    if isinstance(model, TextGenerator):
        separator = "\n\n" + "-" * 40 + "\n\n"
        print(terminal_safe(separator.join(texts)))
        write_text_atomically(path, separator.join(texts) + "\n", "the samples")
        log.info(f"Wrote {len(texts)} text(s) of {cfg.max_new_tokens} new tokens to {path}")
    else:
        # (N, C, H, W) in [0, 1], tiles drawn at a legible size as the training pictures are
        with replaced_atomically(path, "wb", "the samples") as file:
            save_image(tile_grid(images, nrow=cfg.nrow or math.ceil(math.sqrt(len(images)))), file, format="png")
        log.info(f"Wrote {len(images)} samples to {path}")
    return path


def terminal_safe(text: str) -> str:
    """`text` with every character a terminal would act on (carriage return, escape sequences) written as its
    escape, e.g. `\\r`: the file keeps the text as generated, the console shows it."""
    return "".join(char if char.isprintable() or char in "\n\t" else repr(char)[1:-1] for char in text)


@dataclass(frozen=True)
class SampleOptions:
    """What src.sample's command line may ask for, each type and range declared once: checked before the checkpoint
    is read (genlab/utils/validation.py's check_options), stepped past by tests/helpers.py's declared_breaches. The
    model checks what only it knows: a text model its vocabulary, a stepwise sampler its steps, sampler and
    guidance; the memory that num_samples images take is measured once the model is known."""

    num_samples: Annotated[int, Field(ge=1, strict=True)] | None = None  # null: 64 images, or 1 text
    nrow: Annotated[int, Field(ge=1, strict=True)] | None = None
    prompt: str = "\n"
    prompt_file: str | None = None
    max_new_tokens: Annotated[int, Field(ge=1, le=MAX_NEW_TOKENS, strict=True)] = 500
    temperature: Annotated[Temperature, Field(strict=True)] = 0.8  # a TextGenerator's declarations (capabilities)
    top_k: Annotated[TopK, Field(strict=True)] | None = None
    top_p: Annotated[TopP, Field(strict=True)] | None = None
    steps: Annotated[int, Field(ge=1, strict=True)] | None = None
    sampler: str | None = None
    guidance_scale: float | None = None


def read_prompt(path: str) -> str:
    """The text of prompt_file: a regular file of at most MAX_PROMPT_BYTES bytes of UTF-8. A text model continues the
    last block_size characters of its prompt; a file of 200 MB would be encoded whole, as 8 bytes a character."""
    try:  # non-blocking: a FIFO (or a device) is refused, never waited on
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as err:
        raise ConfigError(f"prompt_file={path}: cannot be read ({err.strerror})") from None
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise ConfigError(f"prompt_file={path}: not a regular file")
    with os.fdopen(descriptor, "rb") as file:
        data = file.read(MAX_PROMPT_BYTES + 1)
    if len(data) > MAX_PROMPT_BYTES:
        raise ConfigError(
            f"prompt_file={path}: larger than {MAX_PROMPT_BYTES:,} bytes, the most a prompt may hold (the model "
            f"continues its last block_size characters)"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"prompt_file={path}: not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start:,})"
        ) from None


def check_text_size(num_samples: int, prompt: str, max_new_tokens: int) -> None:
    """Refuse texts that together would hold more than MAX_TEXT_CHARACTERS characters (each is printed, kept and
    written whole)."""
    total = num_samples * (len(prompt) + max_new_tokens)
    if total > MAX_TEXT_CHARACTERS:
        raise ConfigError(
            f"num_samples={num_samples} texts of {len(prompt):,} + max_new_tokens={max_new_tokens:,} characters: "
            f"{total:,} in all, more than the {MAX_TEXT_CHARACTERS:,} that src.sample writes at once"
        )


def check_fits_in_memory(model: ImageSampler, num_samples: int) -> None:
    """Refuse a grid whose images (float32, twice over: samples and grid) would not fit in the free memory."""
    image_bytes = 4 * model.sample(1).numel()
    needed = 2 * num_samples * image_bytes
    free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if needed > free:
        raise ConfigError(
            f"num_samples={num_samples}: a grid of that many images needs about {needed / 2**30:.1f} GiB, and "
            f"{free / 2**30:.1f} GiB of memory is free; at most {free // (2 * image_bytes)} here"
        )


@signals_end_the_command
@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="sample")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    check_config(cfg.limits, "limits")
    # every phase stops on one signal; the sampling below names itself
    with interruptible("loading the checkpoint, or writing the samples", "Run the same command again"):
        sample(cfg)


if __name__ == "__main__":
    main()
