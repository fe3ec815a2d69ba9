"""A training run's losses as a picture, for a node's IMAGE output (PIL and torch; no plotting library).

Each term gets its own colour on a shared log scale, smoothed over a window so the trend shows through the
noise of single steps.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageDraw

COLOURS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (23, 190, 207))


def smoothed(values: list[float], window: int) -> list[float]:
    """The running mean over the last `window` values at each step."""
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def loss_plot(series: dict[str, list[float]], width: int = 640, height: int = 360) -> torch.Tensor:
    """The curves of `series` (name -> one value per step) as an IMAGE [1,H,W,3] in [0,1]."""
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    left, right, top, bottom = 48, width - 12, 12, height - 28
    positive = {name: [max(v, 1e-8) for v in values] for name, values in series.items() if values}
    steps = max((len(v) for v in positive.values()), default=0)
    draw.rectangle((left, top, right, bottom), outline=(160, 160, 160))
    if not steps:
        draw.text((left + 8, top + 8), "no steps yet", fill=(0, 0, 0))
        return _as_image(image)
    curves = {name: smoothed(values, max(1, steps // 50)) for name, values in positive.items()}
    low = math.log10(min(min(c) for c in curves.values()))
    high = math.log10(max(max(c) for c in curves.values()))
    low, high = math.floor(low), max(math.ceil(high), math.floor(low) + 1)

    def point(step: int, value: float) -> tuple[float, float]:
        x = left + (right - left) * (step / max(steps - 1, 1))
        y = bottom - (bottom - top) * (math.log10(value) - low) / (high - low)
        return x, y

    for decade in range(low, high + 1):
        y = point(0, 10.0**decade)[1]
        draw.line((left, y, right, y), fill=(230, 230, 230))
        draw.text((4, y - 6), f"1e{decade}", fill=(90, 90, 90))
    draw.text((left, bottom + 8), "step 1", fill=(90, 90, 90))
    draw.text((right - 60, bottom + 8), f"step {steps}", fill=(90, 90, 90))
    for i, (name, curve) in enumerate(curves.items()):
        colour = COLOURS[i % len(COLOURS)]
        draw.line([point(step, value) for step, value in enumerate(curve)], fill=colour, width=2)
        draw.text((left + 8, top + 6 + 14 * i), f"{name} {curve[-1]:.4g}", fill=colour)
    return _as_image(image)


def _as_image(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)[None]
