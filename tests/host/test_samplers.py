"""Every common sampler with sketch guidance and with LayerDiffusion, in-process on the real host."""

from __future__ import annotations

import comfy.sample
import comfy.samplers
import pytest
import torch
from comfyui_layer_sketch.sketch_guidance import host as sketch_host
from comfyui_layer_sketch.sketch_guidance.guidance import edge_loss
from comfyui_layer_sketch.sketch_guidance.predictor import load_predictor
from support import sketches
from support.host_models import patcher_of, tiny_model
from support.layer_modes import SDXL_MODES, apply_mode, frames_of, install_mode_files, install_sdxl_files
from support.layer_modes import sample as sample_model

SAMPLERS = [("euler", "normal"), ("euler_ancestral", "normal"), ("dpmpp_2m", "karras"), ("dpmpp_2m_sde", "karras"),
            ("uni_pc", "normal"), ("lcm", "normal"), ("euler_cfg_pp", "normal"), ("dpmpp_2m_cfg_pp", "karras")]
# CFG++ samplers build the next latent from the guided estimate in full (the others from a fraction of it,
# 1 - sigma_next/sigma), so the same strength pushes 2-5x harder: 4.0 overshoots there (dpmpp_2m_cfg_pp:
# 0.94, lower for only 2 of 4 seeds), the default 1.6 works. On this random-weight UNet the others need
# 4.0 for a clear effect.
STRENGTH = {"euler_cfg_pp": 1.6, "dpmpp_2m_cfg_pp": 1.6}


def _prompts(clip):
    with torch.inference_mode():
        return (clip.encode_from_tokens_scheduled(clip.tokenize("a shape")),
                clip.encode_from_tokens_scheduled(clip.tokenize("")))


@pytest.mark.parametrize("sampler, scheduler", SAMPLERS)
def test_guidance_lowers_the_edge_loss_with_each_sampler(narrow, clip, trained, sampler, scheduler):
    """The predictor's loss against the sketch where guidance ends (20 steps, guided for the first half), with
    and without guidance from the same 64 seeds in one batch (guidance scales each sample on its own): lower
    by at least 5% in geometric mean, and lower beyond chance by a one-sided paired t-test on the log ratios
    (t below -2.60; p < 0.01 needs -2.39 at 63 degrees of freedom). On a random-weight UNet single seeds
    scatter from 0.3 to 1.8 of the plain loss: with 4 seeds a sampler failed on one unlucky draw; with 32 the
    weakest of 3 trained predictors gave t -2.9 (lcm), the others -4.9 or lower."""
    model, vae = narrow
    positive, negative = _prompts(clip)
    predictor = load_predictor(trained[0])
    steps, samples = 20, 64
    sampling = model.get_model_object("model_sampling")
    sigmas = comfy.samplers.calculate_sigmas(sampling, scheduler, steps)
    end = int((sigmas >= sampling.percent_to_sigma(0.5)).sum())
    losses = {}
    with torch.inference_mode():
        target = sketch_host.sketch_target(vae, model, sketches.drawn_sketch(7))
        guided = sketch_host.apply_guidance(model, patcher_of(predictor), target, STRENGTH.get(sampler, 4.0), 0.5)
        for name, sampled in (("plain", model), ("guided", guided)):
            latent = torch.zeros(samples, 4, 8, 8)
            out = comfy.sample.sample(sampled, comfy.sample.prepare_noise(latent, 0), steps, 5.0, sampler,
                                      scheduler, positive, negative, latent, seed=0, last_step=end,
                                      force_full_denoise=False, disable_pbar=True)
            x = model.model.latent_format.process_in(out)
            predicted = sketches.predicted_edges(model, predictor, positive, x, float(sigmas[end]))
            losses[name] = edge_loss(predicted, target).double()
    log_ratio = (losses["guided"] / losses["plain"]).log()
    t = float(log_ratio.mean() / (log_ratio.std() / samples**0.5))
    ratio = float(log_ratio.mean().exp())
    lower = int((log_ratio < 0).sum())
    print(f"\n{sampler}/{scheduler}: guided/plain {ratio:.3f} (geometric mean), lower for {lower}/{samples}, "
          f"per seed {float(log_ratio.exp().min()):.2f}-{float(log_ratio.exp().max()):.2f}, t {t:.2f}")
    assert ratio < 0.95 and t < -2.60, log_ratio.exp().tolist()


LAYER_CASES = [("transparent", 0.0, 0.5), ("joint", 0.0, 1.0), ("SDXL transparent (attention injection)", 0.3, 0.7)]


@pytest.mark.parametrize("sampler, scheduler", SAMPLERS)
@pytest.mark.parametrize("mode, start, end", LAYER_CASES)
def test_layer_diffusion_with_each_sampler(layer_folder, layer_models, sampler, scheduler, mode, start, end):
    """The units and gated layers read sigma on every model call: ancestral/SDE noise and CFG++ bookkeeping
    leave the range as it is (a range that starts at the end is exactly the plain model)."""
    model = layer_models["SDXL" if mode in SDXL_MODES else "SD15"]
    install_sdxl_files(layer_folder, model) if mode in SDXL_MODES else install_mode_files(layer_folder, model)
    batch = 1 if mode in SDXL_MODES else frames_of(mode)

    def sample(patched):
        return sample_model(patched, batch, steps=6, sampler=sampler, scheduler=scheduler)

    base = sample(model)
    layered = sample(apply_mode(model, mode, 1.0, start, end))
    assert torch.isfinite(layered).all() and (layered - base).abs().max() > 1e-3
    assert torch.equal(sample(apply_mode(model, mode, 1.0, 1.0, 1.0)), base)


@pytest.fixture(scope="module")
def layer_models():
    return {"SD15": tiny_model("SD15"), "SDXL": tiny_model("SDXL")}
