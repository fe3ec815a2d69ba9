"""Sketch-guided diffusion: the latent edge predictor, guidance during sampling, and its training."""
