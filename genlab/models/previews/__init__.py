"""What a family shows of itself while it trains (image grids, latent pictures, the denoising strip, text samples):
callbacks that its `previews()` returns (Lightning gets them while fitting only: genlab/models/hooks.py), each
asking the model for a capability (genlab/capabilities.py)."""

# the PNG text keyword that carries an image grid's caption (one of the PNG standard's keywords), read by src.report:
# here, not in image_grid.py, so that src.report (no torch) reads it without importing Lightning and torch
CAPTION_KEY = "Description"
