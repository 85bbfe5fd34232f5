"""src.eval's defaults that fit the model: a sample count sized from its sampling speed, said before it is drawn, and
a KID subset size that never makes subsets of the whole set (whose std over subsets would be 0)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from genlab import eval as eval_module
from genlab.errors import ConfigError
from genlab.eval import MAX_SAMPLES, MIN_SAMPLES, first_samples, kid_subset_size
from genlab.utils.config import compose


class CountingSampler:
    """An ImageSampler that takes `seconds_per_image` of a fake clock to draw each image."""

    device = torch.device("cpu")

    def __init__(self, clock: list[float], seconds_per_image: float) -> None:
        self.clock, self.seconds_per_image, self.drawn = clock, seconds_per_image, 0

    def sample(self, num_samples: int) -> torch.Tensor:
        self.clock[0] += num_samples * self.seconds_per_image
        self.drawn += num_samples
        return torch.rand(num_samples, 1, 28, 28)


@pytest.mark.parametrize(
    ("seconds_per_image", "minutes", "num_samples", "expected", "said"),
    [
        (0.001, 5, None, MAX_SAMPLES, "Generating 10,000 samples (as many as fit in sampling_minutes=5"),
        (
            0.1,
            5,
            None,
            3_000,
            "Generating 3,000 samples (as many as fit in sampling_minutes=5, within 1,000-10,000) "
            "at 10.0 images/s: about 5.0 min to draw them",
        ),
        (2.0, 5, None, MIN_SAMPLES, "Generating 1,000 samples (as many as fit in sampling_minutes=5"),
        (0.1, 5, 20_000, 20_000, "Generating 20,000 samples (num_samples) at 10.0 images/s: about 33.3 min to draw"),
        (0.1, 5, 300, 300, "Generating 300 samples (num_samples) at 10.0 images/s: about 30 s to draw them"),
    ],
)
def test_the_sample_count_is_sized_from_the_first_batch_and_its_time_said_before_the_rest(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    seconds_per_image: float,
    minutes: float,
    num_samples: int | None,
    expected: int,
    said: str,
) -> None:
    clock = [0.0]
    monkeypatch.setattr(eval_module.time, "perf_counter", lambda: clock[0])
    model = CountingSampler(clock, seconds_per_image)
    cfg = OmegaConf.create({"batch_size": 500, "num_samples": num_samples, "sampling_minutes": minutes})
    with caplog.at_level(logging.INFO, logger="genlab.eval"):
        images, count = first_samples(model, cfg)
    assert count == expected and len(images) == model.drawn == min(500, expected)  # the timed batch is kept
    assert any(record.getMessage().startswith(said) for record in caplog.records), caplog.text


def test_kid_subsets_are_at_most_half_of_the_smaller_set(caplog: pytest.LogCaptureFixture) -> None:
    assert kid_subset_size(1000, 10_000, 10_000) == 1000
    assert kid_subset_size(50, 100, 300) == 50 and not caplog.records
    assert kid_subset_size(1000, 10_000, 500) == 250  # not 500: every subset would be all 500 samples
    assert (
        "metrics.kid_subset_size=1000 is more than half of the 500 images scored: KID on subsets of 250" in caplog.text
    )
    assert kid_subset_size(1000, 120, 10_000) == 60  # a small test split, likewise
    with pytest.raises(ConfigError, match="KID needs at least 4 images of each kind; 3 real"):
        kid_subset_size(1000, 3, 10_000)


def test_kid_std_over_subsets_of_the_whole_set_is_zero_and_over_halves_is_not() -> None:
    """Why the subsets are halved: torchmetrics' KID over subsets as large as the sets measures one value 100 times."""
    import warnings

    from torchmetrics.image.kid import KernelInceptionDistance

    warnings.filterwarnings("ignore", message=".*will save all extracted features in buffer")

    torch.manual_seed(0)
    real, fake = torch.randn(40, 8), torch.randn(40, 8) + 0.5

    def kid_std(subset_size: int) -> float:
        kid = KernelInceptionDistance(feature=torch.nn.Identity(), subset_size=subset_size)
        kid.update(real, real=True)
        kid.update(fake, real=False)
        return float(kid.compute()[1])

    whole, halves = kid_std(40), kid_std(kid_subset_size(1000, 40, 40))
    assert whole < 1e-6 < halves / 100  # the whole set's: float32 rounding, no spread


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("num_samples=3", "num_samples=3 is not valid for src.eval: expected int or null (Input should be greater "),
        ("num_samples=nan", "num_samples=nan: must be a finite number"),
        ("num_samples=abc", "num_samples='abc' is not valid for src.eval: expected int or null (Input should be a "),
        ("batch_size=0", "batch_size=0 is not valid for src.eval: expected int (Input should be greater than or "),
        ("metrics.kid_subset_size=1", "metrics.kid_subset_size=1 is not valid for src.eval: expected int (Input "),
        ("sampling_minutes=inf", "sampling_minutes=inf: must be a finite number"),
        ("sampling_minutes=-1", "sampling_minutes=-1 is not valid for src.eval: expected float (Input should be "),
        ("sampling_minutes=soon", "sampling_minutes='soon' is not valid for src.eval: expected float (Input should "),
    ],
)
def test_a_bad_count_or_time_is_refused_in_one_line_before_the_checkpoint_is_read(
    tmp_path: Path, override: str, message: str, capsys: pytest.CaptureFixture
) -> None:
    from genlab.eval import main

    cfg = compose(["ckpt_path=/nonexistent.ckpt", f"paths.output_dir={tmp_path / 'run'}", override], "eval")
    with pytest.raises(SystemExit) as exit_info:
        main.__wrapped__(cfg)  # the entry point as Hydra calls it
    # not the missing checkpoint: refused before it is read (every declared bound: tests/test_bounds.py)
    assert exit_info.value.code.startswith(f"error: {message}") and "\n" not in exit_info.value.code
    assert capsys.readouterr().err == "" and list(tmp_path.iterdir()) == []
