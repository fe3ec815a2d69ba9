"""Training settings: shared by the trainer (train.py) and its command line (cli.py), which train.py imports."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 3000
    batch_size: int = 16
    learning_rate: float = 1e-4
    seed: int = 0
    pixels_per_image: int = 1024  # latent pixels sampled per image and step (0: all); bounds memory
    save_every: int = 250
