"""Alpha helpers on [B,C,H,W] tensors in [0,1]: colour fill under transparency, compositing, previews."""

from __future__ import annotations

import torch
import torch.nn.functional as F

PYRAMID_FACTOR = 1.2  # each pyramid level is this much smaller: gentle steps give a smooth fill


def premultiply(rgb: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    return rgb * alpha


def fill_transparent_rgb(rgb: torch.Tensor, alpha: torch.Tensor, factor: float = PYRAMID_FACTOR) -> torch.Tensor:
    """Replace the colour of invisible pixels by colour bled outward from the visible ones.

    Builds an alpha-weighted pyramid of premultiplied colour, takes the alpha-weighted mean colour
    at the top, then walks down compositing each level's premultiplied colour over the upsampled
    estimate. Visible pixels (alpha 1) keep their colour exactly; transparent ones get the colour
    of the nearest visible region, smoothly. This is the RGB the normal VAE is meant to see.
    """
    if factor <= 1.0:
        raise ValueError(f"pyramid factor must be > 1, got {factor}")
    colour, weight = premultiply(rgb, alpha), alpha
    levels = [(colour, weight)]
    while min(weight.shape[-2:]) > 1:
        size = [max(1, int(s / factor)) for s in weight.shape[-2:]]
        colour = F.interpolate(colour, size=size, mode="area")
        weight = F.interpolate(weight, size=size, mode="area")
        levels.append((colour, weight))

    total = alpha.sum(dim=(2, 3), keepdim=True)
    mean_colour = premultiply(rgb, alpha).sum(dim=(2, 3), keepdim=True) / total.clamp_min(1e-8)
    # A fully transparent image has no colour to bleed: use neutral grey.
    fill = torch.where(total > 0, mean_colour, torch.full_like(mean_colour, 0.5))
    for colour, weight in reversed(levels):
        fill = F.interpolate(fill, size=colour.shape[-2:], mode="bilinear", align_corners=False)
        fill = colour + fill * (1.0 - weight)
    return fill.clamp(0.0, 1.0)


def composite_on_grey(rgb: torch.Tensor, alpha: torch.Tensor, grey: float = 0.5) -> torch.Tensor:
    """Straight RGB over a flat grey: rgb' = grey + (rgb - grey) * alpha."""
    return grey + (rgb - grey) * alpha


def checkerboard(height: int, width: int, square: int = 16, light: float = 0.8, dark: float = 0.6,
                 device: torch.device | None = None) -> torch.Tensor:
    """A [1,1,H,W] checkerboard, the usual way editors show transparency."""
    ys = torch.arange(height, device=device) // square
    xs = torch.arange(width, device=device) // square
    odd = (ys[:, None] + xs[None, :]) % 2 == 1
    board = torch.where(odd, torch.tensor(dark, device=device), torch.tensor(light, device=device))
    return board[None, None]


def preview_on_checkerboard(rgb: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Straight RGB + alpha composited over a checkerboard, [B,3,H,W]."""
    board = checkerboard(rgb.shape[-2], rgb.shape[-1], device=rgb.device).to(rgb.dtype)
    return rgb * alpha + board * (1.0 - alpha)


def composite_over(layers: list[torch.Tensor], premultiplied: bool = False) -> torch.Tensor:
    """Porter-Duff "over" of [B,4,H,W] RGBA layers, bottom first; returns straight RGBA [B,4,H,W].

    Straight (unassociated) colour is the convention of PNGs and of the host's images; with
    `premultiplied` the inputs' colour is taken as already multiplied by alpha.
    """
    out_colour = torch.zeros_like(layers[0][:, :3])
    out_alpha = torch.zeros_like(layers[0][:, 3:])
    for layer in layers:
        colour, alpha = layer[:, :3], layer[:, 3:]
        if not premultiplied:
            colour = colour * alpha
        out_colour = colour + out_colour * (1.0 - alpha)
        out_alpha = alpha + out_alpha * (1.0 - alpha)
    straight = torch.where(out_alpha > 0, out_colour / out_alpha.clamp_min(1e-8), torch.zeros_like(out_colour))
    return torch.cat([straight.clamp(0.0, 1.0), out_alpha], dim=1)


def stack_layers(named: list[tuple[str, torch.Tensor | None]]) -> tuple[list[str], list[torch.Tensor]]:
    """The given layers, bottom first, from host IMAGEs [B,H,W,C] to RGBA [B,4,H,W]: RGB made opaque, a batch
    of 1 broadcast to the others'. Returns their names and the layers; `None` entries (unconnected) are left out.

    Layers of different sizes, or of different batch sizes other than 1, are refused naming each layer.
    """
    present = [(name, image) for name, image in named if image is not None]
    sizes = {(image.shape[1], image.shape[2]) for _, image in present}
    if len(sizes) > 1:
        listing = ", ".join(f"{name} {image.shape[2]}x{image.shape[1]}" for name, image in present)
        raise ValueError(f"The layers must all have the same size ({listing}). Resize them (Upscale Image) or "
                         "generate them at one size.")
    batches = {image.shape[0] for _, image in present} - {1}
    if len(batches) > 1:
        raise ValueError(f"The layers' batch sizes differ ({sorted(batches)}); give each layer the same batch "
                         "size, or a single image to use for all.")
    batch = max(batches, default=1)
    layers = []
    for _, image in present:
        pixels = image.movedim(-1, 1).float()
        if pixels.shape[1] == 3:
            pixels = torch.cat([pixels, torch.ones_like(pixels[:, :1])], dim=1)
        layers.append(pixels.expand(batch, -1, -1, -1))
    return [name for name, _ in present], layers


def split_alpha(image: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """([B,H,W,3] RGB, [B,H,W,1] alpha) from an RGBA IMAGE or an IMAGE plus a host MASK (1 = transparent)."""
    if mask is not None:
        mask = mask.reshape((-1,) + tuple(mask.shape[-2:]))
        if tuple(mask.shape[-2:]) != tuple(image.shape[1:3]):
            raise ValueError(
                f"The mask is {mask.shape[-1]}x{mask.shape[-2]} px but the image is {image.shape[2]}x{image.shape[1]}"
                " px. Use the mask that belongs to this image (Load Image gives both), or resize them together."
            )
        if mask.shape[0] not in (1, image.shape[0]):
            raise ValueError(f"The mask batch ({mask.shape[0]}) does not match the image batch ({image.shape[0]}).")
        alpha = (1.0 - mask).expand(image.shape[0], -1, -1).unsqueeze(-1)
        return image[..., :3], alpha.to(image)
    if image.shape[-1] != 4:
        raise ValueError(
            f"The image has {image.shape[-1]} channels and no mask is connected, so there is no transparency to "
            "encode. Give an RGBA image (4 channels), or connect its MASK (Load Image's second output)."
        )
    return image[..., :3], image[..., 3:]


def lift_alpha(alpha: torch.Tensor, masked_alpha: float) -> torch.Tensor:
    """Alpha with full transparency raised to `masked_alpha`, opaque kept and partial alpha in between: with
    mask = 1 - alpha, 1 - mask * (1 - masked_alpha). flux2-klein-alpha's Remove LoRA reads alpha 0.5 in its
    reference photo as the area to erase; 0 gives `alpha` back unchanged."""
    if not 0.0 <= masked_alpha <= 1.0:
        raise ValueError(f"masked_alpha is an alpha value from 0 to 1, got {masked_alpha}.")
    return alpha + masked_alpha * (1.0 - alpha)
