"""The weight registry and the download path, against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from comfyui_layer_sketch.layer_model import weights
from comfyui_layer_sketch.layer_model.weights import WeightFile, WeightFileError
from support.payload_server import PAYLOAD, PAYLOAD_SHA, payload_server


@pytest.fixture(scope="module")
def server_url():
    with payload_server() as base:
        yield f"{base}/weights"


def _file(name: str, sha: str | None = PAYLOAD_SHA) -> WeightFile:
    return WeightFile(name, weights.SD15, "decoder", sha, "test payload")


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# Every file the three repositories publish (LayerDiffusion/layerdiffusion-v1, RedAIGC/Flux-version-LayerDiffuse,
# lllyasviel/LayerDiffuse_Diffusers: the names its CLI downloads).
PUBLISHED = {f"layer_xl_{name}.safetensors" for name in ("transparent_attn", "transparent_conv", "fg2ble", "bg2ble",
                                                          "fgble2bg", "bgble2fg")} | \
            {f"layer_sd15_{name}.safetensors" for name in ("vae_transparent_decoder", "vae_transparent_encoder",
                                                            "transparent_attn", "joint", "fg2bg", "bg2fg")} | \
            {"vae_transparent_decoder.safetensors", "vae_transparent_encoder.safetensors", "layerlora.safetensors",
             "TransparentVAE.pth"}
DIFFUSERS_SET = {f"ld_diffusers_sdxl_{name}.safetensors" for name in ("attn", "vae_transparent_encoder",
                                                                       "vae_transparent_decoder")}
# RGBA VAEs: local name -> the file's path in its hub repository (both diffusers' generic name)
RGBA_VAES = {"alphavae_flux1_rgba_vae.safetensors": "o0o0o00o0/AlphaVAE/resolve/main/finetune_VAE/",
             "flux2_klein_alpha_rgba_vae.safetensors": "trmz/flux2-klein-alpha/resolve/main/vae/"}
# ... and their LoRAs: local name -> the file's URL in its hub repository
RGBA_VAE_LORAS = {
    "alphavae_flux1_lora.safetensors":
        "o0o0o00o0/AlphaVAE/resolve/main/finetune_VAE/finetune_diffusion/pytorch_lora_weights.safetensors",
    **{f"flux2_klein_alpha_{task}.safetensors": f"trmz/flux2-klein-alpha/resolve/main/loras/{task}.safetensors"
       for task in ("extract_4b", "extract_9b", "remove_9b")}}


def test_registry_covers_every_published_file_with_pinned_hashes(monkeypatch):
    monkeypatch.delenv(weights.BASE_URL_ENV, raising=False)
    # ... and the pack's own conversion of the FLUX port's pickled TransparentVAE.pth
    assert set(weights.REGISTRY) == PUBLISHED | DIFFUSERS_SET | {"TransparentVAE.safetensors"} | set(RGBA_VAES) \
        | set(RGBA_VAE_LORAS)
    for entry in weights.REGISTRY.values():
        assert entry.base in (weights.SDXL, weights.SD15, weights.FLUX, weights.FLUX2)
        assert entry.name.endswith(".safetensors") or entry.kind == "pickle"
        assert entry.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", entry.sha256)
        if entry.kind == weights.RGBA_VAE:
            assert entry.url == f"https://huggingface.co/{RGBA_VAES[entry.name]}diffusion_pytorch_model.safetensors"
            assert entry.also_in == ("vae",)
            continue
        if entry.kind == weights.RGBA_VAE_LORA:
            assert entry.url == f"https://huggingface.co/{RGBA_VAE_LORAS[entry.name]}"
            assert entry.also_in == ("loras",) and entry.licence
            continue
        pinned = {weights.REPOSITORY: weights.REVISION, weights.FLUX_REPOSITORY: weights.FLUX_REVISION,
                  weights.DIFFUSERS_REPOSITORY: weights.DIFFUSERS_REVISION}[entry.repository]
        assert (entry.repository == weights.DIFFUSERS_REPOSITORY) == (entry.weight_set == weights.DIFFUSERS)
        assert entry.url == f"https://huggingface.co/{entry.repository}/resolve/{pinned}/{entry.name}"
    unhashed = {n for n, e in weights.REGISTRY.items() if e.sha256 is None}
    assert unhashed == {"vae_transparent_encoder.safetensors", "layer_sd15_vae_transparent_encoder.safetensors",
                        "layerlora.safetensors", "TransparentVAE.pth", "TransparentVAE.safetensors"} | DIFFUSERS_SET \
        | set(RGBA_VAES) | set(RGBA_VAE_LORAS) - {"flux2_klein_alpha_extract_4b.safetensors"}  # its repository's
    assert weights.REGISTRY["flux2_klein_alpha_rgba_vae.safetensors"].base == weights.FLUX2
    assert weights.file_for(weights.SD15, "decoder").name == "layer_sd15_vae_transparent_decoder.safetensors"
    assert weights.file_for(weights.SDXL, "encoder").name == "vae_transparent_encoder.safetensors"
    assert weights.codec_file(weights.FLUX, "decoder") == (weights.REGISTRY["TransparentVAE.safetensors"], "decoder.")
    assert weights.codec_file(weights.SDXL, "decoder") == (weights.REGISTRY["vae_transparent_decoder.safetensors"], "")
    for kind in ("decoder", "encoder"):  # the diffusers set's own pair, beside v1's
        name = f"ld_diffusers_sdxl_vae_transparent_{kind}.safetensors"
        assert weights.codec_file(weights.SDXL, kind, weights.DIFFUSERS) == (weights.REGISTRY[name], "")
    assert weights.REGISTRY["ld_diffusers_sdxl_attn.safetensors"].url == (
        "https://huggingface.co/lllyasviel/LayerDiffuse_Diffusers/resolve/main/ld_diffusers_sdxl_attn.safetensors")


def test_download_with_the_right_hash_lands_in_place(server_url, tmp_path, monkeypatch):
    monkeypatch.setenv(weights.BASE_URL_ENV, server_url)
    seen = []
    path = weights.download(_file("good.bin"), str(tmp_path), progress=lambda done, total: seen.append((done, total)))
    assert Path(path).read_bytes() == PAYLOAD
    assert _leftovers(tmp_path) == ["good.bin"]
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD))


def test_wrong_hash_deletes_the_file_and_says_so(server_url, tmp_path, monkeypatch):
    monkeypatch.setenv(weights.BASE_URL_ENV, server_url)
    with pytest.raises(WeightFileError, match="expected " + "1" * 64 + ": the file was deleted"):
        weights.download(_file("good.bin", sha="1" * 64), str(tmp_path))
    assert _leftovers(tmp_path) == []


def test_truncated_download_leaves_nothing(server_url, tmp_path, monkeypatch):
    monkeypatch.setenv(weights.BASE_URL_ENV, server_url)
    with pytest.raises(WeightFileError, match="stopped after"):
        weights.download(_file("truncated.bin"), str(tmp_path))
    assert _leftovers(tmp_path) == []


def test_missing_on_server_names_url_and_folder(server_url, tmp_path, monkeypatch):
    monkeypatch.setenv(weights.BASE_URL_ENV, server_url)
    with pytest.raises(WeightFileError) as err:
        weights.download(_file("absent.bin"), str(tmp_path))
    message = str(err.value)
    assert "HTTP 404" in message and f"{server_url}/absent.bin" in message and str(tmp_path) in message
    assert _leftovers(tmp_path) == []


def test_unreachable_server_names_url_and_folder(tmp_path, monkeypatch):
    import socket
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv(weights.BASE_URL_ENV, f"http://127.0.0.1:{port}")
    with pytest.raises(WeightFileError) as err:
        weights.download(_file("good.bin"), str(tmp_path / "models"))
    message = str(err.value)
    assert "could not be downloaded" in message and f"127.0.0.1:{port}/good.bin" in message
    assert str(tmp_path / "models") in message
    assert _leftovers(tmp_path / "models") == []


def test_offline_switch_never_touches_the_network(tmp_path, monkeypatch):
    monkeypatch.setenv(weights.OFFLINE_ENV, "1")
    monkeypatch.setenv(weights.BASE_URL_ENV, "http://127.0.0.1:9")
    with pytest.raises(WeightFileError, match="downloads are switched off"):
        weights.download(_file("good.bin"), str(tmp_path))


def test_unpinned_file_is_checked_against_the_hash_the_server_states(server_url, tmp_path, monkeypatch):
    monkeypatch.setenv(weights.BASE_URL_ENV, server_url)
    assert Path(weights.download(_file("etag.bin", sha=None), str(tmp_path))).read_bytes() == PAYLOAD
    with pytest.raises(WeightFileError, match="the file was deleted"):
        weights.download(_file("etag-wrong.bin", sha=None), str(tmp_path))
    assert _leftovers(tmp_path) == ["etag.bin"]


def test_ensure_prefers_a_local_copy_in_any_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(weights.BASE_URL_ENV, "http://127.0.0.1:9")
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir(), second.mkdir()
    (second / "good.bin").write_bytes(b"local")
    assert weights.ensure(_file("good.bin"), [str(first), str(second)]) == str(second / "good.bin")


def test_broken_safetensors_file_gets_an_actionable_error(tmp_path):
    import safetensors.torch
    good = tmp_path / "ok.safetensors"
    safetensors.torch.save_file({"w": torch.ones(1000)}, str(good))
    assert torch.equal(weights.load_state_dict(str(good))["w"], torch.ones(1000))
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(good.read_bytes()[:200])
    with pytest.raises(WeightFileError, match="truncated or corrupt: delete it"):
        weights.load_state_dict(str(broken))
    with pytest.raises(WeightFileError, match="only .safetensors"):
        weights.load_state_dict(str(tmp_path / "model.pt"))
