"""Edge maps: Canny edges of photos (training targets) and user sketches normalised to the same form.

The predictor is trained against white edges on black (as edge detectors output them), repeated to
three channels and VAE-encoded. A sketch arrives in any form (dark strokes on light paper or light on
dark, grey levels, coloured, strokes on transparency); `sketch_edges` maps it to that form.
"""

from __future__ import annotations

import kornia
import torch
import torch.nn.functional as F

LUMA = (0.299, 0.587, 0.114)
BLANK_CONTRAST = 0.1  # strokes must differ from the paper by at least this much (0..1)


class BlankSketchError(ValueError):
    pass


def luminance(pixels: torch.Tensor) -> torch.Tensor:
    """[B,3,H,W] -> [B,1,H,W]."""
    weights = torch.tensor(LUMA, dtype=pixels.dtype, device=pixels.device).reshape(1, 3, 1, 1)
    return (pixels[:, :3] * weights).sum(dim=1, keepdim=True)


def photo_edges(pixels: torch.Tensor, low: float = 0.1, high: float = 0.2) -> torch.Tensor:
    """Canny edges of [B,3,H,W] images in [0,1]: [B,1,H,W], 1 on edges, 0 elsewhere."""
    _, edges = kornia.filters.canny(luminance(pixels.float()), low_threshold=low, high_threshold=high)
    return edges.clamp(0.0, 1.0)


def sketch_edges(pixels: torch.Tensor) -> torch.Tensor:
    """A drawing [B,3|4,H,W] in [0,1] as edge strength [B,1,H,W]: 1 on the strongest strokes, 0 on the paper.

    With transparency, opaque pixels are strokes. Otherwise the paper is the most common tone (the
    median), and strokes are what differs from it, dark on light or light on dark.
    """
    pixels = pixels.float()
    out = []
    for image in pixels:
        if image.shape[0] == 4 and float(image[3].min()) < 0.5:
            strength = image[3:4]
        else:
            grey = luminance(image[None])[0]
            strength = (grey - grey.median()).abs()
        low, high = float(strength.median()), float(strength.max())
        if high - low < BLANK_CONTRAST:
            raise BlankSketchError("The sketch is blank (no strokes stand out from the paper). Draw dark lines on "
                                   "light paper (or light on dark), or check that the right image is connected.")
        out.append(((strength - low) / (high - low)).clamp(0.0, 1.0))
    return torch.stack(out)


def as_rgb(edges: torch.Tensor) -> torch.Tensor:
    """[B,1,H,W] -> [B,3,H,W], what the VAE encodes."""
    return edges.expand(-1, 3, -1, -1)


def resize(pixels: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Resize [B,C,H,W] with antialiasing (thin strokes survive downscaling)."""
    if pixels.shape[-2:] == (height, width):
        return pixels
    return F.interpolate(pixels, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
