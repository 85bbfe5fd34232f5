"""The Inception-v3 of published FIDs, from a local weights file, through torch-fidelity's FeatureExtractorInceptionV3.

torch-fidelity (Obukhov et al.) reproduces the TensorFlow Inception graph of the original FID code (Heusel et al.
2017) and its numbers to within float error. Its extractor takes uint8 RGB images of any size and resizes them to
299x299 itself, with TensorFlow 1.x's bilinear resize (torch_fidelity.interpolate_compat_tensorflow), then scales
them to [-1, 1]. That resize is part of the metric: clean-fid (Parmar et al. 2022, "On Aliased Resizing and
Surprising Subtleties in GAN Evaluation") shows that another resize (PIL's antialiased one, torch's bilinear) moves
FID by several points, so genlab never resizes before it: images go in at their own resolution, quantized to 8 bits
as a PNG file would hold them, and grayscale is repeated to three channels (as published MNIST/Fashion-MNIST FIDs).

torch-fidelity unpickles a weights file it is given (torch.load with pickle's full powers), and downloads the weights
when given no file: genlab reads the file itself as checked data (genlab/utils/checkpoint_reader.py: tensors only)
and hands torch-fidelity a copy of those tensors in memory, so nothing is downloaded and nothing from the file is
unpickled.
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
from pathlib import Path

import torch
from torch import Tensor
from torch_fidelity import FeatureExtractorInceptionV3
from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

from genlab.checkpoints import CheckpointError
from genlab.utils.checkpoint_reader import read_state_dict

log = logging.getLogger(__name__)

# torch-fidelity's file: the same bytes as pytorch-fid's and clean-fid's pt_inception-2015-12-05-6726825d.pth
WEIGHTS_FILE_NAME = URL_INCEPTION_V3.rsplit("/", 1)[1]  # weights-inception-2015-12-05-6726825d.pth
PUBLISHED_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
# the features of FID, KID, precision and recall (the pool layer, 2048) and of the Inception Score (the logits
# without their bias, 1008 classes), as torch-fidelity's calculate_metrics takes them
FEATURE_LAYER, LOGITS_LAYER = "2048", "logits_unbiased"


def default_weights_path() -> Path:
    """Where torch hub (and so torch-fidelity) keeps the file once downloaded: $TORCH_HOME/hub/checkpoints/."""
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE_NAME


def weights_path(configured: str | None) -> Path:
    """metrics.inception_weights, else torch hub's copy; CheckpointError in one line, saying how to fetch it."""
    path = Path(configured).expanduser() if configured else default_weights_path()
    if not path.is_file():
        raise CheckpointError(
            f"metrics.feature=inception needs Inception-v3's weights, and {path} is no file: expected "
            f"{WEIGHTS_FILE_NAME} (sha256 {PUBLISHED_SHA256}); on a machine with internet, fetch it with "
            f"`curl -L --create-dirs -o {path} {URL_INCEPTION_V3}`, then copy it here or pass "
            f"metrics.inception_weights=PATH"
        )
    return path


@functools.cache
def file_sha256(path: Path, size: int, modified: int) -> str:
    """The file's SHA-256 (cached for this path, size and modification time)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    stat = path.stat()
    return file_sha256(path.resolve(), stat.st_size, stat.st_mtime_ns)


def load_inception(path: Path) -> FeatureExtractorInceptionV3:
    """torch-fidelity's Inception-v3 with the checked weights of `path`, frozen, in eval mode (its constructor
    puts it there: BatchNorm with its running statistics)."""
    state_dict = read_state_dict(path)
    if sha256_of(path) != PUBLISHED_SHA256:
        log.warning(
            f"{path} is not the published Inception-v3 (sha256 {sha256_of(path)[:12]}..., not {PUBLISHED_SHA256[:12]}"
            f"...): its FID, KID, IS, precision and recall are comparable only with scores in the same weights"
        )
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)  # tensors genlab read as data: what torch-fidelity's torch.load unpickles
    buffer.seek(0)
    try:
        network = FeatureExtractorInceptionV3(
            "inception-v3-compat", [FEATURE_LAYER, LOGITS_LAYER], feature_extractor_weights_path=buffer
        )
    except RuntimeError as err:  # load_state_dict's missing, unexpected or misshapen weights
        reason = str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else str(err)
        raise CheckpointError(f"{path}: not the weights of torch-fidelity's Inception-v3 ({reason[:200]})") from None
    return network.eval()


def inception_features(network: FeatureExtractorInceptionV3, images: Tensor) -> tuple[Tensor, Tensor]:
    """Pool features (B, 2048) and unbiased logits (B, 1008) of images (B, C, H, W) in [0, 1], any size: quantized
    to 8 bits as save_image writes a PNG, grayscale repeated to RGB, resized to 299 by torch-fidelity."""
    pixels = images.mul(255).add(0.5).clamp(0, 255).to(torch.uint8)  # torchvision.utils.save_image's rounding
    if pixels.shape[1] == 1:
        pixels = pixels.expand(-1, 3, -1, -1)
    features, logits = network(pixels)
    return features, logits
