"""Image folders (data=image_folder): the batches of a built-in dataset bit for bit, the cache, labels and formats,
bad data, the batch's random flip, and litdata streaming; on folders and ZIPs that each test writes."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import struct
import zipfile
import zlib
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from PIL import Image

from genlab.callbacks.resume import ExactResume
from genlab.data.image_folder import ImageFolderDataModule
from genlab.data.images import FashionMNISTDataModule, MNISTDataModule
from genlab.errors import ConfigError, CorruptDatasetError, DatasetNotFoundError
from genlab.utils.checkpoint_reader import read_checkpoint
from genlab.utils.instantiate import instantiate
from tests.helpers import TEST_OVERRIDES, compose_config, run_main

MNIST_SHAPE = {"image_shape": (1, 28, 28), "num_classes": 10}


def image_folder(tmp_path: Path, *overrides: str) -> ImageFolderDataModule:
    """The datamodule that `data=image_folder <overrides>` builds, its cache under tmp_path."""
    cfg = compose_config(["data=image_folder", f"paths.cache_dir={tmp_path / 'cache'}", *overrides], tmp_path / "run")
    return instantiate(cfg.data, "data")


def ready(datamodule, stage: str | None = None):
    datamodule.prepare_data()
    datamodule.setup(stage)
    return datamodule


def write_image(path: Path, array: np.ndarray, **save) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **save)
    return path


def class_folders(root: Path, per_class: int = 8, size: tuple[int, int] = (40, 48), seed: int = 0) -> Path:
    """Random RGB PNGs in two class subfolders, cat/ and dog/."""
    rng = np.random.default_rng(seed)
    for name in ("cat", "dog"):
        for i in range(per_class):
            write_image(root / name / f"{i:03d}.png", rng.integers(0, 256, (*size, 3), dtype=np.uint8))
    return root


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_images_decoded_in_worker_processes_are_those_decoded_here_in_the_same_order(
    tmp_path: Path, start_method: str
) -> None:
    """decode_into_memory's workers write into one block of memory shared with this process (forked), or hand their
    batches back (a start method that shares none); decode_listing hands batches to its caller (the chunks). All
    three give the images and labels decoded in this process, an unreadable file skipped in each."""
    from genlab.data.image_decode import DecodeSettings, decode_into_memory, decode_listing
    from genlab.utils.image_files import list_images

    folder = class_folders(tmp_path / "images", per_class=150, size=(20, 24))
    (folder / "dog" / "077.png").write_bytes(b"not a picture")
    listing, settings = list_images(folder, "auto"), DecodeSettings(16, 3, "center_crop")
    skipped: list[str] = []
    here = decode_into_memory(listing, settings, 0, lambda name, why: skipped.append(name))
    context = torch.multiprocessing.get_context(start_method)
    with pytest.MonkeyPatch.context() as patch:  # the start method the DataLoader's workers are made with
        patch.setattr(torch.multiprocessing, "get_start_method", context.get_start_method)
        patch.setattr(
            torch.utils.data.DataLoader, "multiprocessing_context", property(lambda _: context, lambda *_: None)
        )
        workers = decode_into_memory(listing, settings, 2, lambda name, why: skipped.append(name))
    batches: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    decode_listing(listing, settings, 2, lambda name, why: skipped.append(name), lambda *batch: batches.append(batch))
    assert skipped == ["dog/077.png"] * 3 and here[0].shape == (299, 3, 16, 16) and here[2].kept == 299
    assert torch.equal(workers[0], here[0]) and torch.equal(workers[1], here[1])
    positions, images, labels = (torch.cat(parts) for parts in zip(*batches, strict=True))
    assert (
        torch.equal(images, here[0])
        and torch.equal(labels, here[1])
        and listing.names.index("dog/077.png") not in positions
    )


# --- the same batches as a built-in dataset --------------------------------------------------------------------------


def export_edm(images: torch.Tensor, labels: torch.Tensor, root: Path, as_zip: bool) -> Path:
    """Images (N, 1, H, W) uint8 as PNGs in EDM's dataset_tool layout (00000/img00000000.png, dataset.json
    labels), in a folder or a ZIP."""
    names = [f"{i // 1000:05d}/img{i:08d}.png" for i in range(len(images))]
    files = {}
    for name, image in zip(names, images, strict=True):
        buffer = io.BytesIO()
        Image.fromarray(image[0].numpy()).save(buffer, format="PNG")
        files[name] = buffer.getvalue()
    pairs = [[name, int(label)] for name, label in zip(names, labels, strict=True)]
    files["dataset.json"] = json.dumps({"labels": pairs}).encode()
    if as_zip:
        with zipfile.ZipFile(root.with_suffix(".zip"), "w") as archive:
            for name, data in files.items():
                archive.writestr(name, data)
        return root.with_suffix(".zip")
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def assert_same_batches(builtin, datamodule) -> None:
    ready(builtin)
    ready(datamodule)
    for split in ("data_train", "data_val", "data_test"):
        expected, got = getattr(builtin, split), getattr(datamodule, split)
        assert torch.equal(expected.images, got.images) and torch.equal(expected.labels, got.labels), split
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        L.seed_everything(42)  # as src.train does before building the datamodule: the shuffle's seed
        expected = list(getattr(builtin, loader)())
        L.seed_everything(42)
        got = list(getattr(datamodule, loader)())
        assert len(expected) == len(got) > 0, loader
        for (expected_images, expected_labels), (images, labels) in zip(expected, got, strict=True):
            assert torch.equal(expected_images, images) and torch.equal(expected_labels, labels), loader


def exported_as_png(builtin, tmp_path: Path, as_zip: bool, *overrides: str) -> ImageFolderDataModule:
    """`data=image_folder` over the built-in dataset's train and test splits exported as PNGs."""
    builtin.prepare_data()
    paths = {}
    for split, train in (("train", True), ("test", False)):
        images, labels = builtin.load_split(train)
        paths[split] = export_edm(images, labels, tmp_path / split, as_zip)
    return image_folder(
        tmp_path,
        f"data.path={paths['train']}",
        f"data.test_path={paths['test']}",
        "data.image_size=28",
        "data.channels=1",
        *overrides,
    )


@pytest.mark.parametrize("as_zip", [False, True], ids=["folder", "zip"])
def test_mnist_exported_as_pngs_gives_the_same_batches_bit_for_bit(
    mnist_dir: Path, tmp_path: Path, as_zip: bool
) -> None:
    builtin = MNISTDataModule(str(mnist_dir), **MNIST_SHAPE, val_size=100)
    datamodule = exported_as_png(builtin, tmp_path, as_zip, "data.val_size=100")
    assert datamodule.num_classes == 10 and datamodule.image_shape == (1, 28, 28)
    assert_same_batches(builtin, datamodule)


@pytest.mark.slow
def test_fashion_mnist_exported_as_pngs_gives_the_same_batches_bit_for_bit(
    fashion_mnist_dir: Path, tmp_path: Path
) -> None:
    builtin = FashionMNISTDataModule(str(fashion_mnist_dir), **MNIST_SHAPE)  # data=fashion_mnist's settings
    datamodule = exported_as_png(builtin, tmp_path, False, "data.val_size=5000")
    assert_same_batches(builtin, datamodule)


# --- the cache -------------------------------------------------------------------------------------------------------


def test_second_run_reads_the_cache_and_a_changed_file_is_decoded_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = class_folders(tmp_path / "images")
    changed = write_image(folder / "cat" / "changed.bmp", np.full((40, 48, 3), 200, np.uint8))  # a BMP: no compression
    settings = (f"data.path={folder}", "data.image_size=16", "data.batch_size=4")
    caplog.set_level(logging.INFO, logger="genlab.data.image_folder")
    first = ready(image_folder(tmp_path, *settings), "fit")
    assert "Decoding 17 images" in caplog.text
    caplog.clear()
    again = ready(image_folder(tmp_path, *settings), "fit")
    assert "Decoding" not in caplog.text  # read from the cache file
    assert torch.equal(first.data_train.images, again.data_train.images)

    # other pixels, the same size, a later modification time: the cache is not read stale
    size = changed.stat().st_size
    write_image(changed, np.zeros((40, 48, 3), dtype=np.uint8))
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    assert changed.stat().st_size == size
    caplog.clear()
    after = ready(image_folder(tmp_path, *settings), "fit")
    assert "changed since its cache was made" in caplog.text and "Decoding 17 images" in caplog.text
    assert not torch.equal(first.data_train.images, after.data_train.images)

    # a cache file cut short (a full disk, say) is made again, not read
    (cache_file,) = (tmp_path / "cache" / "image_folder").glob("*.pt")
    cache_file.write_bytes(cache_file.read_bytes()[:1000])
    caplog.clear()
    ready(image_folder(tmp_path, *settings), "fit")
    assert "not a cache that can be read" in caplog.text and "Decoding 17 images" in caplog.text


def test_folder_too_large_for_memory_is_refused_naming_streaming(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = class_folders(tmp_path / "images")
    monkeypatch.setattr("genlab.data.image_folder.available_memory", lambda: 100_000)  # 16 images take 196,608 bytes
    with pytest.raises(ConfigError, match=r"take 196\.6 kB in memory .* set data\.streaming=true"):
        ready(image_folder(tmp_path, f"data.path={folder}"))


# --- labels, formats, resizing -----------------------------------------------------------------------------------


def test_class_subfolders_are_the_labels_a_model_config_reads(tmp_path: Path) -> None:
    folder = class_folders(tmp_path / "images")
    test = class_folders(tmp_path / "test", per_class=2)
    (test / "cat").rename(test / "zebra_is_not_a_class")
    cfg = compose_config(["model=gan", "data=image_folder", f"data.path={folder}"], tmp_path / "run")
    assert cfg.model.num_classes == 2 and list(cfg.model.image_shape) == [3, 64, 64]  # what model=gan is built with
    with pytest.raises(ConfigError, match="data.test_path=.* has classes that data.path has not: zebra_is_not_a_class"):
        ready(image_folder(tmp_path, f"data.path={folder}", f"data.test_path={test}", "data.batch_size=4"))

    # a test folder with fewer classes keeps the training folder's numbers: dog is 1 in both
    (test / "zebra_is_not_a_class").rename(test / "dog_only")
    for image in (test / "dog_only").iterdir():
        image.rename(test / "dog" / f"more_{image.name}")
    (test / "dog_only").rmdir()
    datamodule = ready(image_folder(tmp_path, f"data.path={folder}", f"data.test_path={test}", "data.batch_size=4"))
    assert datamodule.data_test.labels.tolist() == [1, 1, 1, 1]
    assert sorted(datamodule.data_train.labels.tolist() + datamodule.data_val.labels.tolist()) == [0] * 8 + [1] * 8

    unlabelled = compose_config(["data=image_folder", f"data.path={folder}", "data.labels=none"], tmp_path / "run")
    assert unlabelled.data.num_classes == 0


def solid(color: tuple[int, ...], mode: str, size: tuple[int, int] = (20, 24)) -> Image.Image:
    return Image.new(mode, size, color)


# each format and mode, a solid colour, and what it becomes as RGB: transparent pixels over white, 16-bit scaled
FORMATS = {
    "a_gray.png": (solid(100, "L"), {}, (100, 100, 100)),
    "b_rgb.jpg": (solid((200, 50, 10), "RGB"), {"quality": 95}, (200, 50, 10)),
    "c_transparent.png": (solid((0, 0, 0, 0), "RGBA"), {}, (255, 255, 255)),
    "d_opaque.png": (solid((10, 20, 30, 255), "RGBA"), {}, (10, 20, 30)),
    "e_palette.png": (solid((70, 80, 90), "RGB").convert("P", palette=Image.Palette.ADAPTIVE), {}, (70, 80, 90)),
    "f_lossless.webp": (solid((0, 255, 0), "RGB"), {"lossless": True}, (0, 255, 0)),
    "g_bitmap.bmp": (solid((1, 2, 3), "RGB"), {}, (1, 2, 3)),
    "h_sixteen_bit.png": (solid(0x8000, "I;16"), {}, (128, 128, 128)),
    "i_tiff.tiff": (solid((40, 41, 42), "RGB"), {}, (40, 41, 42)),
}


def test_every_format_and_mode_decodes_to_its_colour(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    for name, (image, save, _) in FORMATS.items():
        image.save(tmp_path / "images" / name, **save)
    datamodule = image_folder(tmp_path, f"data.path={tmp_path / 'images'}", "data.image_size=16", "data.val_size=1")
    images, labels = datamodule.load_split(train=True)  # in the order of the names
    assert images.shape == (len(FORMATS), 3, 16, 16) and images.dtype == torch.uint8
    assert labels.tolist() == [0] * len(FORMATS) and datamodule.num_classes == 0
    for image, (name, (*_, expected)) in zip(images, FORMATS.items(), strict=True):
        error = (image.int() - torch.tensor(expected).view(3, 1, 1)).abs().max()
        assert error <= (3 if name.endswith(".jpg") else 0), name
    gray = image_folder(tmp_path, f"data.path={tmp_path / 'images'}", "data.channels=1", "data.val_size=1")
    assert gray.load_split(train=True)[0].shape == (len(FORMATS), 1, 64, 64)


def test_resize_policies_center_crop_and_stretch(tmp_path: Path) -> None:
    bands = np.zeros((32, 96, 3), dtype=np.uint8)  # three vertical bands: red | green | blue
    bands[:, :32, 0], bands[:, 32:64, 1], bands[:, 64:, 2] = 255, 255, 255
    write_image(tmp_path / "images" / "bands.png", bands)
    cropped = image_folder(tmp_path, f"data.path={tmp_path / 'images'}", "data.image_size=16", "data.val_size=1")
    band = cropped.load_split(train=True)[0][0].int()  # the centred square: green (Lanczos rings a little)
    assert band[1].min() >= 240 and band[[0, 2]].max() <= 15
    stretched = image_folder(tmp_path, f"data.path={tmp_path / 'images'}", "data.image_size=16", "data.resize=stretch")
    band = stretched.load_split(train=True)[0][0].int()  # all three bands, squeezed
    assert band[0, :, 0].min() >= 240 and band[1, :, 8].min() >= 240 and band[2, :, 15].min() >= 240


# --- bad data: one line, and nothing lost ----------------------------------------------------------------------------


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def decompression_bomb() -> bytes:
    """A PNG of a few bytes whose header declares 30,000 x 30,000 pixels (900 million; PIL's limit is 89 million)."""
    header = struct.pack(">IIBBBBB", 30_000, 30_000, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))


def cat(folder: Path, name: str) -> Path:
    return folder / "cat" / name


# the bad file put among 16 good images (cat/ and dog/), and what is said of it; None: the folder itself is refused
UNREADABLE = {
    "truncated": (lambda f: cat(f, "003.png").write_bytes(cat(f, "003.png").read_bytes()[:300]), "truncated"),
    "corrupt": (lambda f: cat(f, "003.png").write_bytes(os.urandom(500)), "cannot identify image file"),
    "zero_bytes": (lambda f: cat(f, "003.png").write_bytes(b""), "an empty file (0 bytes)"),
    "decompression_bomb": (lambda f: cat(f, "003.png").write_bytes(decompression_bomb()), "decompression bomb"),
    "symlink_to_itself": (
        lambda f: (cat(f, "003.png").unlink(), os.symlink("003.png", cat(f, "003.png"))),
        "Too many levels of symbolic links",
    ),
}
REFUSED = {
    "empty_folder": (lambda f: [path.unlink() for path in f.rglob("*.png")], DatasetNotFoundError, "holds no files"),
    "no_images": (
        lambda f: ([path.unlink() for path in f.rglob("*.png")], (f / "cat" / "notes.txt").write_text("hi")),
        DatasetNotFoundError,
        r"holds 1 file but no images \(e.g. cat/notes.txt\): expected .*\.png",
    ),
    "symlink_loop": (lambda f: os.symlink(f, f / "cat" / "loop"), CorruptDatasetError, "a loop"),
    "images_beside_classes": (
        lambda f: write_image(f / "stray.png", np.zeros((8, 8), np.uint8)),
        ConfigError,
        r"images at its top \(stray.png\) beside subfolders, which data.labels=auto takes as classes \(cat, dog\)",
    ),
    "empty_class_folder": (
        lambda f: (f / "bird").mkdir(),
        DatasetNotFoundError,
        "its subfolder bird holds no images, and data.labels=auto takes every subfolder as a class",
    ),
    "not_a_zip": (lambda f: None, ConfigError, "is a file but not a ZIP"),
    "missing": (lambda f: None, DatasetNotFoundError, "no such folder or ZIP file"),
    "bad_labels_file": (
        lambda f: (f / "dataset.json").write_text('{"labels": [["cat/000.png", "cat"]]}'),
        CorruptDatasetError,
        r"dataset.json: expected \{\"labels\"",
    ),
}


@pytest.mark.parametrize("case", UNREADABLE)
def test_an_unreadable_image_is_named_or_skipped_and_counted(
    tmp_path: Path, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    folder = class_folders(tmp_path / "images")
    spoil, said = UNREADABLE[case]
    spoil(folder)
    settings = (f"data.path={folder}", "data.image_size=16", "data.batch_size=4")
    refused = rf"cat/003.png cannot be read as an image \(.*{re.escape(said)}.*skip_unreadable"
    with pytest.raises(CorruptDatasetError, match=refused):
        ready(image_folder(tmp_path, *settings))
    assert not list((tmp_path / "cache").rglob("*.pt"))  # no cache of a refused folder

    caplog.set_level(logging.WARNING, logger="genlab.data.image_folder")
    datamodule = ready(image_folder(tmp_path, *settings, "data.skip_unreadable=true"))
    assert len(datamodule.data_train) + len(datamodule.data_val) == 15
    (warning,) = [record.getMessage() for record in caplog.records if "left out" in record.getMessage()]
    assert "left out 1 of 16 images that cannot be read (data.skip_unreadable=true): cat/003.png (" in warning


@pytest.mark.parametrize("case", REFUSED)
def test_a_folder_that_cannot_be_used_is_refused_in_one_line(tmp_path: Path, case: str) -> None:
    folder = class_folders(tmp_path / "images", per_class=2)
    spoil, error, said = REFUSED[case]
    spoil(folder)
    path = {"not_a_zip": folder / "cat" / "000.png", "missing": tmp_path / "nowhere"}.get(case, folder)
    with pytest.raises(error, match=said) as refused:
        ready(image_folder(tmp_path, f"data.path={path}", "data.batch_size=1"))
    assert "\n" not in str(refused.value)


def test_images_smaller_than_image_size_are_upscaled_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = class_folders(tmp_path / "images", size=(40, 48))
    write_image(folder / "dog" / "big.png", np.zeros((64, 80, 3), np.uint8))
    caplog.set_level(logging.WARNING, logger="genlab.data.image_folder")
    datamodule = ready(image_folder(tmp_path, f"data.path={folder}", "data.batch_size=4"), "fit")
    assert datamodule.data_train.images.shape[1:] == (3, 64, 64)
    (warning,) = [record.getMessage() for record in caplog.records]
    assert "16 of 17 images are smaller than 64 pixels on their shorter side, upscaled (e.g. cat/000.png)" in warning


# --- the batches of a resumed run ------------------------------------------------------------------------------------


class Recorder(L.LightningModule):
    """A one-weight model that keeps every training batch it is given (after the datamodule's flips)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[torch.Tensor] = []

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, _ = batch
        self.seen.append(images.clone())
        return self.weight * images.mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def batches_seen(datamodule, checkpoints: Path, max_steps: int, ckpt_path: Path | None = None) -> list[torch.Tensor]:
    """The training batches of a run of `max_steps` (4 batches an epoch) that saves a checkpoint every 5 steps,
    started afresh or from `ckpt_path`, as src.train runs it (its seed, ExactResume)."""
    L.seed_everything(42)
    model = Recorder()
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[
            ExactResume(),
            ModelCheckpoint(checkpoints, filename="{step}", every_n_train_steps=5, save_top_k=-1),
        ],
    )
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    return model.seen


@pytest.mark.parametrize("streaming", [False, True], ids=["in_memory", "litdata"])
def test_a_resumed_run_sees_the_batches_and_flips_of_the_unbroken_run(tmp_path: Path, streaming: bool) -> None:
    folder = class_folders(tmp_path / "images", per_class=9)  # 18 images: 17 train in batches of 4, 1 validates
    settings = [f"data.path={folder}", "data.image_size=16", "data.batch_size=4", "data.random_flip=true"]
    settings += [f"data.streaming={str(streaming).lower()}"]
    unbroken = batches_seen(image_folder(tmp_path, *settings), tmp_path / "checkpoints", max_steps=13)
    resumed = batches_seen(
        image_folder(tmp_path, *settings), tmp_path / "checkpoints", 13, tmp_path / "checkpoints" / "step=5.ckpt"
    )
    assert len(unbroken) == 13 and len(resumed) == 8  # from the middle of the second epoch, across the third
    for step, (expected, got) in enumerate(zip(unbroken[5:], resumed, strict=True), start=5):
        assert torch.equal(expected, got), f"batch {step} differs after resuming"

    # the flips are drawn on the batch: the same images in the same order as without them, half of them mirrored
    plain = batches_seen(image_folder(tmp_path, *settings[:-2], settings[-1]), tmp_path / "plain", max_steps=13)
    flipped = torch.cat(unbroken) != torch.cat(plain)  # (N, C, H, W)
    assert torch.equal(torch.where(flipped, torch.cat(plain).flip(-1), torch.cat(plain)), torch.cat(unbroken))
    assert 0.25 < flipped.flatten(1).any(1).float().mean() < 0.75


@pytest.mark.slow  # about 20 s on 2 loaded CPU cores: three pipelines, each over a folder of 300 JPEGs
def test_throughput_benchmark_measures_every_pipeline(tmp_path: Path) -> None:
    from benchmarks.image_folder_throughput import main

    out = tmp_path / "result.json"
    main(
        [
            "--images",
            "300",
            "--workers",
            "1",
            "--epochs",
            "1",
            "--rounds",
            "1",
            "--work",
            str(tmp_path),
            "--out",
            str(out),
        ]
    )
    rates = json.loads(out.read_text())["images_per_second"]
    pipelines = ("torchvision", "genlab", "litdata")
    assert {name.split()[0] for name in rates} == set(pipelines) and len(rates) == 8
    assert all(rate > 0 for rate in rates.values())


@pytest.mark.integration
def test_train_and_sample_a_conditional_gan_on_a_folder(tmp_path: Path) -> None:
    import genlab.sample
    import genlab.train

    folder = class_folders(tmp_path / "images", per_class=20, size=(36, 40))
    train = [
        "model=gan",
        "model.conditional=true",
        "model.generator_channels=8",
        "model.discriminator_channels=8",
        "data=image_folder",
        f"data.path={folder}",
        "data.image_size=32",
        "data.batch_size=8",
        "data.random_flip=true",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"paths.log_dir={tmp_path / 'outputs'}",
        *TEST_OVERRIDES,
    ]
    first = run_main(genlab.train.main, *train)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "Decoding 40 images" in first.stdout + first.stderr
    again = run_main(genlab.train.main, *train)  # the second run reads the cache
    assert again.returncode == 0 and "Decoding" not in again.stdout + again.stderr

    (checkpoint, *_) = sorted((tmp_path / "outputs").glob("train/runs/*/checkpoints/last.ckpt"))
    model = read_checkpoint(checkpoint)
    assert model["hyper_parameters"]["num_classes"] == 2 and model["hyper_parameters"]["image_shape"] == [3, 32, 32]
    sampled = run_main(genlab.sample.main, f"ckpt_path={checkpoint}", "num_samples=4", f"paths.log_dir={tmp_path}")
    assert sampled.returncode == 0, sampled.stderr[-3000:]
    (grid,) = tmp_path.glob("sample/runs/*/samples.png")
    assert Image.open(grid).size[0] > 64
