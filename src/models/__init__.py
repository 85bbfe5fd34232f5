"""LightningModules, one file per model family: losses, steps, optimizers, logging, sampling."""
