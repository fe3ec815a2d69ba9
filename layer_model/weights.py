"""The one registry of published LayerDiffusion weight files: find them, download them, verify them.

Every node asks here. Files live in the host's `layer_model` model folder(s); a missing file is
downloaded from a pinned revision into a temporary file, checked against its SHA-256 and only then
renamed into place, so no partial or unverified file is ever left where a loader would pick it up.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import safetensors.torch
import torch

from ._common import families, files

REPOSITORY = "LayerDiffusion/layerdiffusion-v1"
REVISION = "e337e9d7a0f2a6fee6c3580374327380f88d065b"
# The FLUX port publishes no revision or hash that could be pinned: its files come from the default branch
# and are checked against the hash the server states for them.
FLUX_REPOSITORY, FLUX_REVISION = "RedAIGC/Flux-version-LayerDiffuse", "main"
# LayerDiffusion's second SDXL set, for diffusers (code: github lllyasviel/LayerDiffuse_DiffusersCLI, Apache-2.0):
# likewise no pinnable revision or published hash; the server's hash is checked.
DIFFUSERS_REPOSITORY, DIFFUSERS_REVISION = "lllyasviel/LayerDiffuse_Diffusers", "main"
DIFFUSERS = "diffusers"  # the weight set of those files; "" is a family's first published set
# RGBA VAEs (the VAE itself widened to 4 image channels), as diffusers saves them. Neither hub repository publishes
# a pinnable revision or hash either: the default branch, checked against the server's hash.
ALPHAVAE_REPOSITORY, ALPHAVAE_REVISION = "o0o0o00o0/AlphaVAE", "main"  # code github o0o0o00o0/AlphaVAE: no licence
FLUX2_ALPHA_REPOSITORY, FLUX2_ALPHA_REVISION = "trmz/flux2-klein-alpha", "main"  # licences per file (`licence`)
RGBA_VAE = "rgba_vae"  # their kind
RGBA_VAE_LORA = "rgba_vae_lora"  # the LoRAs that teach a model the RGBA VAE's latents (lora_A/lora_B pairs)
NON_COMMERCIAL = "FLUX Non-Commercial License"
BASE_URL_ENV = "LAYER_SKETCH_WEIGHTS_URL"  # a mirror (or a test server) serving the same file names
OFFLINE_ENV = "LAYER_SKETCH_OFFLINE"  # "1": never download, report what to fetch by hand
FOLDER_NAME = "layer_model"

SDXL, SD15, FLUX = families.SDXL, families.SD15, families.FLUX  # the registry names each file's family
FLUX2 = "FLUX.2"  # only RGBA VAEs exist for it here

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WeightFile:
    name: str
    base: str  # SDXL, SD1.5, FLUX or FLUX.2
    # decoder, encoder, codec (both), unet_lora, unet_diff, unet_diffusers_diff, attention_sharing, peft_lora, pickle,
    # rgba_vae, rgba_vae_lora
    kind: str
    sha256: str | None  # None where no trusted hash is published: then the server's own hash is checked
    description: str
    repository: str = REPOSITORY
    revision: str = REVISION
    source: str | None = None  # a published pickle this file is converted from, once, on first use
    also_in: tuple[str, ...] = ()  # other host model folders where guides elsewhere tell users to put it
    weight_set: str = ""  # which published set of its family: "" the first (v1, the FLUX port), DIFFUSERS
    remote: str = ""  # its path in the repository where that differs from `name` (diffusers' generic file names)
    licence: str = ""  # as its authors state it, where the README's tables are not the only place it is said

    @property
    def url(self) -> str:
        mirror = os.environ.get(BASE_URL_ENV)
        base = mirror or f"https://huggingface.co/{self.repository}/resolve/{self.revision}"
        return f"{base.rstrip('/')}/{self.remote or self.name}"


REGISTRY: dict[str, WeightFile] = {f.name: f for f in (
    WeightFile("layer_xl_transparent_attn.safetensors", SDXL, "unet_lora",
               "b7919c5b4837fb64f24c97a7abdf1a9c6e8d60de080a5dae089dde098266df95",
               "SDXL transparent foreground, attention injection (rank-256 LoRA)"),
    WeightFile("layer_xl_transparent_conv.safetensors", SDXL, "unet_diff",
               "5ee958d80dcd515fa7ac915274c536fadd3db5d919adeb5ff45107b6169aacc7",
               "SDXL transparent foreground, conv injection"),
    WeightFile("layer_xl_fg2ble.safetensors", SDXL, "unet_diff",
               "50a29851ad56308f14d6c9ed375be17df6921efeca240b31f567f6b8c76d1e70",
               "SDXL foreground -> blended"),
    WeightFile("layer_xl_bg2ble.safetensors", SDXL, "unet_diff",
               "2901d1353cc4ca763c8bedc48453b36e88680605f417c7f7ec730a7c36845d7c",
               "SDXL background -> blended"),
    WeightFile("layer_xl_fgble2bg.safetensors", SDXL, "unet_diff",
               "179a61fdcdb149af1897b2840f24ba09466ab6265b2c792b0e99df557f0439be",
               "SDXL foreground + blended -> background"),
    WeightFile("layer_xl_bgble2fg.safetensors", SDXL, "unet_diff",
               "1688f0c17447f74662686fadd431f24d26a1ba8ffea322c6f56c8b5ed581b78d",
               "SDXL background + blended -> foreground"),
    WeightFile("vae_transparent_decoder.safetensors", SDXL, "decoder",
               "59dc8feefe40d26b6cb7186aed7af70c60d94ac4f9db8ebe7f121a01ba27a2fc",
               "a LayerDiffusion transparent decoder (SDXL)"),
    WeightFile("vae_transparent_encoder.safetensors", SDXL, "encoder", None,
               "a LayerDiffusion transparent encoder (SDXL)"),
    WeightFile("layer_sd15_vae_transparent_decoder.safetensors", SD15, "decoder",
               "6df4712dfbb3783231b22f869a5da5cbfea782ebb05f782bd9e8744bfb0cdf03",
               "a LayerDiffusion transparent decoder (SD1.5)"),
    WeightFile("layer_sd15_vae_transparent_encoder.safetensors", SD15, "encoder", None,
               "a LayerDiffusion transparent encoder (SD1.5)"),
    WeightFile("layer_sd15_transparent_attn.safetensors", SD15, "attention_sharing",
               "cc9ee87452bf1ccdd419035bf9618f6bdcaac1a2d3e23694d62e5a9c721da295",
               "SD1.5 transparent foreground (attention sharing, 1 frame)"),
    WeightFile("layer_sd15_joint.safetensors", SD15, "attention_sharing",
               "2cc81c33c1a786bdc376c6d1bfb43dbdffda2f610f7c6b4ebd776505a29712bd",
               "SD1.5 joint foreground + background + blended (3 frames)"),
    WeightFile("layer_sd15_fg2bg.safetensors", SD15, "attention_sharing",
               "5bade856ec3e55d6ceb0e35bbc97cea7fa4953f7776c8032f2fe52ba740ed580",
               "SD1.5 foreground -> background + blended (2 frames, control)"),
    WeightFile("layer_sd15_bg2fg.safetensors", SD15, "attention_sharing",
               "8367f976da1cc4275e513c7fb40f977ca312e79e720d7db7ae94978a9359fb62",
               "SD1.5 background -> foreground + blended (2 frames, control)"),
    WeightFile("layerlora.safetensors", FLUX, "peft_lora", None, "the FLUX.1-dev transparency LoRA",
               FLUX_REPOSITORY, FLUX_REVISION, also_in=("loras",)),
    WeightFile("TransparentVAE.pth", FLUX, "pickle", None,
               "the FLUX transparent VAE (decoder + offset encoder, pickled)", FLUX_REPOSITORY, FLUX_REVISION,
               also_in=("vae",)),
    WeightFile("TransparentVAE.safetensors", FLUX, "codec", None,
               "the FLUX transparent VAE (decoder + offset encoder)", FLUX_REPOSITORY, FLUX_REVISION,
               source="TransparentVAE.pth"),
    WeightFile("ld_diffusers_sdxl_attn.safetensors", SDXL, "unet_diffusers_diff", None,
               "the SDXL transparency offsets of the diffusers set (dense, diffusers UNet key names)",
               DIFFUSERS_REPOSITORY, DIFFUSERS_REVISION, weight_set=DIFFUSERS),
    WeightFile("ld_diffusers_sdxl_vae_transparent_decoder.safetensors", SDXL, "decoder", None,
               "the transparent decoder of the SDXL diffusers set", DIFFUSERS_REPOSITORY, DIFFUSERS_REVISION,
               weight_set=DIFFUSERS),
    WeightFile("ld_diffusers_sdxl_vae_transparent_encoder.safetensors", SDXL, "encoder", None,
               "the transparent encoder of the SDXL diffusers set", DIFFUSERS_REPOSITORY, DIFFUSERS_REVISION,
               weight_set=DIFFUSERS),
    # Both hold diffusers' `diffusion_pytorch_model.safetensors`; here each gets a name of its own. AlphaVAE's path
    # is the folder its README lays out (`finetune_VAE/`), flux2-klein-alpha's its README's `vae/`.
    WeightFile("alphavae_flux1_rgba_vae.safetensors", FLUX, RGBA_VAE, None,
               "AlphaVAE's RGBA VAE for FLUX.1 (diffusers AutoencoderKL, 4 image channels)", ALPHAVAE_REPOSITORY,
               ALPHAVAE_REVISION, also_in=("vae",), remote="finetune_VAE/diffusion_pytorch_model.safetensors",
               licence="none stated (the repository has no licence file)"),
    WeightFile("flux2_klein_alpha_rgba_vae.safetensors", FLUX2, RGBA_VAE, None,
               "flux2-klein-alpha's RGBA VAE for FLUX.2 (diffusers AutoencoderKLFlux2, 4 image channels)",
               FLUX2_ALPHA_REPOSITORY, FLUX2_ALPHA_REVISION, also_in=("vae",),
               remote="vae/diffusion_pytorch_model.safetensors", licence="Apache-2.0"),
    # Their LoRAs, also found in models/loras (the host's LoRA loaders read them as they are). AlphaVAE's is its
    # README's `finetune_VAE/finetune_diffusion/` file (diffusers' generic name); flux2-klein-alpha's are under
    # `loras/`, Extract-4B with the hash its repository states (training/extract_4b.json, 92,426,712 bytes).
    WeightFile("alphavae_flux1_lora.safetensors", FLUX, RGBA_VAE_LORA, None,
               "AlphaVAE's FLUX.1-dev LoRA (PEFT, rank 64, diffusers keys 'transformer.<module>')",
               ALPHAVAE_REPOSITORY, ALPHAVAE_REVISION, also_in=("loras",),
               remote="finetune_VAE/finetune_diffusion/pytorch_lora_weights.safetensors",
               licence="none stated (the repository has no licence file)"),
    WeightFile("flux2_klein_alpha_extract_4b.safetensors", FLUX2, RGBA_VAE_LORA,
               "72a16786065e780d1f3f13ad5a66501abe12fe5e8c0dec255ec7d10b623e15ca",
               "flux2-klein-alpha's Extract-4B LoRA (FLUX.2 Klein Base 4B, rank 32, 'diffusion_model.<module>')",
               FLUX2_ALPHA_REPOSITORY, FLUX2_ALPHA_REVISION, also_in=("loras",), remote="loras/extract_4b.safetensors",
               licence="Apache-2.0"),
    WeightFile("flux2_klein_alpha_extract_9b.safetensors", FLUX2, RGBA_VAE_LORA, None,
               "flux2-klein-alpha's Extract-9B LoRA (FLUX.2 Klein Base 9B, 'diffusion_model.<module>')",
               FLUX2_ALPHA_REPOSITORY, FLUX2_ALPHA_REVISION, also_in=("loras",), remote="loras/extract_9b.safetensors",
               licence=NON_COMMERCIAL),
    WeightFile("flux2_klein_alpha_remove_9b.safetensors", FLUX2, RGBA_VAE_LORA, None,
               "flux2-klein-alpha's Remove-9B LoRA (FLUX.2 Klein Base 9B, 'diffusion_model.<module>')",
               FLUX2_ALPHA_REPOSITORY, FLUX2_ALPHA_REVISION, also_in=("loras",), remote="loras/remove_9b.safetensors",
               licence=NON_COMMERCIAL),
)}

# The FLUX port ships decoder and encoder in one file, under these key prefixes.
CODEC_PREFIXES = {"decoder": "decoder.", "encoder": "encoder."}


def file_for(base: str, kind: str, weight_set: str = "") -> WeightFile:
    """The single published file of `kind` for `base` in `weight_set` (decoder and encoder have one each)."""
    matches = [f for f in REGISTRY.values() if (f.base, f.kind, f.weight_set) == (base, kind, weight_set)]
    if len(matches) != 1:
        raise KeyError(f"no single {kind} file for {base} {weight_set}: {[f.name for f in matches]}")
    return matches[0]


def codec_file(base: str, kind: str, weight_set: str = "") -> tuple[WeightFile, str]:
    """(file, key prefix) holding the `kind` ('decoder' or 'encoder') of `base`'s transparent VAE in `weight_set`."""
    combined = [f for f in REGISTRY.values() if (f.base, f.kind, f.weight_set) == (base, "codec", weight_set)]
    if combined:
        return combined[0], CODEC_PREFIXES[kind]
    return file_for(base, kind, weight_set), ""


class WeightFileError(RuntimeError):
    """A weight file is missing, could not be fetched, or is not what it should be."""


def sha256_of(path: str, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def find_local(weight: WeightFile, folders: Sequence[str]) -> str | None:
    for folder in folders:
        path = os.path.join(folder, weight.name)
        if os.path.isfile(path):
            return path
    return None


Progress = Callable[[int, int | None], None]  # (bytes so far, total bytes or None)


def _fetch_by_hand_hint(weight: WeightFile, folder: str) -> str:
    return f"Download {weight.url} by hand and put it in {folder} (as {weight.name}), then run the graph again."


def download(weight: WeightFile, folder: str, progress: Progress | None = None, timeout: float = 30.0) -> str:
    """Fetch `weight` into `folder` through a temporary file; return the final path once verified."""
    if os.environ.get(OFFLINE_ENV) == "1":
        raise WeightFileError(
            f"{weight.name} ({weight.description}) is not in {folder} and downloads are switched off "
            f"({OFFLINE_ENV}=1). {_fetch_by_hand_hint(weight, folder)}"
        )
    os.makedirs(folder, exist_ok=True)
    final_path = os.path.join(folder, weight.name)
    log.info("Downloading %s (%s) from %s into %s", weight.name, weight.description, weight.url, folder)
    with files.atomic_file(final_path) as out:
        server_sha = _stream(weight, out, progress, timeout, folder)
        out.flush()
        _verify(weight, out.name, server_sha)  # a mismatch raises, and the helper deletes the file
    return final_path


def _stream(weight: WeightFile, out, progress: Progress | None, timeout: float, folder: str) -> str | None:
    """Copy the response body into `out`; return the SHA-256 the server states for it, if any."""
    request = urllib.request.Request(weight.url, headers={"User-Agent": "comfyui-layer-sketch"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            total = response.headers.get("Content-Length")
            total = int(total) if total and total.isdigit() else None
            done = 0
            while block := response.read(1 << 20):
                out.write(block)
                done += len(block)
                if progress is not None:
                    progress(done, total)
            if total is not None and done != total:
                raise WeightFileError(
                    f"Download of {weight.name} stopped after {done} of {total} bytes; nothing was kept. "
                    f"Run the graph again to retry, or: {_fetch_by_hand_hint(weight, folder)}"
                )
            return _server_sha256(response.headers)
    except WeightFileError:
        raise
    except urllib.error.HTTPError as err:
        raise WeightFileError(
            f"Could not download {weight.name}: the server answered HTTP {err.code} for {weight.url}. "
            f"{_fetch_by_hand_hint(weight, folder)}"
        ) from err
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        reason = getattr(err, "reason", err)
        raise WeightFileError(
            f"{weight.name} is not in {folder} and could not be downloaded from {weight.url} ({reason}). "
            f"{_fetch_by_hand_hint(weight, folder)}"
        ) from err


def _server_sha256(headers) -> str | None:
    """Hash servers state for large files (X-Linked-Etag, ETag), when it has the form of a SHA-256."""
    for key in ("X-Linked-Etag", "ETag"):
        value = (headers.get(key) or "").strip().strip('"').removeprefix("W/").strip('"')
        if re.fullmatch(r"[0-9a-f]{64}", value):
            return value
    return None


def _verify(weight: WeightFile, path: str, server_sha: str | None) -> None:
    expected = weight.sha256 or server_sha
    actual = sha256_of(path)
    if expected is not None and actual != expected:
        raise WeightFileError(
            f"Downloaded {weight.name} has SHA-256 {actual}, expected {expected}: the file was deleted. "
            "The download was corrupted or the server sent another file; run the graph again to retry."
        )


Convert = Callable[[str, str], None]  # (published pickle, safetensors file to write)


def ensure(weight: WeightFile, folders: Sequence[str], progress: Progress | None = None,
           convert: Convert | None = None, elsewhere: Sequence[str] = ()) -> str:
    """Path of `weight` in the first folder that has it (`folders`, then `elsewhere`), downloading it into the
    first folder if none does.

    A file converted from a published pickle is made once from that pickle (found in `folders` or
    `elsewhere`, or downloaded) by `convert`, beside it when it lies in `folders`, else in the first folder.
    """
    if not folders:
        raise WeightFileError(f"No '{FOLDER_NAME}' model folder is configured to hold {weight.name}.")
    found = find_local(weight, [*folders, *elsewhere])
    if found or weight.source is None:
        return found or download(weight, folders[0], progress)
    if convert is None:
        raise WeightFileError(f"{weight.name} is made from {weight.source}, but no converter was given.")
    source = REGISTRY[weight.source]
    source_path = find_local(source, [*folders, *elsewhere]) or download(source, folders[0], progress)
    source_folder = os.path.dirname(source_path)
    target_folder = source_folder if source_folder in folders else folders[0]
    target = os.path.join(target_folder, weight.name)
    log.info("Converting %s to %s (once)", source_path, target)
    convert(source_path, target)
    return target


def load_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Read a safetensors file, turning a broken file into an error that says what to do."""
    if not path.endswith(".safetensors"):
        raise WeightFileError(f"{path}: only .safetensors weight files are loaded (pickled files are unsafe).")
    try:
        return safetensors.torch.load_file(path, device="cpu")
    except Exception as err:  # safetensors raises its own error types for truncated/corrupt headers
        raise WeightFileError(
            f"{path} is not a readable safetensors file ({err}). It is probably truncated or corrupt: "
            "delete it and run the graph again to download it afresh."
        ) from err
