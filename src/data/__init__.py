"""LightningDataModules: image datasets held as tensors, and character-level text."""

from src.data.images import CIFAR10DataModule, FashionMNISTDataModule, ImageDataModule, MNISTDataModule
from src.data.text import CharVocab, ShakespeareDataModule

__all__ = [
    "CIFAR10DataModule",
    "CharVocab",
    "FashionMNISTDataModule",
    "ImageDataModule",
    "MNISTDataModule",
    "ShakespeareDataModule",
]

# the datamodules a checkpoint's data config may name (src.eval rebuilds a run's data from it): a checkpoint
# is data from anyone, and whatever else it names is never imported or called
DATA_CLASSES = frozenset(
    {
        "src.data.images.MNISTDataModule",
        "src.data.images.FashionMNISTDataModule",
        "src.data.images.CIFAR10DataModule",
        "src.data.text.ShakespeareDataModule",
    }
)
