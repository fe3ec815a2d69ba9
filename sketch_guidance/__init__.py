"""Sketch-guided diffusion (latent edge predictor, guidance, training). Arrives with its own issue."""
