"""The guidance step: loss against the sketch, its gradient w.r.t. the noisy latent, the normalised step.

At a guided step the sampler's own step z_t -> z_{t-1} is followed by
    z_{t-1} <- z_{t-1} - beta * ||z_t - z_{t-1}|| / ||g|| * g,   g = dL/dz_t,  L = ||P(F(z_t)) - E(sketch)||^2
so the guidance moves the latent by beta times the sampler's own step, whatever the loss's scale.
Samplers that step from the denoised estimate d along (x - d) (Euler: x_next = x + (s_next - s)/s * (x - d))
take exactly that step when d is replaced by d - beta * ||x - d|| / ||g|| * g, which is what
`guided_denoised` returns; other samplers take it to first order. Norms are per sample.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from ._common import inference_tensors

DEFAULT_STRENGTH = 1.6  # beta in the paper
DEFAULT_END_PERCENT = 0.5  # guided for the first half of sampling
MAX_STRENGTH = 10.0

# In common/ since layer_model's host VAE needs them too; still reachable from here.
normal_tensor_views = inference_tensors.normal_tensor_views
InferenceTensorsAsNormal = inference_tensors.InferenceTensorsAsNormal


def edge_loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample squared distance, summed over channels and averaged over pixels: [B]."""
    return (predicted - target.to(predicted)).pow(2).sum(dim=1).mean(dim=(1, 2))


def noise_level(x: torch.Tensor, denoised: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The noise part of the VP latent z_t (sqrt(1 - alpha_bar) * eps) from sigma-space x and its denoised estimate."""
    sigma = sigma.reshape(-1, *([1] * (x.ndim - 1))).to(x)
    return (x - denoised) / torch.sqrt(1.0 + sigma**2)


def guided_denoised(x: torch.Tensor, denoised: torch.Tensor, grad: torch.Tensor, strength: float) -> torch.Tensor:
    """The denoised estimate moved against `grad` by `strength` times the sampler's step size, per sample."""
    step = (x - denoised).flatten(1).norm(dim=1)
    grad_norm = grad.flatten(1).norm(dim=1)
    scale = torch.where(grad_norm > 0, strength * step / grad_norm.clamp_min(1e-20), torch.zeros_like(step))
    return denoised - scale.reshape(-1, *([1] * (x.ndim - 1))).to(grad) * grad


def check_strength(strength: float) -> None:
    if not 0.0 <= strength <= MAX_STRENGTH or math.isnan(strength):
        raise ValueError(f"Sketch guidance strength {strength} is out of range: use 0 to {MAX_STRENGTH:g} "
                         f"(the paper uses {DEFAULT_STRENGTH}; higher follows the sketch more, at some cost "
                         "in realism).")


@dataclass
class GuidanceState:
    """What one guided step hands from the model call (gradient) to the sampler's CFG result (the step)."""

    strength: float
    sigma_end: float  # guided while sigma >= sigma_end
    sigma: float | None = None
    grad: torch.Tensor | None = None  # [B, C, h, w], zeros for samples with no conditional rows
    losses: list[float] = field(default_factory=list)  # per guided step, the batch mean (for reports)
    resized: bool = False  # the sketch did not match the latent grid (said once)
    stepped: float | None = None  # the sigma whose step has taken its gradient

    def __deepcopy__(self, memo: dict) -> GuidanceState:
        """The same state: the model call records into it and the sampler's step reads from it, so a MODEL
        clone that deep-copies its options (ComfyUI 0.3.x does) must keep one state for both."""
        return self

    def active(self, sigma: float) -> bool:
        """Whether a model call at `sigma` is guided: in range, and not an extra call made after this
        sigma's step took its gradient (other packs' post-CFG functions, such as PAG's, call the model
        again at the same sigma)."""
        stepped = self.stepped is not None and math.isclose(self.stepped, sigma, rel_tol=1e-6)
        return self.strength > 0 and sigma >= self.sigma_end and not stepped

    def add_gradient(self, sigma: float, samples: torch.Tensor, grad: torch.Tensor, batch: int) -> None:
        """Accumulate `grad` rows for `samples` (indices into the batch) at this sigma."""
        if self.sigma is None or not math.isclose(self.sigma, sigma, rel_tol=1e-6) or self.grad is None \
                or self.grad.shape[0] != batch or self.grad.shape[1:] != grad.shape[1:]:
            self.sigma = sigma
            self.grad = torch.zeros((batch, *grad.shape[1:]), dtype=grad.dtype, device=grad.device)
        self.grad.index_add_(0, samples.to(grad.device), grad)

    def take_gradient(self, sigma: float, like: torch.Tensor) -> torch.Tensor | None:
        """The gradient recorded at this sigma for a batch shaped like `like`, once."""
        grad, self.grad, self.stepped = self.grad, None, sigma
        if grad is None or self.sigma is None or not math.isclose(self.sigma, sigma, rel_tol=1e-6):
            return None
        if grad.shape != like.shape:
            return None
        return grad.to(like)


@contextmanager
def snapshots_of_outputs(modules: list[nn.Module]) -> Iterator[None]:
    """Within the block, when autograd saves one of these modules' outputs (or a view of it) for the backward
    pass, it saves a copy taken at that moment.

    The host adds ControlNet residuals to the UNet's skip connections in place, after the next block has
    already saved them for backward; without a snapshot the backward pass would refuse the changed tensor.
    Only these outputs are copied, and only when saved.
    """
    watched: set[int] = set()

    def remember(_module, _inputs, output) -> None:
        if isinstance(output, torch.Tensor):
            watched.add(output.untyped_storage().data_ptr())

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        # Detached: a saved tensor that kept its grad_fn would reference its own graph from inside it, a
        # cycle that Python's garbage collector cannot see, and every guided call's graph would stay in memory.
        if tensor.untyped_storage().data_ptr() in watched:
            return tensor.detach().clone()
        return tensor.detach()

    handles = [module.register_forward_hook(remember) for module in modules]
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            yield
    finally:
        for handle in handles:
            handle.remove()
