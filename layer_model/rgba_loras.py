"""The LoRAs published with the RGBA VAEs: which model each was trained on (pure data).

AlphaVAE's (github o0o0o00o0/AlphaVAE, train/train_diffusion_lora.py) is a PEFT LoRA, rank 64 with alpha 64, on
FLUX.1-dev's double blocks (attn.to_q/k/v/out.0, add_q/k/v_proj, to_add_out, ff and ff_context net.0.proj and
net.2) and, by PEFT's suffix match, the single blocks' attn.to_q/k/v; diffusers saves it under `transformer.`.
flux2-klein-alpha's (github TR-MZ/flux2-klein-alpha, demo/app.py) are ai-toolkit LoRAs under
`diffusion_model.<BFL module>` without alpha tensors, applied at scale 1 (alpha = rank); Extract-4B is rank 32
on the 80 attention and MLP linears of FLUX.2 Klein Base 4B (qkv, proj, mlp.0, mlp.2 of both streams in its 5
double blocks, linear1 and linear2 in its 20 single blocks).
Both scales are 1, which is what the host applies to a pair without an alpha tensor.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RGBAVAELoRA:
    file: str  # its name in the weight registry
    model: str  # the model it was trained on, as its authors name it
    hidden_size: int  # that transformer's width: no other width can take the LoRA


RGBA_VAE_LORAS = {lora.file: lora for lora in (
    RGBAVAELoRA("alphavae_flux1_lora.safetensors", "FLUX.1-dev", 3072),
    RGBAVAELoRA("flux2_klein_alpha_extract_4b.safetensors", "FLUX.2 Klein Base 4B", 3072),
    RGBAVAELoRA("flux2_klein_alpha_extract_9b.safetensors", "FLUX.2 Klein Base 9B", 4096),
    RGBAVAELoRA("flux2_klein_alpha_remove_9b.safetensors", "FLUX.2 Klein Base 9B", 4096),
)}
