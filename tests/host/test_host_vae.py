"""layer_model/host_vae.py against the real host: a VAE of each latent space as Load VAE gives it (random weights in
the layout the host detects, weights made as inference tensors), placed, encoded and decoded by the pack and
compared with the host's own VAE Encode and VAE Decode.
"""

from __future__ import annotations

import comfy.latent_formats
import comfy.sd
import pytest
import torch
from comfy.taesd.taesd import TAESD
from comfyui_layer_sketch.layer_model.host_vae import HostVAE, candidate_spaces, place_vae
from comfyui_layer_sketch.layer_model.latent_spaces import SPACES, LatentSpace
from support import host_vaes

KIND = {"SD15": "sd", "SDXL": "sd", "Flux": "ae", "SD3": "ae", "Flux2": "flux2", "Wan21": "wan21"}
TWINS = {"SD15": "SDXL", "SDXL": "SD15", "Flux": "SD3", "SD3": "Flux"}  # one VAE architecture, two spaces
SIZE = 64


@pytest.fixture(scope="module")
def vaes(fixture_cache):
    built: dict[str, comfy.sd.VAE] = {}

    def get(kind: str) -> comfy.sd.VAE:
        if kind not in built:
            built[kind] = host_vaes.host_vae(fixture_cache, kind)
        return built[kind]
    return get


def _images(seed: int = 0) -> torch.Tensor:
    return torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def host_encode(vae, rgb: torch.Tensor, space: LatentSpace) -> torch.Tensor:
    """What VAE Encode returns, frame axis squeezed. A video VAE reads a batch as one clip's frames: an image at
    a time, as Qwen-Image's latents are made."""
    with torch.inference_mode():
        if space.frames:
            return torch.cat([vae.encode(rgb[i:i + 1].movedim(1, -1)) for i in range(rgb.shape[0])])[:, :, 0]
        return vae.encode(rgb.movedim(1, -1)).clone()


def host_decode(vae, latent: torch.Tensor, space: LatentSpace) -> torch.Tensor:
    with torch.inference_mode():
        pixels = vae.decode(latent.unsqueeze(2) if space.frames else latent)
    return (pixels[:, 0] if space.frames else pixels).movedim(-1, 1).clone()


@pytest.mark.parametrize("name", SPACES)
def test_each_space_is_a_host_latent_format(name):
    space, latent_format = SPACES[name], getattr(comfy.latent_formats, name)
    assert latent_format.latent_channels == space.channels
    assert latent_format.latent_dimensions == (3 if space.frames else 2)
    if hasattr(latent_format, "spacial_downscale_ratio"):  # declared since ComfyUI 0.4-ish; 8 unless said
        assert latent_format.spacial_downscale_ratio == space.downscale


@pytest.mark.parametrize("name", SPACES)
def test_place_vae_reads_the_space_or_asks_which_of_two(vaes, name):
    space, vae = SPACES[name], vaes(KIND[name])
    assert place_vae(vae, name) == space and place_vae(vae, space.label) == space
    if name not in TWINS:
        assert place_vae(vae) == space and place_vae(vae, "auto") == space
        return
    twin = SPACES[TWINS[name]]
    with pytest.raises(ValueError, match="Set latent_format to") as refused:
        place_vae(vae)
    for named in (space.label, twin.label, space.name, twin.name):
        assert named in str(refused.value)


@pytest.mark.parametrize("kind, chosen", [("sd", "Flux"), ("sd", "Flux2"), ("ae", "SDXL"), ("ae", "Wan21"),
                                          ("flux2", "SD3"), ("wan21", "Flux")])
def test_a_latent_format_the_vae_is_not_is_refused_naming_both(vaes, kind, chosen):
    vae = vaes(kind)
    for attempt in (lambda: place_vae(vae, chosen), lambda: HostVAE(vae, SPACES[chosen])):
        with pytest.raises(ValueError, match=f"latent_format is {chosen} ") as refused:
            attempt()
        assert all(space.label in str(refused.value) for space in candidate_spaces(vae))
    with pytest.raises(ValueError, match="Unknown latent format 'SD2'"):
        place_vae(vae, "SD2")


def _taesd() -> comfy.sd.VAE:
    with torch.inference_mode():
        state = {k: torch.zeros_like(v) for k, v in TAESD(latent_channels=4).state_dict().items()}
        return comfy.sd.VAE(sd=state)


@pytest.mark.parametrize("make", [_taesd, lambda: comfy.sd.VAE(sd={"pixel_space_vae": torch.tensor(1.0)})],
                         ids=["TAESD", "pixel space"])
def test_vaes_of_other_spaces_are_refused_naming_the_supported_ones(make):
    vae = make()
    with pytest.raises(ValueError, match="encodes to none of the latent spaces") as refused:
        place_vae(vae, "SD15")
    assert all(space.label in str(refused.value) for space in SPACES.values())


@pytest.mark.parametrize("name", SPACES)
def test_the_posterior_mean_is_what_vae_encode_returns(vaes, name):
    space, vae = SPACES[name], vaes(KIND[name])
    rgb = _images()
    mean, std = HostVAE(vae, space).posterior(rgb)
    shape = (2, space.channels, SIZE // space.downscale, SIZE // space.downscale)
    assert mean.shape == std.shape == shape and mean.dtype == std.dtype == torch.float32
    assert not mean.requires_grad and not mean.is_inference() and bool((std > 0).all())
    torch.testing.assert_close(mean, host_encode(vae, rgb, space), atol=1e-5, rtol=1e-5)


def _moved_posterior(vae, rgb: torch.Tensor, space: LatentSpace, k: float) -> torch.Tensor:
    """VAE Encode with the posterior's mean moved by k standard deviations where the host forms it."""
    def move(moments: torch.Tensor) -> torch.Tensor:
        mean, log_var = moments.chunk(2, dim=1)
        return torch.cat([mean + k * torch.exp(0.5 * log_var.clamp(-30.0, 20.0)), log_var], dim=1)

    model = vae.first_stage_model
    if space.frames:  # Wan 2.1: its conv1 gives (mu, log_var)
        handle = model.conv1.register_forward_hook(lambda _m, _args, out: move(out))
    else:  # KL autoencoders: the diagonal Gaussian regulariser takes the moments
        handle = model.regularization.register_forward_pre_hook(lambda _m, args: (move(args[0]), *args[1:]))
    try:
        return host_encode(vae, rgb, space)
    finally:
        handle.remove()


@pytest.mark.parametrize("name", ["SD15", "Flux", "Flux2", "Wan21"])
def test_std_is_the_posterior_spread_in_the_host_latent_units(vaes, name):
    """FLUX.2 above all: the host rearranges and normalises its latent after the posterior, std must follow."""
    space, vae = SPACES[name], vaes(KIND[name])
    rgb = _images(1)
    mean, std = HostVAE(vae, space).posterior(rgb)
    assert std.std() > 0.05 * std.mean(), "a posterior whose spread varies, or the test could not tell"
    torch.testing.assert_close((_moved_posterior(vae, rgb, space, 0.5) - mean) / 0.5, std, atol=1e-4, rtol=1e-4)


def test_sizes_the_vae_cannot_encode_are_refused(vaes):
    with pytest.raises(ValueError, match=r"sides multiples of 16; got a tensor of shape \(1, 3, 40, 40\)"):
        HostVAE(vaes("flux2"), SPACES["Flux2"]).posterior(torch.rand(1, 3, 40, 40))


def _latent(space: LatentSpace, batch: int = 2) -> torch.Tensor:
    shape = (batch, space.channels, SIZE // space.downscale, SIZE // space.downscale)
    return torch.randn(shape, generator=torch.Generator().manual_seed(5))


@pytest.mark.parametrize("name", SPACES)
def test_decode_is_what_vae_decode_returns_even_inside_inference_mode(vaes, name):
    space, vae = SPACES[name], vaes(KIND[name])
    latent = _latent(space)
    with torch.inference_mode():  # as inside a node
        rgb = HostVAE(vae, space).decode(latent)
    assert rgb.shape == (2, 3, SIZE, SIZE) and rgb.dtype == torch.float32 and not rgb.is_inference()
    torch.testing.assert_close(rgb, host_decode(vae, latent, space), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["SD15", "Flux", "Flux2", "Wan21"])
def test_decode_passes_gradients_to_the_latent_and_none_to_the_inference_weights(vaes, fixture_cache, name):
    space, vae = SPACES[name], vaes(KIND[name])
    weights = list(vae.first_stage_model.parameters())
    assert all(w.is_inference() and w.requires_grad for w in weights), "made as Load VAE makes it in a graph"
    latent = _latent(space, 1)
    probe = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(6))
    with torch.inference_mode(False), torch.enable_grad():
        z = latent.clone().requires_grad_(True)
        with pytest.raises(RuntimeError, match="Inference tensors cannot be saved for backward"):
            vae.first_stage_model.decode(z.unsqueeze(2) if space.frames else z)  # the host's module, as it is
        (HostVAE(vae, space).decode(z) * probe).sum().backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().max() > 0
    assert all(w.grad is None and w.is_inference() for w in weights), "weights untouched, restored"

    # The reference: torch differentiating the host's own decode of the same file loaded outside inference mode.
    normal = host_vaes.host_vae(fixture_cache, KIND[name], inference=False)
    with torch.enable_grad():
        at = latent.clone().requires_grad_(True)
        pixels = normal.first_stage_model.decode(at.unsqueeze(2) if space.frames else at)
        rgb = normal.process_output((pixels[:, :, 0] if space.frames else pixels).clone())
        (expected,) = torch.autograd.grad((rgb * probe).sum(), at)
        (HostVAE(normal, space).decode(at) * probe).sum().backward()  # trainable weights: none get a gradient
    torch.testing.assert_close(z.grad, expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(at.grad, expected, atol=1e-6, rtol=1e-5)
    assert all(w.grad is None for w in normal.first_stage_model.parameters())
