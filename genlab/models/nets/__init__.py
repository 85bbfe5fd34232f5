"""Plain torch.nn.Module networks, with no training logic: usable without Lightning."""
