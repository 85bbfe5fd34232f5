"""What a family shows of itself while it trains (image grids, latent pictures, the denoising strip, text samples):
callbacks that its `previews()` returns (Lightning gets them while fitting only: genlab/models/hooks.py), each
asking the model for a capability (genlab/capabilities.py)."""
