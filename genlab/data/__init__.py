"""LightningDataModules: image datasets held as tensors, and character-level text."""

from genlab.data.images import CIFAR10DataModule, FashionMNISTDataModule, ImageDataModule, MNISTDataModule
from genlab.data.text import CharVocab, ShakespeareDataModule

__all__ = [
    "CIFAR10DataModule",
    "CharVocab",
    "FashionMNISTDataModule",
    "ImageDataModule",
    "MNISTDataModule",
    "ShakespeareDataModule",
]
