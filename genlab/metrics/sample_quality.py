"""FID, KID, IS, precision and recall of generated images, as torch-fidelity computes them, in one feature space.

The feature space (genlab/metrics/features.py) is a classifier of the domain (the default: on 28x28 grayscale
images it is the better judge, as MNIST papers use) or the Inception-v3 of published numbers. The scores are
torch-fidelity's own functions on those features, with its defaults (KID: 100 subsets, polynomial kernel; IS: 10
splits; precision and recall: Kynkaanniemi et al. 2019, k = 3; its fixed seed 2020), so that in Inception's
features they equal `torch_fidelity.calculate_metrics` on the same images.
"""

from __future__ import annotations

import torch
import torch_fidelity as fidelity
from torch import Tensor, nn
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_isc import isc_features_to_metric
from torch_fidelity.metric_kid import kid_features_to_metric
from torch_fidelity.metric_prc import prc_features_to_metric
from torchmetrics.aggregation import CatMetric

from genlab.metrics.features import FeatureSpace
from genlab.metrics.reference import ReferenceStatistics


class SampleQuality(nn.Module):
    """Accumulates generated images' features (and the real ones', where no reference statistics are given);
    `compute()` scores them. Images are float tensors (B, C, H, W) in [0, 1]. Under DDP each process adds its
    share and `compute()` gathers them (torchmetrics' CatMetric)."""

    def __init__(
        self,
        features: FeatureSpace,
        reference: ReferenceStatistics | None = None,
        kid_subset_size: int = 1000,
        is_splits: int = 10,
    ) -> None:
        super().__init__()
        self.features = features
        self.reference = reference
        self.kid_subset_size = kid_subset_size
        self.is_splits = is_splits
        self.real_features = CatMetric(nan_strategy="error")  # (N, D), when there is no reference
        self.fake_features = CatMetric(nan_strategy="error")  # (M, D)
        self.fake_logits = CatMetric(nan_strategy="error")  # (M, K)

    @torch.no_grad()
    def update(self, images: Tensor, real: bool) -> None:
        features, logits = self.features(images)
        if real:
            self.real_features.update(features.float())
        else:
            self.fake_features.update(features.float())
            self.fake_logits.update(logits.float())

    def real_statistics(self) -> ReferenceStatistics:
        """The reference statistics given, else those of the real images added."""
        if self.reference is None:
            features = self.real_features.compute().cpu()
            moments = fid_features_to_statistics(features)
            return ReferenceStatistics({}, moments["mu"], moments["sigma"], features)
        return self.reference

    def compute(self) -> dict[str, float]:
        """fid, kid, kid_std, is, is_std, precision, recall; with the classifier also `label_entropy`: the entropy
        (nats) of the classes it assigns to the generated images, ln(num_classes) when all classes are equally
        common, 0 when every sample looks like one class (mode collapse)."""
        real = self.real_statistics()
        fake = self.fake_features.compute().cpu()  # (M, D)
        logits = self.fake_logits.compute().cpu()  # (M, K)
        subset_size = min(self.kid_subset_size, len(fake), len(real.features))
        # torch-fidelity's order: input 1 generated, input 2 real
        fid = fid_statistics_to_metric(fid_features_to_statistics(fake), {"mu": real.mu, "sigma": real.sigma}, False)
        kid = kid_features_to_metric(fake, real.features, kid_subset_size=subset_size, verbose=False)
        # at most one split per sample: an empty split's score is NaN
        inception_score = isc_features_to_metric(logits, splits=min(self.is_splits, len(logits)))
        # the pairwise distances on the features' device (a GPU: seconds for 50,000 x 50,000), in blocks of 10,000 rows
        device = self.fake_features.device
        precision_recall = prc_features_to_metric(
            fake.to(device), real.features.to(device), save_cpu_ram=True, verbose=False
        )
        scores = {
            "fid": fid[fidelity.KEY_METRIC_FID],
            "kid": kid[fidelity.KEY_METRIC_KID_MEAN],
            "kid_std": kid[fidelity.KEY_METRIC_KID_STD],
            "is": inception_score[fidelity.KEY_METRIC_ISC_MEAN],
            "is_std": inception_score[fidelity.KEY_METRIC_ISC_STD],
            "precision": precision_recall[fidelity.KEY_METRIC_PRECISION],
            "recall": precision_recall[fidelity.KEY_METRIC_RECALL],
        }
        if self.features.name == "classifier":
            counts = torch.bincount(logits.argmax(dim=1), minlength=logits.shape[1]).double()
            scores["label_entropy"] = float(torch.special.entr(counts / counts.sum()).sum())
        return scores

    def reset_generated(self) -> None:
        """Forget the generated images, keep the real ones (to score a new set of samples)."""
        self.fake_features.reset()
        self.fake_logits.reset()
