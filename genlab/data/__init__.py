"""LightningDataModules: image datasets held as tensors, and text tokenized into memory-mapped ids."""

from genlab.data.images import CIFAR10DataModule, FashionMNISTDataModule, ImageDataModule, MNISTDataModule
from genlab.data.text import ShakespeareDataModule, TextFileDataModule
from genlab.data.vocab import BpeVocab, CharVocab

__all__ = [
    "BpeVocab",
    "CIFAR10DataModule",
    "CharVocab",
    "FashionMNISTDataModule",
    "ImageDataModule",
    "MNISTDataModule",
    "ShakespeareDataModule",
    "TextFileDataModule",
]
