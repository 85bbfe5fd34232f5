"""How deep an image network goes: one stride-2 stage per halving of the image, down to 8 pixels or fewer.

Every image network of genlab (the DCGAN pair, the convolutional autoencoder and VAE, the U-Net, the coupling flow,
the classifier) takes its depth from the image size by this one rule: halve the sides while both are even and the
smaller is above 8 pixels. 28x28 (-> 14 -> 7) and 32x32 (-> 16 -> 8) keep the two stages they have always had;
16, 64, 128 and 256 get 1, 3, 4 and 5; an odd side stops the halving where it is (36 -> 18 -> 9, 48 -> 24 -> 12 -> 6).
A side that cannot halve at all (odd, or 8 pixels or fewer) is refused.
"""

from __future__ import annotations

from genlab.errors import ConfigError

LOWEST_SIDE = 8  # the halving stops at a side of at most this many pixels
MAX_WIDENING = 8  # stage widths double per halving up to 8 times the first, as DCGAN's (64 to 512 channels)


def halvings(height: int, width: int) -> int:
    """How many times the image halves on the way to its lowest resolution (0 where it cannot halve)."""
    count = 0
    while height % 2 == 0 and width % 2 == 0 and min(height, width) > LOWEST_SIDE:
        height, width, count = height // 2, width // 2, count + 1
    return count


def most_halvings(height: int, width: int) -> int:
    """How many times the image halves evenly at all: the most stride-2 stages a depth given by hand may have."""
    count = 0
    while height % 2 == 0 and width % 2 == 0:
        height, width, count = height // 2, width // 2, count + 1
    return count


def depth(image_shape: tuple[int, int, int], network: str) -> int:
    """`halvings` of the image, at least 1; an image that cannot halve is refused in one line."""
    _, height, width = image_shape
    count = halvings(height, width)
    if not count:
        raise ConfigError(
            f"{network} cannot take {height}x{width} images: it halves them on the way to {LOWEST_SIDE} pixels or "
            f"fewer, and these do not halve; it takes sides that are even and above {LOWEST_SIDE} "
            f"(16, 28, 32, 48, 64, 128, 256, ...)"
        )
    return count


def check_stages(image_shape: tuple[int, int, int], count: int, setting: str) -> None:
    """A depth given by hand (`setting`, as the config spells it) must halve the image evenly `count` times."""
    _, height, width = image_shape
    # the count first: 2**count of an absurd count (2**40 stages) is a number that never ends being computed
    if count > most_halvings(height, width) or height % 2**count or width % 2**count:
        raise ConfigError(
            f"{setting} halves the {height}x{width} images {count} times, which does not divide evenly; at most "
            f"{most_halvings(height, width)} for this size"
        )


def doubling_widths(first: int, count: int) -> tuple[int, ...]:
    """`count` stage widths from `first`, doubling per stage up to MAX_WIDENING times it: 32 -> (32, 64, 128, ...)."""
    return tuple(first * min(2**i, MAX_WIDENING) for i in range(count))


def stage_widths(image_shape: tuple[int, int, int], first: int, network: str) -> tuple[int, ...]:
    """One width per halving of the image (`depth`), doubling from `first`: the stages an image size gets by default."""
    return doubling_widths(first, depth(image_shape, network))
