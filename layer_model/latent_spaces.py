"""The latent spaces a transparency codec can be trained for, one per host latent format (plain Python).

A latent space is what a host VAE encodes to: the codec's offset is added in it and its decoder reads it, so a
codec trained against one VAE works only with models sampling in that space. `name` is the host's latent
format class (`comfy.latent_formats.<name>`); which space a given VAE is in is host work (`host_vae.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

AUTO = "auto"


@dataclass(frozen=True)
class LatentSpace:
    name: str  # the host's latent format class name
    label: str  # for users
    channels: int
    downscale: int  # pixels per latent pixel, each side
    frames: bool  # the host's LATENT is 5-D [B, C, 1, h, w] (a video VAE's one-frame latent)

    def describe(self) -> str:
        return f"{self.label}: {self.channels} channels at 1/{self.downscale}"


SD15 = LatentSpace("SD15", "SD1.5", 4, 8, False)
SDXL = LatentSpace("SDXL", "SDXL", 4, 8, False)
FLUX = LatentSpace("Flux", "FLUX.1", 16, 8, False)
SD3 = LatentSpace("SD3", "SD3/3.5", 16, 8, False)
FLUX2 = LatentSpace("Flux2", "FLUX.2", 128, 16, False)
WAN21 = LatentSpace("Wan21", "Qwen-Image (Wan 2.1 VAE)", 16, 8, True)

SPACES: dict[str, LatentSpace] = {space.name: space for space in (SD15, SDXL, FLUX, SD3, FLUX2, WAN21)}
LATENT_FORMAT_CHOICES = (AUTO, *SPACES)  # what a node's latent_format input offers


def space_named(choice: str) -> LatentSpace:
    """The space a user chose, by name ("SDXL", "Flux2") or label ("SD1.5", "FLUX.2")."""
    for space in SPACES.values():
        if choice in (space.name, space.label):
            return space
    raise ValueError(f"Unknown latent format {choice!r}: choose one of {', '.join(SPACES)} "
                     f"(or {AUTO!r} to read it from the VAE).")
