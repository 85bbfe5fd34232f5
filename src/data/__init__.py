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
