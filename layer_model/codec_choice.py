"""Which transparency codec a Decode or Encode runs, and whether it fits the latents in use (plain Python).

A codec is the published one of a family (SD1.5, SDXL, FLUX.1) or a trained file whose header names its latent
space. The latent space in use comes from the MODEL (the host's latent format, read in host.py), else from an
explicit sd_version, else from what the data allows: the LATENT's shape, or the spaces the VAE's structure fits.
Every refusal here comes before any weight is loaded and names both sides.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ._common import families
from .latent_spaces import FLUX, SD15, SDXL, SPACES, LatentSpace
from .trained_codec import CodecFileError, CodecInfo
from .transparent_codec import CODEC_SETS, CODECS, CodecLayout
from .weights import DIFFUSERS

PUBLISHED = "published"  # the codec combo's default: the published file of the latent space
# Further published sets the combo offers by name: (family, weight set). Saved in workflows: never renamed.
PUBLISHED_SETS = {"published (SDXL diffusers set)": (families.SDXL, DIFFUSERS)}
SPACE_OF_FAMILY = {families.SD15: SD15, families.SDXL: SDXL, families.FLUX: FLUX}
FAMILY_OF_SPACE = {space.name: family for family, space in SPACE_OF_FAMILY.items()}
TRAIN_NODE = "Layer Diffuse Train Transparent VAE"
TRAIN_COMMAND = "python -m layer_model.train_codec"  # codec_cli.py, run from the pack's folder


@dataclass(frozen=True)
class Codec:
    """A published family's codec (`base`, of `weight_set`), or a trained codec file (`path`, `name` as the folder
    lists it)."""

    space: LatentSpace
    layout: CodecLayout
    base: str = ""
    path: str = ""
    name: str = ""
    weight_set: str = ""  # "" a family's first published set; else another (weights.DIFFUSERS)

    @classmethod
    def published(cls, base: str, weight_set: str = "") -> Codec:
        layout = CODEC_SETS[(base, weight_set)] if weight_set else CODECS[base]
        return cls(SPACE_OF_FAMILY[base], layout, base=base, weight_set=weight_set)

    @classmethod
    def trained(cls, name: str, path: str, info: CodecInfo) -> Codec:
        """The codec of a trained file, refused when its description does not fit a latent space the pack knows."""
        space = SPACES.get(info.latent_format)
        if space is None:
            raise CodecFileError(f"{path}: the codec was trained for {info.latent_format!r} latents, which this "
                                 f"version of the pack does not know (it knows {', '.join(SPACES)}).")
        if (info.channels, info.downscale) != (space.channels, space.downscale):
            raise CodecFileError(f"{path}: the codec says {info.latent_format} but {info.channels} channels at "
                                 f"1/{info.downscale}, where {space.describe()}. The file is damaged or was not "
                                 "written by this pack: train it again.")
        return cls(space, info.layout, path=path, name=name)

    def describe(self, start: bool = False) -> str:
        """For messages; `start`: capitalised, to begin a sentence."""
        published = f"the published {self.base} codec" + (f" ({self.weight_set} set)" if self.weight_set else "")
        text = published if self.base else f"the codec {self.name}"
        return text[0].upper() + text[1:] if start else text


def _or(spaces: Sequence[LatentSpace]) -> str:
    return " or ".join(space.label for space in spaces)


def no_published_codec(space: LatentSpace, what: str) -> ValueError:
    """The refusal for a space without a published codec; `what` says where the space was read."""
    return ValueError(f"{what} {space.label} latents, and no published transparency codec exists for them "
                      f"(only for SD1.5, SDXL and FLUX.1). Train one for its VAE with the node {TRAIN_NODE}, "
                      f"then choose that file in codec. From a shell, `{TRAIN_COMMAND}` in the pack's folder "
                      "trains one too (--help lists its arguments).")


def latent_candidates(shape: Sequence[int]) -> tuple[LatentSpace, ...]:
    """The spaces a LATENT of this shape can be in: [B, 4, h, w] SD1.5/SDXL; [B, 16, h, w] FLUX.1/SD3 (or an
    unsampled Qwen-Image latent); [B, 128, h, w] FLUX.2; [B, 16, 1, h, w] Qwen-Image (Wan 2.1 VAE)."""
    spaces = [space for space in SPACES.values() if space.channels == shape[1]]
    if len(shape) == 5:
        return tuple(space for space in spaces if space.frames)
    return tuple(spaces) if len(shape) == 4 else ()


def check_latent_frames(shape: Sequence[int]) -> None:
    """Refuse a video latent: the decoder reads one latent per image."""
    if len(shape) == 5 and shape[2] != 1:
        raise ValueError(f"The latent holds {shape[2]} frames (a video latent, shape {list(shape)}); transparent "
                         "decode takes image latents of one frame, [B, C, 1, h, w]. Decode a single-image latent.")


def _wanted_shape(space: LatentSpace) -> str:
    return f"[B, {space.channels}, 1, h, w]" if space.frames else f"[B, {space.channels}, h, w]"


def data_refusal(codec: Codec, shape: Sequence[int] | None, vae_spaces: Sequence[LatentSpace]) -> ValueError:
    """Why the LATENT (`shape`) or, without one, the VAE (the spaces its structure allows) does not fit the codec."""
    trained = f"{codec.describe(start=True)} was trained for {codec.space.label} latents"
    if shape is None:
        return ValueError(f"{trained}, but the connected VAE encodes to {_or(vae_spaces)} latents. Connect the "
                          f"{codec.space.label} VAE, or choose a codec trained for the connected VAE's latents.")
    fix = f"Connect a {codec.space.label} latent, or choose a codec trained for this latent's space."
    if shape[1] != codec.space.channels:
        return ValueError(f"The latent has {shape[1]} channels, but {codec.describe()} was trained for "
                          f"{codec.space.label} latents, which have {codec.space.channels}. {fix}")
    return ValueError(f"The latent has the shape {list(shape)}, but {codec.describe()} was trained for "
                      f"{codec.space.label} latents, {_wanted_shape(codec.space)}. {fix}")


def choose_codec(trained: Codec | None, sd_version: str, model_space: LatentSpace | None, model_name: str,
                 data: Callable[[], Sequence[LatentSpace]], latent_shape: Sequence[int] | None = None) -> Codec:
    """The codec to run: `trained` (a trained file or a published set chosen by name), checked against the latents
    in use, or (None) the published one for them.

    `model_space`: the connected MODEL's (None: no MODEL), `model_name` its config class, for messages;
    `data`: the spaces the LATENT (of `latent_shape`) or, when encoding, the VAE allows, asked for only after the
    MODEL and sd_version are checked (reading a VAE's may refuse it).
    """
    if trained is None:
        return _published(sd_version, model_space, model_name, data, latent_shape)
    in_use, source = model_space, f"the connected MODEL ({model_name}) samples"
    if in_use is None and sd_version != families.AUTO:
        in_use, source = SPACE_OF_FAMILY.get(sd_version), f"sd_version is {sd_version}, for"
    if in_use is not None and in_use != trained.space:
        published = " (or 'published')" if in_use.name in FAMILY_OF_SPACE else ""
        fix = (f"connect the {trained.space.label} model it was trained for" if model_space is not None
               else "set sd_version to 'auto' and connect the MODEL")
        raise ValueError(f"{trained.describe(start=True)} was trained for {trained.space.label} latents, but "
                         f"{source} {in_use.label} latents. Choose a codec trained for {in_use.label} latents"
                         f"{published}, or {fix}.")
    data_spaces = data()
    if trained.space not in data_spaces:
        raise data_refusal(trained, latent_shape, data_spaces)
    return trained


def _published(sd_version: str, model_space: LatentSpace | None, model_name: str,
               data: Callable[[], Sequence[LatentSpace]], latent_shape: Sequence[int] | None) -> Codec:
    """The published codec: of the chosen family, of the MODEL's space, or of the one family the data allows."""
    if sd_version != families.AUTO:  # the latent or VAE is checked against the family after
        if sd_version not in SPACE_OF_FAMILY:
            raise ValueError(f"sd_version must be one of {(families.AUTO, *families.FAMILIES)}, got {sd_version!r}")
        return Codec.published(sd_version)
    if model_space is not None:
        if model_space.name not in FAMILY_OF_SPACE:
            raise no_published_codec(model_space, f"The connected MODEL ({model_name}) samples")
        return Codec.published(FAMILY_OF_SPACE[model_space.name])
    data_spaces = data()
    published = [space for space in data_spaces if space.name in FAMILY_OF_SPACE]
    if len(published) == 1:  # 16 channels: FLUX.1 is the one such space with a published codec
        return Codec.published(FAMILY_OF_SPACE[published[0].name])
    if len(data_spaces) == 1 and not published:
        where = "The latent's shape is that of" if latent_shape is not None else "The connected VAE encodes to"
        raise no_published_codec(data_spaces[0], where)
    raise ValueError("sd_version is 'auto' but no MODEL is connected: connect the MODEL input, "
                     "or choose SDXL, SD1.5 or FLUX.")


def check_published_latent(codec: Codec, shape: Sequence[int]) -> None:
    """A published codec reads 4-D latents: refuse a Qwen-Image (5-D) latent before any weight is loaded."""
    if len(shape) != 4:
        kind = _or(latent_candidates(shape)) or "a video"
        raise ValueError(f"The latent has the shape {list(shape)} ({kind} latent), but {codec.describe()} reads "
                         f"{codec.base} latents, [B, {codec.space.channels}, h, w]. Choose a codec trained for this "
                         f"latent's space in codec (train one with the node {TRAIN_NODE}).")
