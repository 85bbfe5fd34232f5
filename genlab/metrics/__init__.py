"""Sample-quality metrics for generated images."""

from genlab.metrics.sample_quality import SampleQuality, load_feature_classifier

__all__ = ["SampleQuality", "load_feature_classifier"]
