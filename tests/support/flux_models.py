"""FLUX fixtures in the published layouts with random values: a reduced FLUX.1-dev transformer the host detects
as FLUX.1, the `ae` VAE, the FLUX port's `TransparentVAE.pth`, and a PEFT LoRA in the port's key format.

The reduced transformer keeps FLUX.1's real widths (hidden 3072, 24 heads, T5/CLIP-L input sizes) with one
double-stream and one single-stream block: the host reads the block counts from the file.
"""

from __future__ import annotations

from pathlib import Path

import comfy.sd
import safetensors.torch
import torch
from comfy.ldm.models.autoencoder import AutoencoderKL
from comfy.ldm.modules.diffusionmodules.model import Decoder, Encoder
from comfyui_layer_sketch.common import files
from comfyui_layer_sketch.layer_model.transparent_codec import FLUX_CODEC

from . import fixtures
from .host_models import randomize

HIDDEN, MLP, HEAD_DIM, CONTEXT, POOLED, LATENT_CHANNELS = 3072, 4 * 3072, 128, 4096, 768, 16
REDUCED_FLUX = "random_flux1_dev_d1s1.safetensors"
FLUX_VAE = "random_flux_ae.safetensors"
AE_CONFIG = {"double_z": True, "z_channels": 16, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
             "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
SMALL_AE_CONFIG = dict(AE_CONFIG, ch=32, num_res_blocks=1)


def _linear(shapes: dict, key: str, out_features: int, in_features: int) -> None:
    shapes[f"{key}.weight"], shapes[f"{key}.bias"] = (out_features, in_features), (out_features,)


def _qk_norm(shapes: dict, key: str) -> None:
    shapes[f"{key}.query_norm.scale"] = shapes[f"{key}.key_norm.scale"] = (HEAD_DIM,)


def flux1_dev_shapes(double: int = 1, single: int = 1) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a FLUX.1-dev transformer file (as `flux1-dev.safetensors`) with the given block counts."""
    shapes: dict[str, tuple[int, ...]] = {}
    _linear(shapes, "img_in", HIDDEN, 64)
    _linear(shapes, "txt_in", HIDDEN, CONTEXT)
    for embedder, width in (("time_in", 256), ("vector_in", POOLED), ("guidance_in", 256)):
        _linear(shapes, f"{embedder}.in_layer", HIDDEN, width)
        _linear(shapes, f"{embedder}.out_layer", HIDDEN, HIDDEN)
    for i in range(double):
        for stream in ("img", "txt"):
            block = f"double_blocks.{i}.{stream}"
            _linear(shapes, f"{block}_mod.lin", 6 * HIDDEN, HIDDEN)
            _linear(shapes, f"{block}_attn.qkv", 3 * HIDDEN, HIDDEN)
            _qk_norm(shapes, f"{block}_attn.norm")
            _linear(shapes, f"{block}_attn.proj", HIDDEN, HIDDEN)
            _linear(shapes, f"{block}_mlp.0", MLP, HIDDEN)
            _linear(shapes, f"{block}_mlp.2", HIDDEN, MLP)
    for i in range(single):
        block = f"single_blocks.{i}"
        _linear(shapes, f"{block}.linear1", 3 * HIDDEN + MLP, HIDDEN)
        _linear(shapes, f"{block}.linear2", HIDDEN, HIDDEN + MLP)
        _qk_norm(shapes, f"{block}.norm")
        _linear(shapes, f"{block}.modulation.lin", 3 * HIDDEN, HIDDEN)
    _linear(shapes, "final_layer.linear", 64, HIDDEN)
    _linear(shapes, "final_layer.adaLN_modulation.1", 2 * HIDDEN, HIDDEN)
    return shapes


def _random_state(shapes: dict[str, tuple[int, ...]], seed: int, dtype=torch.bfloat16) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if key.endswith(".scale"):
            state[key] = torch.ones(shape, dtype=dtype)
        elif key.endswith(".bias"):
            state[key] = torch.zeros(shape, dtype=dtype)
        else:
            state[key] = (torch.randn(shape, generator=generator) * 0.02).to(dtype)
    return state


def reduced_flux_file(cache: Path) -> Path:
    """The reduced FLUX.1-dev transformer in bf16 (545 M parameters, 1.1 GB; made once, in about 10 s)."""
    path = cache / REDUCED_FLUX
    if not path.exists():
        fixtures._save(_random_state(flux1_dev_shapes(), seed=0), path)
    return path


def load_reduced_flux(cache: Path):
    """The reduced FLUX.1 as the host's Load Diffusion Model gives it (detected from the file)."""
    return comfy.sd.load_diffusion_model(str(reduced_flux_file(cache)))


def ae_state(config: dict = AE_CONFIG, seed: int = 0, dtype=torch.float32) -> dict[str, torch.Tensor]:
    """The FLUX `ae` autoencoder's keys (`encoder.*`, `decoder.*`) built from the host's own layers."""
    torch.manual_seed(seed)
    modules = {"encoder": Encoder(**config), "decoder": Decoder(**config)}
    state = {}
    for prefix, module in modules.items():
        randomize(module, seed)
        state.update({f"{prefix}.{k}": v.to(dtype) for k, v in module.state_dict().items()})
    return state


def flux_vae_file(cache: Path) -> Path:
    """A random VAE in the real `ae.safetensors` layout (84 M parameters, bf16)."""
    path = cache / FLUX_VAE
    if not path.exists():
        fixtures._save(ae_state(dtype=torch.bfloat16), path)
    return path


def flux_vae(cache: Path) -> comfy.sd.VAE:
    """The host's VAE from the random `ae` file, as Load VAE gives it (16 latent channels, no quant conv)."""
    return comfy.sd.VAE(sd=safetensors.torch.load_file(str(flux_vae_file(cache))))


def small_flux_vae(seed: int = 0) -> comfy.sd.VAE:
    """A narrow host KL VAE with FLUX's 16-channel latent: fast enough to train an encoder against."""
    autoencoder = AutoencoderKL(ddconfig=SMALL_AE_CONFIG, embed_dim=16)
    randomize(autoencoder, seed)
    with torch.no_grad():  # a posterior with some spread, as trained VAEs have
        autoencoder.quant_conv.weight.mul_(20.0)
    vae = comfy.sd.VAE(sd=autoencoder.state_dict(), config={"params": {"ddconfig": SMALL_AE_CONFIG, "embed_dim": 16}})
    vae.latent_channels = 16  # the host reads it from the file's keys, which a given config skips
    return vae


def transparent_vae_state(seed: int = 0, dtype=torch.float16) -> dict[str, torch.Tensor]:
    """`decoder.*` + `encoder.*` of the FLUX port's TransparentVAE.pth (556 tensors), PyTorch's default init,
    the decoder's output centred on 0.5 so that its clipped alpha varies over the image."""
    torch.manual_seed(seed)
    decoder = FLUX_CODEC.decoder()
    with torch.no_grad():
        decoder.conv_out.bias.fill_(0.5)
    state = {f"decoder.{k}": v.to(dtype) for k, v in decoder.state_dict().items()}
    state.update({f"encoder.{k}": v.to(dtype) for k, v in FLUX_CODEC.encoder().state_dict().items()})
    return state


def save_pickle(state: dict[str, torch.Tensor], path: Path) -> Path:
    with files.atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def transparent_vae_pth(cache: Path, seed: int = 0) -> Path:
    """The published `.pth` layout (a pickled state dict), cached."""
    path = cache / f"random_flux_TransparentVAE_centred_s{seed}.pth"
    if not path.exists():
        save_pickle(transparent_vae_state(seed), path)
    return path


def diffusers_lora_targets(double: int = 1, single: int = 1) -> dict[str, tuple[str, int, int, int]]:
    """Diffusers layer path (as the port's LoRA names it) -> (host weight key, first row, rows, in features).

    Written out from the FLUX.1 layout, independently of the host's own key map, to check it against.
    """
    h, m, prefix = HIDDEN, MLP, "diffusion_model."
    targets = {}
    for i in range(double):
        src, dst = f"transformer.transformer_blocks.{i}", f"{prefix}double_blocks.{i}"
        for j, name in enumerate(("to_q", "to_k", "to_v")):
            targets[f"{src}.attn.{name}"] = (f"{dst}.img_attn.qkv.weight", j * h, h, h)
        for j, name in enumerate(("add_q_proj", "add_k_proj", "add_v_proj")):
            targets[f"{src}.attn.{name}"] = (f"{dst}.txt_attn.qkv.weight", j * h, h, h)
        targets[f"{src}.attn.to_out.0"] = (f"{dst}.img_attn.proj.weight", 0, h, h)
        targets[f"{src}.attn.to_add_out"] = (f"{dst}.txt_attn.proj.weight", 0, h, h)
        targets[f"{src}.ff.net.0.proj"] = (f"{dst}.img_mlp.0.weight", 0, m, h)
        targets[f"{src}.ff.net.2"] = (f"{dst}.img_mlp.2.weight", 0, h, m)
        targets[f"{src}.ff_context.net.0.proj"] = (f"{dst}.txt_mlp.0.weight", 0, m, h)
        targets[f"{src}.ff_context.net.2"] = (f"{dst}.txt_mlp.2.weight", 0, h, m)
        targets[f"{src}.norm1.linear"] = (f"{dst}.img_mod.lin.weight", 0, 6 * h, h)
        targets[f"{src}.norm1_context.linear"] = (f"{dst}.txt_mod.lin.weight", 0, 6 * h, h)
    for i in range(single):
        src, dst = f"transformer.single_transformer_blocks.{i}", f"{prefix}single_blocks.{i}"
        for j, name in enumerate(("to_q", "to_k", "to_v")):
            targets[f"{src}.attn.{name}"] = (f"{dst}.linear1.weight", j * h, h, h)
        targets[f"{src}.proj_mlp"] = (f"{dst}.linear1.weight", 3 * h, m, h)
        targets[f"{src}.proj_out"] = (f"{dst}.linear2.weight", 0, h, h + m)
        targets[f"{src}.norm.linear"] = (f"{dst}.modulation.lin.weight", 0, 3 * h, h)
    targets["transformer.x_embedder"] = (f"{prefix}img_in.weight", 0, h, 64)
    targets["transformer.context_embedder"] = (f"{prefix}txt_in.weight", 0, h, CONTEXT)
    targets["transformer.proj_out"] = (f"{prefix}final_layer.linear.weight", 0, 64, h)
    # diffusers orders this layer's output (scale, shift), FLUX (shift, scale): the host swaps the halves
    targets["transformer.norm_out.linear"] = (f"{prefix}final_layer.adaLN_modulation.1.weight", 0, 2 * h, h)
    return targets


SWAPPED_HALVES = "transformer.norm_out.linear"


def peft_lora(rank: int = 4, seed: int = 0, scale: float = 0.02, with_alpha: bool = False) -> dict[str, torch.Tensor]:
    """A LoRA for the reduced FLUX.1 in the port's key format (`<path>.lora_A.weight`, `<path>.lora_B.weight`)."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for path, (_, _, rows, in_features) in diffusers_lora_targets().items():
        state[f"{path}.lora_A.weight"] = torch.randn(rank, in_features, generator=generator) * scale
        state[f"{path}.lora_B.weight"] = torch.randn(rows, rank, generator=generator) * scale
        if with_alpha:
            state[f"{path}.alpha"] = torch.tensor(float(rank) / 2)
    return state


# AlphaVAE's LoRA targets (train/train_diffusion_lora.py), matched by PEFT as module-name suffixes: the single
# blocks' attention has to_q/k/v too (but no to_out, and no ff).
ALPHAVAE_TARGETS = ("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.add_q_proj", "attn.add_k_proj",
                    "attn.add_v_proj", "attn.to_add_out", "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj",
                    "ff_context.net.2")


def alphavae_lora_targets(double: int = 1, single: int = 1) -> dict[str, tuple[str, int, int, int]]:
    """The entries of `diffusers_lora_targets` that AlphaVAE's LoRA adapts (12 per double block, 3 per single)."""
    return {path: target for path, target in diffusers_lora_targets(double, single).items()
            if path.endswith(tuple(f".{suffix}" for suffix in ALPHAVAE_TARGETS))}


def alphavae_lora(rank: int = 64, seed: int = 0, scale: float = 0.02) -> dict[str, torch.Tensor]:
    """A LoRA for the reduced FLUX.1 as diffusers' FluxPipeline.save_lora_weights writes AlphaVAE's: PEFT pairs under
    `transformer.`, no alpha tensors (alpha = rank)."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for path, (_, _, rows, in_features) in alphavae_lora_targets().items():
        state[f"{path}.lora_A.weight"] = torch.randn(rank, in_features, generator=generator) * scale
        state[f"{path}.lora_B.weight"] = torch.randn(rows, rank, generator=generator) * scale
    return state


def alphavae_lora_file(cache: Path) -> Path:
    """`alphavae_lora` for the reduced FLUX.1, cached."""
    return fixtures.cached_file(cache, "random_alphavae_flux1_lora_d1s1.safetensors", alphavae_lora)


def flux_conditioning(seed: int = 0, tokens: int = 16, guidance: float = 3.5) -> list:
    """CONDITIONING of FLUX.1's shapes (T5-XXL tokens, CLIP-L pooled) without the 4.8 B-parameter text encoder."""
    generator = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, tokens, CONTEXT, generator=generator),
             {"pooled_output": torch.randn(1, POOLED, generator=generator), "guidance": guidance}]]


def tiny_flux2():
    """A FLUX.2 model (128-channel latent) from the host's own classes, a few hundred thousand parameters wide."""
    import dataclasses

    import comfy.ldm.flux.model
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models

    config = {"image_model": "flux2", "axes_dim": [8, 8, 8, 8], "num_heads": 2, "mlp_ratio": 3.0, "theta": 2000,
              "out_channels": 128, "global_modulation": True, "mlp_silu_act": True, "qkv_bias": False,
              "ops_bias": False, "default_ref_method": "index", "ref_index_scale": 10.0, "txt_ids_dims": [3],
              "patch_size": 1, "in_channels": 128, "hidden_size": 64, "context_in_dim": 64, "vec_in_dim": None,
              "depth": 1, "depth_single_blocks": 1, "guidance_embed": False}
    known = {f.name for f in dataclasses.fields(comfy.ldm.flux.model.FluxParams)} | {"image_model"}
    model_config = comfy.supported_models.Flux2({k: v for k, v in config.items() if k in known})  # per host version
    model_config.set_inference_dtype(torch.float32, None)
    base = model_config.get_model({}, "", device=torch.device("cpu"))
    randomize(base.diffusion_model, 0)
    return comfy.model_patcher.ModelPatcher(base, load_device=mm.get_torch_device(),
                                            offload_device=mm.unet_offload_device())
