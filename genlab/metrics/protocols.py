"""The evaluation protocols, named, so that a number says how it was measured and which published table it joins.

- `quick`: as many samples as the model draws in `sampling_minutes` (1,000-10,000), against the test split; no
  likelihood bound beyond what the family's test step logs. To follow and compare one's own runs.
- `paper`: 50,000 samples against the whole training split (validation images included), the protocol of the
  CIFAR-10 FIDs of DDPM (Ho et al. 2020, Table 1), EDM (Karras et al. 2022) and most papers since; and the
  likelihood bound in bits/dim over the whole test split (the VAE's with 5,000 importance samples, Burda et al.).

docs/evaluation.md says which published table each is comparable with.
"""

from __future__ import annotations

import dataclasses
from typing import Literal


@dataclasses.dataclass(frozen=True)
class Protocol:
    """How many samples are scored against which real images, and over how many test images the likelihood."""

    num_samples: int | None  # None: as many as fit in sampling_minutes, between 1,000 and 10,000
    reference_split: Literal["train", "test"]  # train: the whole official training split
    likelihood_images: int | None  # 0: none; None: the whole test split


PROTOCOLS = {
    "quick": Protocol(num_samples=None, reference_split="test", likelihood_images=0),
    "paper": Protocol(num_samples=50_000, reference_split="train", likelihood_images=None),
}
