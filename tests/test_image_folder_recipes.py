"""The 64-pixel recipes on a folder of the user's own images (experiment=<family>_image_folder): each trains its own
network, as deep as 64x64 asks, on a folder of two class subfolders, and src.sample draws 64x64 images from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from genlab.capabilities import StepwiseSampler
from genlab.checkpoints import load_model
from genlab.sample import main as sample_main
from genlab.train import main as train_main
from tests.helpers import TEST_OVERRIDES, run_main, write_class_folders

# what makes each recipe cheap on a CPU, leaving its depth to the image size: narrower networks, and the diffusion
# model's sampling steps (in validation and src.sample), grid and precision
CHEAP = {
    "gan": ["model.generator_channels=8", "model.discriminator_channels=8"],
    "diffusion": [
        "model.base_channels=8",
        "model.sample_steps=2",
        "model.num_grid_images=8",
        "trainer.precision=32",
    ],
}
CHEAP_SAMPLING = {"diffusion": ["steps=2"]}


@pytest.mark.integration
@pytest.mark.parametrize("family", ["gan", "diffusion", "vae"])
def test_a_64_pixel_recipe_trains_on_a_folder_and_samples_64x64_images(family: str, tmp_path: Path) -> None:
    folder = write_class_folders(tmp_path / "images", per_class=8, size=64)
    logs = f"paths.log_dir={tmp_path / 'logs'}"
    trained = run_main(
        train_main,
        f"experiment={family}_image_folder",
        f"data.path={folder}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "data.batch_size=4",
        *TEST_OVERRIDES,
        "trainer.limit_train_batches=2",
        "trainer.val_check_interval=2",
        "test=false",
        *CHEAP.get(family, []),
        logs,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    (checkpoint,) = (tmp_path / "logs").glob(f"{family}_image_folder/runs/*/checkpoints/last.ckpt")
    model = load_model(checkpoint)
    if isinstance(model, StepwiseSampler):
        model.set_sampling(steps=2)
    assert model.sample(2).shape == (2, 3, 64, 64)

    sampled = run_main(sample_main, f"ckpt_path={checkpoint}", "num_samples=4", *CHEAP_SAMPLING.get(family, []), logs)
    assert sampled.returncode == 0, sampled.stderr[-3000:]
    assert list((tmp_path / "logs").glob("sample/runs/*/samples.png"))
