"""The FLUX transparent VAE: the modules match the port's manifest, `TransparentVAE.pth` is read safely and
converted once, broken files are refused clearly, and FLUX latents decode at any size with every TTA count."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import safetensors.torch
import torch
from comfyui_layer_sketch.layer_model import weights
from comfyui_layer_sketch.layer_model.pickled_codec import convert_pickled_codec, expected_shapes
from comfyui_layer_sketch.layer_model.transparent_codec import (
    FLUX_CODEC,
    SD_CODEC,
    decode_rgba,
    decode_rgba_reference,
    encoder_inputs,
)
from comfyui_layer_sketch.layer_model.weights import WeightFileError

MANIFEST = Path(__file__).resolve().parent.parent / "data" / "flux_transparent_vae_state_dict.txt"


def _manifest() -> tuple[dict[str, tuple[int, ...]], int, int]:
    shapes, totals = {}, ()
    for line in MANIFEST.read_text().splitlines():
        if line.startswith("# n_keys"):
            parts = line.split()
            totals = (int(parts[2]), int(parts[4]))
        elif line.strip() and not line.startswith("#"):
            name, shape = line.split(" ", 1)
            shapes[name] = tuple(int(s) for s in shape.strip("(,)").split(",") if s.strip())
    return shapes, *totals


def _state(seed: int = 0, dtype=torch.float16) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    state = {f"decoder.{k}": v.to(dtype) for k, v in FLUX_CODEC.decoder().state_dict().items()}
    return state | {f"encoder.{k}": v.to(dtype) for k, v in FLUX_CODEC.encoder().state_dict().items()}


@pytest.fixture(scope="module")
def published_state() -> dict[str, torch.Tensor]:
    return _state()


def test_decoder_and_encoder_equal_the_port_manifest():
    shapes, n_keys, n_params = _manifest()
    assert (n_keys, n_params) == (556, 105_314_996) and len(shapes) == n_keys
    assert expected_shapes(FLUX_CODEC) == shapes
    modules = (FLUX_CODEC.decoder(), FLUX_CODEC.encoder())
    assert sum(p.numel() for m in modules for p in m.parameters()) == n_params
    assert sum(1 for k in shapes if k.startswith("encoder.")) == 18


def _convert(state: dict, folder: Path) -> dict[str, torch.Tensor]:
    source, target = folder / "TransparentVAE.pth", folder / "TransparentVAE.safetensors"
    torch.save(state, source)
    convert_pickled_codec(str(source), str(target))
    assert sorted(p.name for p in folder.iterdir()) == ["TransparentVAE.pth", "TransparentVAE.safetensors"]
    return safetensors.torch.load_file(str(target))


@pytest.mark.parametrize("wrapped", [False, True], ids=["codec only", "with the wrapped VAE's tensors"])
def test_published_pickle_converts_and_loads_strictly(tmp_path, published_state, wrapped):
    state = dict(published_state)
    if wrapped:  # the port's module also holds the FLUX VAE it wraps
        state |= {"sd_vae.encoder.conv_in.weight": torch.zeros(128, 3, 3, 3),
                  "sd_vae.decoder.conv_out.bias": torch.zeros(3)}
    converted = _convert(state, tmp_path)
    assert set(converted) == set(published_state)
    for kind, module in (("decoder", FLUX_CODEC.decoder()), ("encoder", FLUX_CODEC.encoder())):
        own = {k.removeprefix(f"{kind}."): v for k, v in converted.items() if k.startswith(f"{kind}.")}
        module.load_state_dict(own, strict=True)
        assert torch.equal(module.state_dict()["conv_in.weight" if kind == "decoder" else "blocks.0.weight"].half(),
                           own["conv_in.weight" if kind == "decoder" else "blocks.0.weight"])


def test_nested_state_dict_is_accepted(tmp_path, published_state):
    assert set(_convert({"state_dict": published_state}, tmp_path)) == set(published_state)


def test_a_file_missing_a_decoder_tensor_is_refused_and_nothing_is_written(tmp_path, published_state):
    state = dict(published_state)
    del state["decoder.mid_block.attentions.0.to_q.weight"]
    source = tmp_path / "TransparentVAE.pth"
    torch.save(state, source)
    with pytest.raises(WeightFileError, match=r"1 are missing.*mid_block.attentions.0.to_q.weight.*published"):
        convert_pickled_codec(str(source), str(tmp_path / "TransparentVAE.safetensors"))
    assert [p.name for p in tmp_path.iterdir()] == ["TransparentVAE.pth"]


def test_an_sd_decoder_under_the_flux_name_is_refused(tmp_path):
    torch.manual_seed(0)
    state = {f"decoder.{k}": v for k, v in SD_CODEC.decoder().state_dict().items()}
    state |= {f"encoder.{k}": v for k, v in SD_CODEC.encoder().state_dict().items()}
    source = tmp_path / "TransparentVAE.pth"
    torch.save(state, source)
    with pytest.raises(WeightFileError, match="3 have another shape"):  # latent_conv_in, the last encoder conv and bias
        convert_pickled_codec(str(source), str(tmp_path / "out.safetensors"))


def test_truncated_pickle_is_refused_with_what_to_do(tmp_path, published_state):
    source = tmp_path / "TransparentVAE.pth"
    torch.save(published_state, source)
    data = source.read_bytes()
    source.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightFileError, match="could not be read as a PyTorch weight file.*truncated"):
        convert_pickled_codec(str(source), str(tmp_path / "TransparentVAE.safetensors"))
    assert [p.name for p in tmp_path.iterdir()] == ["TransparentVAE.pth"]


def test_pickled_code_is_never_run(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "ran"),))

    source = tmp_path / "TransparentVAE.pth"
    torch.save({"decoder.conv_in.weight": Payload()}, source)
    with pytest.raises(WeightFileError, match="could not be read"):
        convert_pickled_codec(str(source), str(tmp_path / "TransparentVAE.safetensors"))
    assert not (tmp_path / "ran").exists()


def test_ensure_converts_a_users_pickle_once_and_then_uses_the_safetensors(tmp_path, published_state, monkeypatch):
    monkeypatch.setenv(weights.OFFLINE_ENV, "1")
    layer_folder, vae_folder = tmp_path / "layer_model", tmp_path / "vae"
    layer_folder.mkdir()
    vae_folder.mkdir()
    torch.save(published_state, vae_folder / "TransparentVAE.pth")  # where other guides put it
    calls = []

    def convert(source: str, target: str) -> None:
        calls.append((source, target))
        convert_pickled_codec(source, target)

    codec = weights.REGISTRY["TransparentVAE.safetensors"]
    first = weights.ensure(codec, [str(layer_folder)], convert=convert, elsewhere=[str(vae_folder)])
    second = weights.ensure(codec, [str(layer_folder)], convert=convert, elsewhere=[str(vae_folder)])
    assert first == second == str(layer_folder / "TransparentVAE.safetensors")
    assert len(calls) == 1, "the pickle is converted once"
    assert sorted(p.name for p in vae_folder.iterdir()) == ["TransparentVAE.pth"], "nothing lands in the vae folder"
    (vae_folder / "TransparentVAE.pth").unlink()
    (layer_folder / "TransparentVAE.safetensors").unlink()
    with pytest.raises(WeightFileError, match="TransparentVAE.pth.*downloads are switched off"):
        weights.ensure(codec, [str(layer_folder)], convert=convert, elsewhere=[str(vae_folder)])


@pytest.fixture(scope="module")
def flux_decoder(published_state):
    decoder = FLUX_CODEC.decoder()
    decoder.load_state_dict({k[8:]: v.float() for k, v in published_state.items() if k.startswith("decoder.")})
    return decoder.eval()


@pytest.mark.parametrize("augmentations", [1, 2, 4, 8])
def test_flux_latents_decode_at_any_size_with_every_augmentation_count(flux_decoder, augmentations):
    generator = torch.Generator().manual_seed(augmentations)
    rgb = torch.rand(1, 3, 40, 72, generator=generator)  # not a multiple of 64: padded and cropped back
    latent = torch.randn(1, 16, 5, 9, generator=generator)
    fast = decode_rgba(flux_decoder, rgb, latent, augmentations)
    plain = decode_rgba_reference(flux_decoder, rgb, latent, augmentations)
    assert fast.shape == (1, 4, 40, 72) and 0.0 <= fast.min() and fast.max() <= 1.0
    torch.testing.assert_close(fast, plain, rtol=0, atol=1e-5)
    other = decode_rgba(flux_decoder, rgb, latent.roll(1, dims=1), augmentations)
    assert (other - fast).abs().max() > 1e-4, "the 16-channel latent must reach the decoder"


def test_flux_encoder_input_is_colour_then_alpha():
    rgb, alpha = torch.rand(1, 3, 16, 16), (torch.rand(1, 1, 16, 16) > 0.5).float()
    _, sd_input = encoder_inputs(rgb, alpha, SD_CODEC)
    _, flux_input = encoder_inputs(rgb, alpha, FLUX_CODEC)
    assert torch.equal(flux_input[:, 3:], alpha) and torch.equal(sd_input[:, :1], alpha)
    assert torch.equal(flux_input[:, :3], sd_input[:, 1:])
    assert FLUX_CODEC.encoder()(flux_input).shape == (1, 16, 2, 2)
    assert FLUX_CODEC.offset_scale == 300.0 and SD_CODEC.offset_scale == 1.0


def test_a_missing_pickle_is_downloaded_checked_by_the_stated_hash_and_converted(tmp_path, published_state,
                                                                                monkeypatch):
    import hashlib
    import http.server
    import threading

    served = tmp_path / "served.pth"
    torch.save(published_state, served)
    body = served.read_bytes()
    requests = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            requests.append(self.path)
            if not self.path.endswith("/TransparentVAE.pth"):
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Linked-Etag", f'"{hashlib.sha256(body).hexdigest()}"')
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv(weights.BASE_URL_ENV, f"http://127.0.0.1:{server.server_address[1]}/hub")
    monkeypatch.delenv(weights.OFFLINE_ENV, raising=False)
    folder = tmp_path / "layer_model"
    folder.mkdir()
    try:
        path = weights.ensure(weights.REGISTRY["TransparentVAE.safetensors"], [str(folder)],
                              convert=convert_pickled_codec)
    finally:
        server.shutdown()
    assert requests == ["/hub/TransparentVAE.pth"], "only the published pickle is fetched, once"
    assert path == str(folder / "TransparentVAE.safetensors")
    assert sorted(p.name for p in folder.iterdir()) == ["TransparentVAE.pth", "TransparentVAE.safetensors"]
    assert set(safetensors.torch.load_file(path)) == set(published_state)
