"""The host VAE as the codec trainer sees it: which latent space it encodes to, its posterior, a decode to train
through. With host.py, the only modules of layer_model that import ComfyUI.

Everything is read from the VAE object the host's loaders give (its first-stage model's classes, its attributes)
and computed by the host's own encode and decode, so each host version's layout is followed, not re-implemented.
"""

from __future__ import annotations

import hashlib

import comfy.ldm.models.autoencoder as autoencoder
import comfy.ldm.modules.diffusionmodules.model as kl_layers
import comfy.ldm.wan.vae as wan_vae
import comfy.model_management as mm
import comfy.sd
import comfy.utils
import torch

from ._common import inference_tensors
from .latent_spaces import AUTO, FLUX, FLUX2, SD3, SD15, SDXL, SPACES, WAN21, LatentSpace, space_named

# VAEs of these spaces share one architecture: their structure cannot tell which space a VAE encodes to.
# (SD1.5/SDXL: the SD KL autoencoder; FLUX.1 `ae` and the SD3 VAE: the same 16-channel one, without quant conv.)
KL_SPACES = {4: (SD15, SDXL), 16: (FLUX, SD3)}
LOG_VAR_RANGE = (-30.0, 20.0)  # the host's DiagonalGaussianDistribution clamp


def _downscale(vae) -> int | None:
    try:
        return int(vae.spacial_compression_encode())
    except (AttributeError, TypeError):
        return None


def _describe(vae) -> str:
    model = getattr(vae, "first_stage_model", None)
    text = f"{type(model).__name__}, {getattr(vae, 'latent_channels', '?')} latent channels at 1/{_downscale(vae)}"
    images = getattr(vae, "output_channels", 3)
    return text if images == 3 else f"{text}, {images} image channels"


def _is_kl_autoencoder(model) -> bool:
    """The SD/FLUX family: the host's image Encoder and Decoder with a diagonal Gaussian posterior (exact types:
    the video decoder of SVD's VAE subclasses Decoder)."""
    return (isinstance(model, autoencoder.AutoencodingEngine)
            and type(model.encoder) is kl_layers.Encoder and type(model.decoder) is kl_layers.Decoder
            and isinstance(model.regularization, autoencoder.DiagonalGaussianRegularizer))


def candidate_spaces(vae) -> tuple[LatentSpace, ...]:
    """The spaces this VAE's structure allows: one, or the two of KL_SPACES.

    ValueError, naming the supported spaces, for any other VAE (video, audio, TAESD, RGBA, ...).
    """
    model = getattr(vae, "first_stage_model", None)
    shape = (getattr(vae, "latent_channels", None), _downscale(vae))
    found: tuple[LatentSpace, ...] = ()
    if isinstance(model, wan_vae.WanVAE) and getattr(vae, "output_channels", 3) == 3:
        found = (WAN21,) if shape == (WAN21.channels, WAN21.downscale) else ()
    elif _is_kl_autoencoder(model) and vae.latent_dim == 2 and getattr(vae, "output_channels", 3) == 3:  # not RGBA
        if getattr(model, "bn", None) is not None:  # FLUX.2's latent normalisation
            found = (FLUX2,) if shape == (FLUX2.channels, FLUX2.downscale) else ()
        elif shape[1] == 8:
            found = KL_SPACES.get(shape[0], ())
    if not found:
        supported = "; ".join(space.describe() for space in SPACES.values())
        raise ValueError(f"The connected VAE ({_describe(vae)}) encodes to none of the latent spaces a transparency "
                         f"codec can be trained for ({supported}). Connect the VAE of an SD1.5, SDXL, FLUX.1, "
                         "SD3/3.5, FLUX.2 or Qwen-Image model; video, audio and preview (TAESD) VAEs are not "
                         "supported.")
    return found


def place_vae(vae, latent_format: str = AUTO) -> LatentSpace:
    """The latent space the VAE's latents are in: read from its structure ('auto') or chosen and checked.

    'auto' refuses a VAE whose architecture two spaces share, naming both; a choice the structure rules out is
    refused naming the choice and what the VAE is.
    """
    candidates = candidate_spaces(vae)
    if latent_format == AUTO:
        if len(candidates) == 1:
            return candidates[0]
        first, second = candidates
        raise ValueError(f"The connected VAE ({_describe(vae)}) could be the {first.label} or the {second.label} VAE: "
                         "both have this architecture but encode to different latent spaces, and nothing in the "
                         f"VAE tells them apart. Set latent_format to {first.name} or {second.name}, for the model "
                         "the codec is for.")
    chosen = space_named(latent_format)
    if chosen not in candidates:
        what = " or ".join(space.label for space in candidates)
        raise ValueError(f"latent_format is {chosen.name} ({chosen.describe()}), but the connected VAE is a {what} "
                         f"VAE ({_describe(vae)}). Connect a {chosen.label} VAE, or set latent_format to "
                         f"{' or '.join(space.name for space in candidates)}.")
    return chosen


def _patchify(x: torch.Tensor, pi: int, pj: int) -> torch.Tensor:
    """'b c (i pi) (j pj) -> b (c pi pj) i j', as the host's FLUX.2 VAE rearranges its latent."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // pi, pi, w // pj, pj).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(b, c * pi * pj, h // pi, w // pj)


class HostVAE:
    """A host VAE, frozen, as the codec trainer uses it, in the units of the host's LATENT `samples` ([B, C, h, w];
    a video VAE's frame axis squeezed): the posterior of RGB images, and a decode that gradients pass through.

    The host loads it onto `device` through model management at each call, as VAE Encode/Decode do.
    """

    def __init__(self, vae, space: LatentSpace) -> None:
        place_vae(vae, space.name)  # refuses a VAE of another space
        self.vae = vae
        self.space = space
        self.model: torch.nn.Module = vae.first_stage_model
        self.device: torch.device = vae.device
        self.dtype: torch.dtype = vae.vae_dtype
        # The layer whose output is the posterior's (mean, log-variance) pair in the host's own encode; the host
        # keeps only the mean. KL VAEs without a quant conv (FLUX.1, SD3) take it from the encoder.
        quant = getattr(self.model, "quant_conv", None)
        self._moments_layer = self.model.conv1 if space.frames else quant if quant is not None else self.model.encoder

    @property
    def signature(self) -> str:
        """Identifies the VAE's weights (names, shapes and a sum of each tensor), so that a saved training run
        resumes only with the VAE it was trained against, whichever file or loader it came from."""
        digest = hashlib.sha256(self.space.name.encode())
        with torch.inference_mode():
            for name, tensor in sorted(self.model.state_dict().items()):
                total = float(tensor.float().sum()) if tensor.is_floating_point() else float(tensor.sum())
                digest.update(f"{name}:{tuple(tensor.shape)}:{total:.6e}".encode())
        return digest.hexdigest()[:16]

    def posterior(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation [B, C, h, w], float32 on `device`, without gradient, of the latent of RGB
        [B, 3, H, W] in [0, 1] (sides multiples of the space's downscale). The mean is what VAE Encode returns."""
        self._check(rgb, 3, self.space.downscale, "RGB images [B, 3, H, W] with sides multiples of "
                                                  f"{self.space.downscale}")
        with torch.inference_mode(False), torch.no_grad():
            x = self.vae.process_input(rgb.float()).to(self.device, self.dtype)
            x = x.unsqueeze(2) if self.space.frames else x
            self._load(self.vae.memory_used_encode(x.shape, self.dtype))
            mean, log_var = self._moments(x).float().chunk(2, dim=1)
            std = torch.exp(0.5 * log_var.clamp(*LOG_VAR_RANGE))
            if self.space.frames:
                mean, std = mean.squeeze(2), std.squeeze(2)
            if getattr(self.model, "bn", None) is not None:
                mean, std = self._normalised(mean, std)
            return mean, std

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """RGB [B, 3, H, W] in [0, 1], float32 on `device`, from a latent [B, C, h, w] in the host's units, as VAE
        Decode gives it (untiled). Differentiable with respect to `latent` when gradients are on; the VAE's
        weights get none, whether the loader made them as inference tensors or not.

        The host is asked for the memory of an inference decode; the activations a backward pass keeps are the
        trainer's to budget (its batch size).
        """
        self._check(latent, self.space.channels, 1, f"latents [B, {self.space.channels}, h, w]")
        with torch.inference_mode(False), inference_tensors.normal_tensor_views(self.model, freeze=True):
            z = latent.to(self.device, self.dtype)
            z = z.unsqueeze(2) if self.space.frames else z
            self._load(self.vae.memory_used_decode(z.shape, self.dtype))
            pixels = self.model.decode(z)
            pixels = pixels.squeeze(2) if self.space.frames else pixels
            # The host's own output mapping, on a copy: some host versions map in place.
            return self.vae.process_output(pixels.to(torch.float32, copy=True))

    def _load(self, memory: float) -> None:
        mm.load_models_gpu([self.vae.patcher], memory_required=memory, force_full_load=self.vae.disable_offload)

    def _moments(self, x: torch.Tensor) -> torch.Tensor:
        """Mean and log-variance, concatenated on channels, as computed inside the host's encode."""
        captured: list[torch.Tensor] = []
        handle = self._moments_layer.register_forward_hook(lambda _layer, _args, output: captured.append(output))
        try:
            self.model.encode(x)
        finally:
            handle.remove()
        if not captured:
            raise RuntimeError(f"This ComfyUI's {type(self.model).__name__}.encode no longer runs "
                               f"{type(self._moments_layer).__name__}, where the posterior was read")
        return torch.cat(captured)  # one piece per sub-batch where the host splits the batch

    def _normalised(self, mean: torch.Tensor, std: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """FLUX.2: the host patchifies the 32-channel latent at 1/8 into 128 channels at 1/16 and normalises it with
        batch-norm running statistics. That map is linear per element, so std is rearranged and divided alike."""
        pi, pj = self.model.ps
        bn = self.model.bn
        scale = torch.sqrt(bn.running_var.float().to(mean.device) + self.model.bn_eps).view(1, -1, 1, 1)
        shift = bn.running_mean.float().to(mean.device).view(1, -1, 1, 1)
        return (_patchify(mean, pi, pj) - shift) / scale, _patchify(std, pi, pj) / scale

    def _check(self, x: torch.Tensor, channels: int, multiple: int, wanted: str) -> None:
        if x.ndim != 4 or x.shape[1] != channels or x.shape[2] % multiple or x.shape[3] % multiple:
            raise ValueError(f"The {self.space.label} VAE takes {wanted}; got a tensor of shape {tuple(x.shape)}.")


def load_vae_file(path: str, latent_format: str = AUTO) -> tuple[HostVAE, LatentSpace]:
    """A VAE file loaded as Load VAE loads it, placed in its latent space (the command line's --vae)."""
    state, metadata = comfy.utils.load_torch_file(path, return_metadata=True)
    vae = comfy.sd.VAE(sd=state, metadata=metadata)
    space = place_vae(vae, latent_format)
    return HostVAE(vae, space), space


def torch_device() -> torch.device:
    """The device the host trains on (after --cpu and, under torchrun, this process's GPU are set)."""
    return mm.get_torch_device()
