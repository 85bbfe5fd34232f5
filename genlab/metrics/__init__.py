"""Sample-quality metrics for generated images, and the reference statistics they compare with."""

from genlab.metrics.features import ClassifierFeatures, FeatureSpace, InceptionFeatures, load_feature_classifier
from genlab.metrics.sample_quality import SampleQuality

__all__ = ["ClassifierFeatures", "FeatureSpace", "InceptionFeatures", "SampleQuality", "load_feature_classifier"]
