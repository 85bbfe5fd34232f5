"""What a family shows of itself while it trains (image grids, latent pictures, the denoising strip, text samples):
callbacks that its `configure_callbacks` returns, each asking the model for a capability (genlab/capabilities.py)."""
