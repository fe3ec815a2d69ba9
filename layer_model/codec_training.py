"""Training the latent transparency codec against a frozen VAE: the method's first stage (plain torch).

The offset encoder sees alpha and the colour-filled RGB; its output, times the offset scale and the VAE
posterior's standard deviation, moves the posterior mean: the adjusted latent. The frozen VAE decodes it to
RGB, and the transparent decoder reads that RGB with the adjusted latent back into RGBA. Losses, as the
paper weighs them: RGBA reconstruction (1), identity (1: the VAE's RGB of the adjusted latent stays the RGB
it was given) and a PatchGAN discriminator on the decoded RGBA (0.01), trained in alternation. One term the
paper does not need: a hinge that keeps the offset within a budget of the latent's own spread, zero inside it,
for decoders too insensitive for the identity loss to hold the offset small.
Harmlessness, the paper's measure of how little the offset disturbs the latent: the PSNR between the VAE's
decode of the adjusted latent and of the unadjusted one.

The skeleton (torchrun, schedule, saved state and resume, progress) is common/training; the host side (the
VAE's posterior and differentiable decode) comes in through `FrozenVAE`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import nn

from ._common import training
from .discriminator import PatchDiscriminator, hinge_losses
from .rgba_dataset import RGBAFolder
from .transparent_codec import CodecLayout, encoder_inputs
from .transparent_vae import TransparencyEncoder, TransparentDecoder

distributed, loop = training.distributed, training.loop
TERMS = ("reconstruction", "identity", "offset", "adversarial", "discriminator")


class FrozenVAE(Protocol):
    """The host's VAE as the trainer uses it: weights frozen, latents in the host's LATENT units."""

    device: torch.device

    def posterior(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation [B,C,h,w] of the latent posterior of RGB [B,3,H,W] in [0,1]."""

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """RGB [B,3,H,W] in [0,1], differentiable with respect to `latent`."""


@dataclass(frozen=True)
class CodecTrainConfig:
    steps: int = 5000
    batch_size: int = 8
    learning_rate: float = 1e-4
    seed: int = 0
    init: str = "none"  # "published": start from the published codec of the latent space
    reconstruction_weight: float = 1.0
    identity_weight: float = 1.0
    discriminator_weight: float = 0.01
    # Steps of reconstruction and identity alone before the discriminator joins (as autoencoder GANs are
    # trained): from the start, it slowed or stopped alpha's way into the latent (held-out alpha error on a
    # random Wan 2.1 VAE after 300 steps: 0.58 of a constant guess's with it from step 0, 0.44 from step 200,
    # 0.40 without it; some runs from step 0 collapsed, the discriminator winning outright, at 1.0).
    discriminator_start: int = 1000
    # The offset's budget, in units of the latent's own spread (RMS about each channel's mean), and the weight of
    # the hinge on any excess. Inside the budget the term is zero and the method is as the paper has it.
    # It matters where the VAE's decoder barely answers the offset, so that the identity loss cannot hold it
    # small: on a random FLUX.1 `ae` the offsets grew to about 400 times the latent's spread (harmlessness still
    # 12.8 dB against the VAE's own 12.5 dB), latents no diffusion model could learn to make.
    offset_budget: float = 1.0
    offset_weight: float = 1.0
    save_every: int = 250


@dataclass
class Validation:
    """The codec on held-out images, one pass each (no test-time augmentation)."""

    alpha_error: float  # mean absolute alpha error
    constant_alpha_error: float  # the same for the best constant guess (the median alpha)
    harmlessness_psnr: float  # dB, VAE decode of the adjusted latent against the unadjusted one
    identity_psnr: float  # dB, VAE decode of the adjusted latent against the RGB the VAE was given
    vae_psnr: float  # dB, the VAE's own decode of the unadjusted latent against that RGB: its reconstruction
    offset_ratio: float  # RMS of the offset against the latent's own spread: what a diffusion model must learn
    previews: torch.Tensor  # straight RGBA [N,4,R,R] as decoded

    def metrics(self) -> dict[str, float]:
        return {"alpha_error": self.alpha_error, "constant_alpha_error": self.constant_alpha_error,
                "harmlessness_psnr": self.harmlessness_psnr, "identity_psnr": self.identity_psnr,
                "vae_psnr": self.vae_psnr, "offset_ratio": self.offset_ratio}


@dataclass
class CodecReport:
    run: loop.TrainReport
    terms: list[dict[str, float]]  # per step: each loss term's global-batch mean
    offset_scale: float
    validation: Validation | None = None

    def recent(self, count: int = 50) -> dict[str, float]:
        """Each loss term's mean over the last `count` steps."""
        window = self.terms[-count:]
        return {term: sum(t[term] for t in window) / len(window) for term in TERMS} if window else {}


class CodecPair(nn.Module):
    """Encoder and decoder as one module (one DistributedDataParallel), with the frozen VAE between them."""

    def __init__(self, encoder: TransparencyEncoder, decoder: TransparentDecoder) -> None:
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    def forward(self, encoder_input: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, offset_scale: float,
                vae: FrozenVAE) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(decoded RGBA as the decoder gives it: alpha first, the VAE's RGB, the adjusted latent)."""
        latent = mean + std * self.encoder(encoder_input) * offset_scale
        rgb = vae.decode(latent)
        return self.decoder(rgb, latent), rgb, latent


def new_codec(layout: CodecLayout, seed: int, initial: tuple[dict, dict] | None = None) -> CodecPair:
    """The codec to train, the same in every process: seeded, or loaded from (encoder, decoder) state dicts.
    From scratch, the encoder's last convolution starts at zero, as the method has it: the adjusted latent
    starts as the VAE's own. The decoder's latent input keeps its random start (the published decoder zeroes
    it to begin as a plain image decoder, but a new one has nothing to keep): with both at zero, neither gets a
    gradient through the other and alpha is slow to find its way into the latent. Measured on a random Wan 2.1
    VAE, 150 steps without the discriminator: held-out alpha error 1.01 of a constant guess's with both
    zeroed, 0.78 with the decoder's input random; with the discriminator, runs vary more (0.53-0.80) than
    the two starts differ."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        pair = CodecPair(layout.encoder(), layout.decoder())
    if initial is not None:
        pair.encoder.load_state_dict(initial[0], strict=True)
        pair.decoder.load_state_dict(initial[1], strict=True)
    else:
        nn.init.zeros_(pair.encoder.blocks[-1].weight)
        nn.init.zeros_(pair.encoder.blocks[-1].bias)
    return pair


def measured_offset_scale(std: torch.Tensor) -> float:
    """For a codec trained from scratch: one unit of the encoder's output moves the latent by about one latent
    unit, whatever the VAE's posterior width (1 / the RMS of its std, to 2 significant digits)."""
    rms = float(std.float().pow(2).mean().sqrt())
    scale = 1.0 / max(rms, 1e-12)
    return float(f"{scale:.2g}")


def latent_spread(latents: torch.Tensor) -> float:
    """The latents' RMS about each channel's mean [B,C,...]: the scale an offset is measured against."""
    channels_last = latents.float().transpose(0, 1).flatten(1)
    return max(float((channels_last - channels_last.mean(dim=1, keepdim=True)).pow(2).mean().sqrt()), 1e-12)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float((a.clamp(0, 1) - b.clamp(0, 1)).pow(2).mean())
    return 10.0 * math.log10(1.0 / max(mse, 1e-10))


def codec_inputs(rgba: torch.Tensor, layout: CodecLayout) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(RGB the VAE sees: composited on grey, the encoder's input, the decoder's target: alpha, filled RGB), as
    Layer Diffuse Encode prepares them."""
    alpha = rgba[:, 3:]
    vae_rgb, encoder_input = encoder_inputs(rgba[:, :3], alpha, layout)
    filled = encoder_input[:, 1:] if layout.alpha_first else encoder_input[:, :3]
    return vae_rgb, encoder_input, torch.cat([alpha, filled], dim=1)


def discriminator_view(decoded: torch.Tensor) -> torch.Tensor:
    """What the discriminator judges: premultiplied RGB and alpha (colour under transparency is no evidence)."""
    alpha = decoded[:, :1].clamp(0, 1)
    return torch.cat([decoded[:, 1:4] * alpha, alpha], dim=1)


@dataclass
class _History:
    """Per-step loss terms, saved with the run's state so a resumed run's plot is whole."""

    terms: list[dict[str, float]] = field(default_factory=list)
    offset_scale: float = 0.0
    latent_spread: float = 0.0  # the VAE's latents' RMS about each channel's mean, on the first global batch

    def state_dict(self) -> dict:
        return {"terms": [[t[name] for name in TERMS] for t in self.terms], "offset_scale": self.offset_scale,
                "latent_spread": self.latent_spread}

    def load_state_dict(self, state: dict) -> None:
        self.terms = [dict(zip(TERMS, values, strict=True)) for values in state["terms"]]
        self.offset_scale = float(state["offset_scale"])
        self.latent_spread = float(state["latent_spread"])


@dataclass
class CodecFit:
    """The codec's side of a run: models, optimisers, and what one step computes."""

    vae: FrozenVAE
    dataset: RGBAFolder
    config: CodecTrainConfig
    layout: CodecLayout
    processes: distributed.Processes
    pair: CodecPair
    discriminator: PatchDiscriminator
    optimizer: torch.optim.Optimizer
    discriminator_optimizer: torch.optim.Optimizer
    schedule: training.BatchSchedule
    history: _History = field(default_factory=_History)
    model: nn.Module | None = None  # the pair, under DistributedDataParallel when launched by torchrun
    judge: nn.Module | None = None  # the discriminator likewise

    @classmethod
    def start(cls, vae: FrozenVAE, dataset: RGBAFolder, config: CodecTrainConfig, layout: CodecLayout,
              processes: distributed.Processes, initial: tuple[dict, dict] | None = None) -> CodecFit:
        pair = new_codec(layout, config.seed, initial).to(vae.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed + 1)
            discriminator = PatchDiscriminator().to(vae.device)
        optimizer = torch.optim.AdamW(pair.parameters(), lr=config.learning_rate, weight_decay=0.0)
        judge_optimizer = torch.optim.AdamW(discriminator.parameters(), lr=config.learning_rate, betas=(0.5, 0.9),
                                            weight_decay=0.0)
        schedule = training.BatchSchedule(len(dataset), config.batch_size, config.seed)
        return cls(vae, dataset, config, layout, processes, pair, discriminator, optimizer, judge_optimizer,
                   schedule, _History(offset_scale=layout.offset_scale))

    def parts(self) -> dict[str, loop.Stateful]:
        return {"codec": self.pair, "optimizer": self.optimizer, "discriminator": self.discriminator,
                "discriminator_optimizer": self.discriminator_optimizer, "history": self.history}

    def wrap(self) -> None:
        """After resume: the modules under DistributedDataParallel when launched."""
        self.model = distributed.data_parallel(self.pair, self.processes, self.vae.device)
        self.judge = distributed.data_parallel(self.discriminator, self.processes, self.vae.device)

    def batch(self, step: int) -> torch.Tensor:
        """This process's part of step `step`'s global batch: straight RGBA [n,4,R,R] on the device."""
        share = self.schedule.share(step, self.processes.rank, self.processes.world_size)
        images = [self.dataset.crop(index, self.schedule.generator(step, position)) for position, index in share]
        return torch.cat(images).to(self.vae.device)

    def step(self, step: int) -> float:
        """One codec step and one discriminator step on the global batch; returns the codec's weighted loss."""
        config, rgba = self.config, self.batch(step)
        vae_rgb, encoder_input, target = codec_inputs(rgba, self.layout)
        with torch.no_grad():
            mean, std = self.vae.posterior(vae_rgb)
        self.model.train()
        decoded, rgb, latent = self.model(encoder_input, mean, std, self.history.offset_scale, self.vae)
        zeros = decoded.new_zeros(decoded.shape[0])
        per_sample = {
            "reconstruction": (decoded - target).abs().mean(dim=(1, 2, 3)),
            "identity": (rgb - vae_rgb).pow(2).mean(dim=(1, 2, 3)),
            "offset": self._offset_excess(latent - mean),
            "adversarial": self._adversarial(decoded) if self._discriminating(step) else zeros,
        }
        total = (config.reconstruction_weight * per_sample["reconstruction"]
                 + config.identity_weight * per_sample["identity"]
                 + config.offset_weight * per_sample["offset"]
                 + config.discriminator_weight * per_sample["adversarial"])
        self.optimizer.zero_grad(set_to_none=True)
        self._global_mean(total).backward()
        self.optimizer.step()
        per_sample["discriminator"] = (self._discriminator_step(discriminator_view(target),
                                                                discriminator_view(decoded.detach()))
                                       if self._discriminating(step) else zeros)
        sums = torch.stack([per_sample[term].detach().sum() for term in TERMS] + [total.detach().sum()])
        means = (distributed.sum_over_processes(sums, self.processes) / config.batch_size).tolist()
        self.history.terms.append(dict(zip(TERMS, means[:-1], strict=True)))
        return means[-1]

    def _global_mean(self, per_sample: torch.Tensor) -> torch.Tensor:
        # DistributedDataParallel averages the processes' gradients: scale so the average is the global mean.
        return per_sample.sum() * (self.processes.world_size / self.config.batch_size)

    def _offset_excess(self, offset: torch.Tensor) -> torch.Tensor:
        """Per sample: the excess of the offset's RMS over the budget, in latent spreads. Linear, not squared: an
        offset far over budget would otherwise give gradients that swamp Adam's second moments for thousands of
        steps (measured: with a squared hinge the offset collapsed to 0.02 of the spread and alpha went
        unlearnt, 0.90 of a constant guess's error)."""
        # the epsilon keeps sqrt's gradient finite at the encoder's zero start (0 times infinity is NaN)
        mean_square = offset.float().pow(2).mean(dim=tuple(range(1, offset.ndim)))
        ratio = (mean_square + 1e-12).sqrt() / self.history.latent_spread
        return (ratio - self.config.offset_budget).clamp(min=0)

    def _discriminating(self, step: int) -> bool:
        """Whether the discriminator takes part in step `step` (every process decides alike)."""
        return self.config.discriminator_weight > 0 and step >= self.config.discriminator_start

    def _adversarial(self, decoded: torch.Tensor) -> torch.Tensor:
        """The generator's hinge term, through the plain discriminator with its weights frozen (the judge's
        DistributedDataParallel must see gradients only in its own step)."""
        self.discriminator.requires_grad_(False)
        try:
            return -self.discriminator(discriminator_view(decoded)).mean(dim=(1, 2, 3))
        finally:
            self.discriminator.requires_grad_(True)

    def _discriminator_step(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        self.judge.train()
        scores = self.judge(torch.cat([real, fake]))
        per_sample = hinge_losses(scores[: real.shape[0]], scores[real.shape[0]:])
        self.discriminator_optimizer.zero_grad(set_to_none=True)
        self._global_mean(per_sample).backward()
        self.discriminator_optimizer.step()
        return per_sample.detach()

    @torch.no_grad()
    def validate(self, batch_size: int = 4) -> Validation | None:
        """The codec on the held-out images (None when the folder had too few to hold any out)."""
        if not self.dataset.validation:
            return None
        self.pair.eval()
        alphas, predicted, adjusted, plain, given, offsets, means = [], [], [], [], [], [], []
        paths = self.dataset.validation
        for start in range(0, len(paths), batch_size):
            rgba = torch.cat([self.dataset.centre(p) for p in paths[start:start + batch_size]]).to(self.vae.device)
            vae_rgb, encoder_input, _ = codec_inputs(rgba, self.layout)
            mean, std = self.vae.posterior(vae_rgb)
            decoded, rgb, latent = self.pair(encoder_input, mean, std, self.history.offset_scale, self.vae)
            offsets.append((latent - mean).float().cpu())
            means.append(mean.float().cpu())
            alphas.append(rgba[:, 3:].cpu())
            predicted.append(decoded.clamp(0, 1).cpu())
            adjusted.append(rgb.cpu())
            plain.append(self.vae.decode(mean).cpu())
            given.append(vae_rgb.cpu())
        alpha, decoded = torch.cat(alphas), torch.cat(predicted)
        adjusted_rgb, plain_rgb, given_rgb = torch.cat(adjusted), torch.cat(plain), torch.cat(given)
        return Validation(
            alpha_error=float((decoded[:, :1] - alpha).abs().mean()),
            constant_alpha_error=float((alpha - alpha.median()).abs().mean()),
            harmlessness_psnr=psnr(adjusted_rgb, plain_rgb),
            identity_psnr=psnr(adjusted_rgb, given_rgb),
            vae_psnr=psnr(plain_rgb, given_rgb),
            offset_ratio=float(torch.cat(offsets).pow(2).mean().sqrt()) / latent_spread(torch.cat(means)),
            previews=torch.cat([decoded[:, 1:4], decoded[:, :1]], dim=1),
        )

    def measure_latents(self) -> None:
        """On the first global batch (rank 0's, shared): the latent's spread, and for a codec from scratch its
        offset scale (a published codec keeps its own)."""
        measured = None
        if self.processes.is_main:
            images = [self.dataset.crop(index, self.schedule.generator(0, position))
                      for position, index in enumerate(self.schedule.images(0))]
            vae_rgb, _, _ = codec_inputs(torch.cat(images).to(self.vae.device), self.layout)
            with torch.no_grad():
                mean, std = self.vae.posterior(vae_rgb)
            measured = (measured_offset_scale(std), latent_spread(mean))
        scale, self.history.latent_spread = distributed.from_main(measured, self.processes)
        if self.config.init != "published":
            self.history.offset_scale = scale


def check_config(config: CodecTrainConfig, processes: distributed.Processes) -> None:
    loop.check_run(config.steps, config.batch_size, config.save_every, processes)
    if not 0.0 < config.learning_rate < 1.0:
        raise ValueError(f"learning rate {config.learning_rate} is out of range (1e-4 from scratch, 1e-5 to fine-tune)")
    if config.init not in ("none", "published"):
        raise ValueError(f"init must be 'none' or 'published', got {config.init!r}")
    weights = (config.reconstruction_weight, config.identity_weight, config.offset_weight,
               config.discriminator_weight)
    if config.discriminator_start < 0:
        raise ValueError(f"discriminator start must be a step number (0 or more), got {config.discriminator_start}")
    if config.offset_budget <= 0:
        raise ValueError(f"the offset budget must be above 0 (in latent spreads; 1 is the default), got "
                         f"{config.offset_budget}")
    if min(weights) < 0:
        raise ValueError(f"loss weights must not be negative, got {weights}")
