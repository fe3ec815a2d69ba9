"""The contract between the pack and ComfyUI, as data: every host symbol the pack calls, with the shape it
calls it in. tests/host/test_host_api.py checks each entry against the running host.

An entry (`Use`) is a dotted host path plus what the pack relies on:
  call       the pack's call shape, e.g. "(pixels)" or "(models, memory_required=, force_full_load=)":
             that many positional arguments and those keyword names ("**kw": the host must take **kwargs)
  same       the host's exact parameter list, for host functions whose parameters the pack takes in
             the same order (the pack's wrappers and overrides): "(self, x, t, c_concat=, **kwargs)"
  mentions   names the host's code must still use (dict keys it fills, attributes it reads)
  is_a       the exact host class the object must be (the pack tests `type(x) is ...`)
  alternatives  other entries, any one of which may hold instead (where the pack handles both shapes)
No field: the symbol must exist. A path may start at a small real host object instead of a module:
"comfy.sd.VAE(SD).process_input" is the attribute of a VAE built by INSTANCES["comfy.sd.VAE(SD)"].

To add an entry: put `Use("<dotted path>", "<call shape>", "<pack file>")` in the section of its host
module. `test_contract_is_complete` fails, naming file and line, for any `comfy.*`/`folder_paths.*`
use in the pack without an entry here; methods called on host objects (a MODEL, a VAE) it cannot
see, so add those by hand when the pack starts calling one.
"""

from __future__ import annotations

from dataclasses import dataclass

from comfyui_layer_sketch.layer_model.attention_sharing import SD15_ATTENTION_PATHS
from support import host_models


@dataclass(frozen=True)
class Use:
    path: str
    call: str | None = None
    where: str = ""
    same: str | None = None
    mentions: tuple[str, ...] = ()
    is_a: str | None = None
    alternatives: tuple[Use, ...] = ()
    subclasses: bool = False  # also check overrides in the host's subclasses (ModelPatcherDynamic, ...)


SD15, SDXL, VAE = "comfy.model_patcher.ModelPatcher(SD15)", "comfy.model_patcher.ModelPatcher(SDXL)", "comfy.sd.VAE(SD)"
UNET = f"{SD15}.model.diffusion_model"
ATTN = f"{SD15}.model.{SD15_ATTENTION_PATHS[0]}"
INSTANCES = {  # small real host objects, built once per session
    SD15: lambda: host_models.random_model("SD15", host_models.NARROW_SD15_UNET),
    SDXL: lambda: host_models.random_model("SDXL", host_models.NARROW_SDXL_UNET),
    VAE: host_models.small_vae,
}
LH, LP, SH, CH = "layer_model/host.py", "layer_model/host_patches.py", "sketch_guidance/host.py", "common/host.py"
HV = "layer_model/host_vae.py"
HR = "layer_model/host_rgba_vae.py"


def patcher(name: str, call: str, where: str) -> Use:
    return Use(f"comfy.model_patcher.ModelPatcher.{name}", call, where, subclasses=True)


def module(name: str, where: str) -> Use:
    return Use(name, where=where)


CONTRACT: tuple[Use, ...] = (
    # Modules the pack imports.
    module("comfy.cli_args", "common/host_path.py"),
    module("comfy.latent_formats", f"{CH}, {LH}"),
    module("comfy.ldm.models.autoencoder", HV),
    module("comfy.ldm.modules.diffusionmodules.model", HV),
    module("comfy.ldm.wan.vae", HV),
    module("comfy.diffusers_convert", HR),
    module("comfy.ldm.modules.attention", f"{LP}, {SH}"),
    # The guided pass swaps the host's sub-quadratic attention (in-place exp) for PyTorch's, through the
    # attention override the host's attention functions look up in transformer_options.
    Use("comfy.ldm.modules.attention.attention_pytorch", "(q, k, v, heads, mask=, attn_precision=, skip_reshape=, "
        "skip_output_reshape=)", SH),
    Use("comfy.ldm.modules.attention.wrap_attn", where=SH, mentions=("optimized_attention_override",)),
    module("comfy.lora", LP),
    module("comfy.model_management", f"{LH}, {LP}, {SH}, {CH}, {HV}"),
    module("comfy.model_patcher", f"{LH}, {LP}, {SH}"),
    module("comfy.ops", LP),
    module("comfy.patcher_extension", f"{LP}, {SH}"),
    module("comfy.samplers", SH),
    module("comfy.sd", f"{SH}, {HV}"),
    module("comfy.utils", f"{LH}, {LP}, {CH}"),
    module("comfy.weight_adapter", LP),
    module("folder_paths", f"{LH}, {SH}, {CH}, {HR}"),
    module("server", CH),
    # A training node's running losses under it in the editor
    Use("server.PromptServer", where=CH, mentions=("instance",)),
    Use("server.PromptServer.send_progress_text", "(text, node_id)", CH),
    # comfy.model_management
    Use("comfy.model_management.throw_exception_if_processing_interrupted", "()", LH),
    Use("comfy.model_management.get_torch_device", "()", f"{LH}, {LP}, {SH}"),
    Use("comfy.model_management.should_use_fp16", "(load_device)", LH),
    Use("comfy.model_management.should_use_bf16", "(device)", LH),  # may a GPU decode in bf16
    Use("comfy.model_management.vae_offload_device", "()", LH),
    Use("comfy.model_management.unet_offload_device", "()", f"{LP}, {SH}"),
    Use("comfy.model_management.load_models_gpu", "(models, memory_required=, force_full_load=)", f"{LH}, {HV}"),
    Use("comfy.model_management.get_free_memory", "(device)", LH),
    Use("comfy.model_management.intermediate_device", "()", f"{LH}, {CH}"),
    Use("comfy.model_management.OOM_EXCEPTION", where=LH),
    Use("comfy.model_management.soft_empty_cache", "()", LH),
    # comfy.model_patcher: MODEL objects, and the pack's own models wrapped for model management
    Use("comfy.model_patcher.ModelPatcher", "(module, load_device=, offload_device=)", f"{LH}, {LP}, {SH}"),
    patcher("clone", "()", f"{LP}, {SH}"),
    Use("comfy.model_patcher.ModelPatcher.add_patches", "(patches, strength)", LP, mentions=("append",),
        subclasses=True),  # returns the keys it applied: the FLUX LoRA counts them
    patcher("add_object_patch", "(module_path, module)", LP),
    patcher("add_wrapper_with_key", "(wrapper_type, key, wrapper)", f"{LP}, {SH}"),
    patcher("remove_wrappers_with_key", "(wrapper_type, key)", LP),
    patcher("get_model_object", "(name)", f"{LP}, {SH}"),
    patcher("set_model_sampler_post_cfg_function", "(function)", SH),
    # apply_guidance moves its post-CFG function to the front of the clone's list, which the sampler runs in order
    Use("comfy.model_patcher.set_model_options_post_cfg_function", where=SH, mentions=("sampler_post_cfg_function",)),
    patcher("set_additional_models", "(key, models)", SH),
    # The pack sets `patched.size`; the host must still plan memory with it.
    Use("comfy.model_patcher.ModelPatcher.model_size", "()", LP, mentions=("size",), subclasses=True),
    Use(f"{SD15}.model", where=f"{LH}, {LP}, {SH}"),
    Use(f"{SD15}.load_device", where=LH),
    Use(f"{SD15}.size", where=LP),
    # comfy.model_base: what the pack reads off MODEL.model
    Use(f"{SD15}.model.latent_format", where=f"{CH}, {LH}", is_a="comfy.latent_formats.SD15"),
    Use(f"{SDXL}.model.latent_format", where=f"{CH}, {LH}", is_a="comfy.latent_formats.SDXL"),
    Use(f"{SD15}.model.latent_format.process_in", "(latent)", f"{LP}, {SH}"),
    Use(f"{SD15}.model.latent_format.process_out", "(latent)", SH),
    Use(f"{SD15}.model.model_config", where=f"{CH}, {LH}, {LP}"),
    # LayerDiffuseApply's FLUX.1 LoRA: models of FLUX.1's latent format that are not FLUX.1 are refused
    module("comfy.supported_models", f"{LP}, layer_model/host_rgba_lora.py"),
    Use("comfy.supported_models.Flux", where=f"{LP}, layer_model/host_rgba_lora.py"),
    Use("comfy.supported_models.Flux2", where="layer_model/host_rgba_lora.py"),
    Use(f"{SD15}.model.get_dtype", "()", LP),
    Use(f"{SD15}.model.manual_cast_dtype", where=LP),
    Use(f"{SD15}.model.state_dict", "()", LP),
    Use(f"{SD15}.model.model_sampling.percent_to_sigma", "(percent)", f"{LP}, {SH}"),
    Use(f"{SD15}.model.model_sampling.sigma", "(timestep)", SH),
    Use(f"{SD15}.model.model_sampling.noise_scaling", "(sigma, noise, latent_image)", SH),
    # APPLY_MODEL wrappers get these arguments positionally and pass them on in this order.
    Use("comfy.model_base.BaseModel._apply_model", where=f"{LP}, {SH}",
        same="(self, x, t, c_concat=, c_crossattn=, control=, transformer_options=, **kwargs)"),
    Use("comfy.model_base.BaseModel.apply_model", where=f"{LP}, {SH}", mentions=("APPLY_MODEL",)),
    Use("comfy.model_base.BaseModel.extra_conds", where=LP, mentions=("noise_concat",)),  # with_condition_latents
    # The UNet: layers the pack hooks (attention sharing, feature capture) and the projections it reads.
    Use(f"{UNET}.in_channels", where=LP),
    Use(f"{UNET}.input_blocks", where=f"{SH}, sketch_guidance/features.py, layer_model/attention_sharing.py"),
    Use(f"{UNET}.middle_block", where="sketch_guidance/features.py, layer_model/attention_sharing.py"),
    Use(f"{UNET}.output_blocks", where="sketch_guidance/features.py, layer_model/attention_sharing.py"),
    *(Use(f"{SD15}.model.{path}", where="layer_model/attention_sharing.py (SD15_ATTENTION_PATHS)")
      for path in SD15_ATTENTION_PATHS),
    Use(f"{ATTN}.forward", "(x, context=, value=, transformer_options=)", "layer_model/attention_sharing.py"),
    Use(f"{ATTN}.heads", where="layer_model/attention_sharing.py"),
    Use(f"{ATTN}.to_q.in_features", where="layer_model/attention_sharing.py"),
    Use(f"{ATTN}.to_k.in_features", where="layer_model/attention_sharing.py"),
    Use(f"{ATTN}.to_k.out_features", where="layer_model/attention_sharing.py"),
    Use(f"{ATTN}.to_v", where="layer_model/attention_sharing.py"),
    Use(f"{ATTN}.to_out.0.out_features", where="layer_model/attention_sharing.py"),
    Use(f"{ATTN}.to_out.1", where="layer_model/attention_sharing.py"),
    # _host_weights: host cast layers go through cast_bias_weight, plain ones are read directly.
    Use(f"{ATTN}.to_q.weight_function", where=LP, alternatives=(Use(f"{ATTN}.to_q.weight", where=LP),)),
    Use("comfy.ops.cast_bias_weight", "(linear, x)", LP),
    Use("comfy.ldm.modules.attention.optimized_attention", "(q, k, v, heads, attn_precision=, transformer_options=)",
        LP),
    # The transformer block's attention patches, which the units take over (layer_model/attention_patches.py):
    # the keys it reads, the options it hands the patches, and how it calls a replaced attention.
    Use("comfy.ldm.modules.attention.BasicTransformerBlock.forward", where="layer_model/attention_patches.py",
        mentions=("patches_replace", "attn1_patch", "attn2_patch", "attn1_output_patch", "attn2_output_patch",
                  "block_index", "n_heads", "dim_head", "attn_precision", "to_q", "to_out")),
    Use(f"{ATTN}.attn_precision", where="layer_model/attention_sharing.py"),
    # Weight patches: a LoRA adapter or a "diff" with pad_weight (the wider conv_in).
    Use("comfy.weight_adapter.LoRAAdapter", "(loaded_keys, weights)", LP),
    Use("comfy.lora.calculate_weight", where=LP, mentions=("diff", "pad_weight")),
    # The FLUX LoRA: the host's key map (diffusers names onto fused FLUX weights) and its LoRA reader.
    Use("comfy.lora.model_lora_keys_unet", "(model, key_map)", LP, mentions=("Flux", "flux_to_diffusers")),
    Use("comfy.lora.load_lora", "(lora, to_load, log_missing=)", LP),
    Use("comfy.patcher_extension.WrappersMP.APPLY_MODEL", where=f"{LP}, {SH}"),
    # comfy.samplers: the post-CFG args and transformer_options keys the pack reads, the feature probe
    Use("comfy.samplers.cfg_function", where=SH, mentions=("denoised", "input", "sigma", "sampler_post_cfg_function")),
    Use("comfy.samplers._calc_cond_batch", where=f"{SH}, layer_model/attention_sharing.py",
        mentions=("cond_or_uncond", "sigmas")),
    Use("comfy.samplers.Sampler", where=SH),
    # _FeatureProbe.sample overrides the sampler protocol: the guider calls it with these parameters.
    Use("comfy.samplers.KSAMPLER.sample", where=SH,
        same="(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=, denoise_mask=, disable_pbar=)"),
    Use("comfy.samplers.CFGGuider", "(model)", SH),
    Use("comfy.samplers.CFGGuider.set_conds", "(positive, negative)", SH),
    Use("comfy.samplers.CFGGuider.set_cfg", "(cfg)", SH),
    Use("comfy.samplers.CFGGuider.sample", "(noise, latent, sampler, sigmas, disable_pbar=, seed=)", SH),
    Use("comfy.samplers.CFGGuider.predict_noise", "(x, timestep, model_options=, seed=)", SH),  # model_wrap(...)
    Use("comfy.samplers.CFGGuider.outer_sample", where=SH, mentions=("inner_model",)),
    # comfy.sd: VAE, CLIP, checkpoint loading
    Use("comfy.sd.load_checkpoint_guess_config", "(path, output_vae=, output_clip=, embedding_directory=)", SH),
    Use("comfy.sd.CLIP.tokenize", "(caption)", CH),
    Use("comfy.sd.CLIP.encode_from_tokens_scheduled", "(tokens)", CH),
    # A VAE file loaded as Load VAE loads it (the trainer's --vae), or an RGBA VAE built from an explicit autoencoder
    # configuration (then given the settings the host's detection gives the RGB VAE of its family).
    Use("comfy.sd.VAE", "(sd=, config=, metadata=)", f"{HV}, {HR}", mentions=("params", "AutoencoderKL")),
    Use("comfy.utils.load_torch_file", "(path, return_metadata=)", HV),
    Use("comfy.sd.VAE.vae_encode_crop_pixels", "(pixels)", LH),
    Use("comfy.sd.VAE.encode", "(pixels)", f"{SH}, {HR}"),
    Use(f"{VAE}.first_stage_model.encoder", where=f"{LH}, {HV}"),
    # The posterior is read from quant_conv's output where there is one (the SD VAE), else the encoder's.
    Use(f"{VAE}.first_stage_model.quant_conv", where=HV),
    Use(f"{VAE}.first_stage_model.regularization", where=HV),
    Use(f"{VAE}.first_stage_model.decoder", where=HV),
    Use(f"{VAE}.first_stage_model.encode", "(x)", HV),
    Use(f"{VAE}.first_stage_model.decode", "(z)", HV),
    Use(f"{VAE}.latent_channels", where=f"{LH}, {HV}"),
    Use(f"{VAE}.latent_dim", where=HV),
    Use(f"{VAE}.output_channels", where=HV),
    Use(f"{VAE}.spacial_compression_encode", "()", HV),
    Use(f"{VAE}.patcher", where=HV),
    Use(f"{VAE}.disable_offload", where=HV),
    Use(f"{VAE}.memory_used_encode", "(shape, dtype)", HV),
    Use(f"{VAE}.memory_used_decode", "(shape, dtype)", HV),
    Use(f"{VAE}.vae_dtype", where=HV),
    Use(f"{VAE}.process_input", "(pixels)", HV),
    Use(f"{VAE}.process_output", "(pixels)", HV),
    Use(f"{VAE}.device", where=HV),
    # RGBA VAEs (tests/host/test_rgba_vae.py compares their settings with the host's RGB VAE of the family)
    Use("comfy.ldm.models.autoencoder.AutoencoderKL", "(ddconfig=, embed_dim=)", HR),
    Use("comfy.ldm.models.autoencoder.AutoencodingEngineLegacy", where=HR, mentions=("batch_norm_latent",)),
    Use("comfy.diffusers_convert.convert_vae_state_dict", "(state)", HR),
    Use(f"{VAE}.downscale_ratio", where=HR),
    Use(f"{VAE}.upscale_ratio", where=HR),
    Use("comfy.sd.VAE.decode", "(latent)", HR),
    # comfy.ldm: the VAE classes place_vae tells apart, and the encodes whose posterior HostVAE reads
    Use("comfy.ldm.models.autoencoder.AutoencodingEngine", where=HV),
    Use("comfy.ldm.models.autoencoder.DiagonalGaussianRegularizer", where=HV),
    Use("comfy.ldm.modules.diffusionmodules.model.Encoder", where=HV),
    Use("comfy.ldm.modules.diffusionmodules.model.Decoder", where=HV),
    Use("comfy.ldm.wan.vae.WanVAE", where=HV),
    Use("comfy.ldm.wan.vae.WanVAE.encode", "(x)", HV, mentions=("conv1", "log_var")),
    Use("comfy.ldm.wan.vae.WanVAE.decode", "(z)", HV),
    # FLUX.2: std follows the patchify and batch-norm normalisation the host applies after the posterior.
    Use("comfy.ldm.models.autoencoder.AutoencodingEngineLegacy.encode", "(x)", HV,
        mentions=("quant_conv", "regularization", "ps", "bn", "running_mean", "running_var", "bn_eps")),
    Use("comfy.ldm.modules.distributions.distributions.DiagonalGaussianDistribution.__init__", where=HV,
        mentions=("chunk", "clamp")),  # (mean, log-variance) halves; LOG_VAR_RANGE
    Use("comfy.latent_formats.SD15", where=f"{CH}, {LH}"),
    Use("comfy.latent_formats.SDXL", where=f"{CH}, {LH}"),
    Use("comfy.latent_formats.Flux", where=f"{CH}, {LH}"),
    # The other latent spaces a trained codec can be for, by their format class (layer_model/latent_spaces.py)
    Use("comfy.latent_formats.SD3", where=LH),
    Use("comfy.latent_formats.Flux2", where=LH),
    Use("comfy.latent_formats.Wan21", where=LH),
    # comfy.utils
    Use("comfy.utils.ProgressBar", "(total)", f"{LH}, {CH}"),
    Use("comfy.utils.ProgressBar.update_absolute", "(done, total)", f"{LH}, nodes/sketch.py"),
    Use("comfy.utils.ProgressBar.update", "(count)", LH),
    Use("comfy.utils.get_attr", "(model, path)", LP),
    # The diffusers set's offsets: the host's map of diffusers UNet names, read from the MODEL's UNet config
    Use("comfy.utils.unet_to_diffusers", "(unet_config)", LP),  # what it maps: tests/host/test_diffusers_set.py
    Use(f"{SDXL}.model.model_config.unet_config", where=LP),
    Use("comfy.cli_args.args", where="common/host_path.py"),
    Use("comfy.cli_args.args.cpu", where="common/host_path.py"),
    # folder_paths
    Use("folder_paths.models_dir", where=CH),
    Use("folder_paths.folder_names_and_paths", where=f"{LH}, {CH}"),
    Use("folder_paths.add_model_folder_path", "(folder_name, path)", CH),
    Use("folder_paths.get_folder_paths", "(folder_name)", f"{LH}, {SH}, {HR}"),
    Use("folder_paths.get_full_path_or_raise", "(folder_name, name)", SH),
    Use("folder_paths.get_filename_list", "(folder_name)", f"{SH}, {LH}, {HR}"),
    # None where missing: the pack's own message
    Use("folder_paths.get_full_path", "(folder_name, name)", f"{LH}, {HR}"),
    Use("folder_paths.get_save_image_path", "(prefix, output_dir, width, height)", CH),
    Use("folder_paths.get_output_directory", "()", CH),
    Use("folder_paths.get_input_directory", "()", CH),
)
