"""Nodes for transparent images: RGBA decode (single and multi-layer batches) and RGBA encode, with the published
codecs (SD1.5, SDXL, FLUX.1) or a trained one (any latent space the trainer supports)."""

from __future__ import annotations

import torch

from ..common import families
from ..common import host as common_host
from ..layer_model import host
from ..layer_model.alpha import preview_on_checkerboard, split_alpha
from ..layer_model.codec_choice import PUBLISHED
from ..layer_model.decode_precision import PRECISIONS
from ..layer_model.transparent_codec import AUGMENTATIONS

CATEGORY = "layer_diffuse"

SD_VERSION = (
    [families.AUTO, *host.BASE_CHOICES],
    {"default": families.AUTO,
     "tooltip": "Which model family's latents these are. 'auto' reads it from the MODEL input (SD1.5, SDXL, "
                "FLUX.1, SD3, FLUX.2 or Qwen-Image; Z-Image, Lumina 2, Chroma and HiDream sample FLUX.1's latents "
                "and get FLUX), or picks FLUX for a 16-channel latent; SD1.5 and SDXL latents "
                "look alike, so connect the MODEL for those or pick the base your checkpoint belongs to. With a "
                "trained codec a connected MODEL names the latent space; without one, a family chosen here is "
                "checked against the codec's."},
)
MODEL_HINT = ("MODEL", {"tooltip": "Optional: the model that made the latent, so 'auto' can tell its latent space "
                                   "(SD1.5, SDXL, FLUX.1 with Z-Image, Lumina 2, Chroma and HiDream, SD3, FLUX.2, "
                                   "Qwen-Image) and a trained codec is checked against it."})


def codec_input() -> tuple:
    """The codec combo, listed afresh at each editor refresh: 'published' and the trained codec files."""
    return (host.codec_choices(), {
        "default": PUBLISHED,
        "tooltip": "Which transparency codec decodes/encodes. 'published': LayerDiffusion's file for SD1.5, SDXL "
                   "or FLUX.1 (downloaded when missing). 'published (SDXL diffusers set)': the codec of "
                   "LayerDiffusion's second SDXL set, for latents made with the 'SDXL transparent (diffusers set)' "
                   "mode. Or a codec trained with Layer Diffuse Train Transparent "
                   "VAE (models/layer_model): the only way for SD3, FLUX.2 and Qwen-Image; it must have been trained "
                   "for the latents in use, or it is refused."})


AUGMENTATION_CHOICES = [str(n) for n in sorted(AUGMENTATIONS, reverse=True)]
DECODE_OPTIONS = {
    "augmentations": (AUGMENTATION_CHOICES, {
        "default": "8",
        "tooltip": "Flip/rotation variants decoded and merged by per-pixel median. 8 gives the cleanest alpha; "
                   "fewer is proportionally faster."}),
    "sub_batch_size": ("INT", {
        "default": 8, "min": 1, "max": 64,
        "tooltip": "How many decoder passes run at once. Lower it if you run out of memory at large sizes."}),
}
PRECISION = (list(PRECISIONS), {
    "default": "auto",
    "tooltip": "Number format of the transparent decoder. 'auto': fp16 on GPUs, fp32 on CPUs. 'bf16' pays off "
               "only where the CPU or GPU has bf16 arithmetic: about 2x faster than fp32 on CPUs with bf16 "
               "instructions (recent Xeon, Zen 4 and later), slower than fp32 where it is emulated (other CPUs, "
               "older GPUs; a warning is logged); it changes alpha by up to about 2.5%; 'fp16' suits GPUs and is "
               "slow on most CPUs; 'fp32' is the reference."})


def _to_bchw(image: torch.Tensor) -> torch.Tensor:
    return image.movedim(-1, 1)


def _to_bhwc(image: torch.Tensor) -> torch.Tensor:
    return image.movedim(1, -1)


def _outputs(rgba: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(RGBA IMAGE, MASK with 1 = transparent, RGB preview on a checkerboard)."""
    out = rgba.to(common_host.intermediate_device())
    preview = preview_on_checkerboard(out[:, :3], out[:, 3:])
    return _to_bhwc(out), 1.0 - out[:, 3], _to_bhwc(preview)


# What every RGBA decode node gives, so they chain with the same preview, composite and save nodes.
RGBA_RETURN_TYPES, RGBA_RETURN_NAMES = ("IMAGE", "MASK", "IMAGE"), ("rgba", "mask", "preview")
MASK_OUTPUT_TOOLTIP = "Transparency as a MASK in the host's convention (as Load Image gives it): 1 where transparent."
PREVIEW_OUTPUT_TOOLTIP = "The RGBA image over a checkerboard, to see the transparency in a preview."


class LayerDiffuseDecode:
    DESCRIPTION = ("Turns a LayerDiffusion latent and its normally decoded image into a transparent RGBA image "
                   "with the transparent VAE decoder.")
    CATEGORY = CATEGORY
    FUNCTION = "decode"
    RETURN_TYPES, RETURN_NAMES = RGBA_RETURN_TYPES, RGBA_RETURN_NAMES
    OUTPUT_TOOLTIPS = (
        "RGBA image (4 channels, straight alpha). Save Image writes it as a transparent PNG.",
        MASK_OUTPUT_TOOLTIP,
        PREVIEW_OUTPUT_TOOLTIP,
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "samples": ("LATENT", {"tooltip": "The latent from the sampler of a LayerDiffusion-patched model."}),
                "images": ("IMAGE", {"tooltip": "The same latent decoded by VAE Decode (not resized)."}),
                "sd_version": SD_VERSION,
                **DECODE_OPTIONS,
            },
            "optional": {"model": MODEL_HINT, "precision": PRECISION, "codec": codec_input()},
        }

    def decode(self, samples, images, sd_version, augmentations, sub_batch_size, model=None, precision="auto",
               codec=PUBLISHED):
        rgb, latent = _to_bchw(images[..., :3]).float(), samples["samples"]
        chosen = host.decode_codec(codec, sd_version, model, latent, rgb)  # refusals before any weight loads
        rgba = host.decode_rgba_batch(latent, rgb, chosen, int(augmentations), sub_batch_size, precision)
        return _outputs(rgba)


class LayerDiffuseDecodeSplit:
    DESCRIPTION = ("Decodes a batch that holds several layers per sample (joint or layer-to-layer generation): "
                   "the first layer of each sample gets alpha, the others are passed through as they are.")
    CATEGORY = CATEGORY
    FUNCTION = "decode"
    RETURN_TYPES = ("IMAGE", "MASK", "IMAGE", "IMAGE", "IMAGE")
    RETURN_NAMES = ("layer_1_rgba", "layer_1_mask", "layer_2", "layer_3", "layer_1_preview")
    OUTPUT_TOOLTIPS = (
        "The first layer of each sample (the foreground in joint and background-to-foreground generation) as RGBA.",
        "Its transparency as a MASK: 1 where transparent.",
        "The second layer of each sample.",
        "The third layer of each sample; with 2 layers per sample this repeats layer 2.",
        "The first layer over a checkerboard.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "samples": ("LATENT", {"tooltip": "The latent batch, laid out sample by sample, layers together."}),
                "images": ("IMAGE", {"tooltip": "The same latent batch decoded by VAE Decode."}),
                "layers": ("INT", {"default": 3, "min": 2, "max": 3,
                                   "tooltip": "Layers per sample: 3 for joint fg/bg/blended, 2 for fg2bg/bg2fg."}),
                "sd_version": SD_VERSION,
                **DECODE_OPTIONS,
            },
            "optional": {"model": MODEL_HINT, "precision": PRECISION, "codec": codec_input()},
        }

    def decode(self, samples, images, layers, sd_version, augmentations, sub_batch_size, model=None,
               precision="auto", codec=PUBLISHED):
        rgb, latent = _to_bchw(images[..., :3]).float(), samples["samples"]
        chosen = host.decode_codec(codec, sd_version, model, latent, rgb)
        if latent.shape[0] % layers:
            raise ValueError(
                f"The batch holds {latent.shape[0]} images, which is not a multiple of {layers} layers per sample. "
                f"Set 'layers' to the number of layers the model generated per sample, or the batch size to a "
                f"multiple of {layers}."
            )
        rgba = host.decode_rgba_batch(latent[0::layers], rgb[0::layers], chosen, int(augmentations), sub_batch_size,
                                      precision)
        first, mask, preview = _outputs(rgba)
        second = images[1::layers]
        third = images[2::layers] if layers == 3 else second
        return first, mask, second, third, preview


class LayerDiffuseEncode:
    DESCRIPTION = ("Encodes a transparent image into a latent that keeps its transparency, for transparent "
                   "img2img with a LayerDiffusion-patched model.")
    CATEGORY = CATEGORY
    FUNCTION = "encode"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("Latent with the transparency offset added; feed it to KSampler with denoise below 1.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "An RGBA image (4 channels), or an RGB image with the mask input."}),
                "vae": ("VAE", {"tooltip": "The model's VAE (SD1.5 or SDXL checkpoint, FLUX's ae.safetensors, or the "
                                           "VAE a trained codec was trained with)."}),
                "sd_version": SD_VERSION,
            },
            "optional": {
                "mask": ("MASK", {"tooltip": "Transparency for an RGB image, as Load Image gives it: 1 where "
                                             "transparent. Overrides the image's own alpha."}),
                "model": MODEL_HINT,
                "codec": codec_input(),
            },
        }

    def encode(self, image, vae, sd_version, mask=None, model=None, codec=PUBLISHED):
        chosen = host.encode_codec(codec, sd_version, model, vae)
        return ({"samples": host.encode_transparent(vae, *split_alpha(image, mask), chosen)},)

