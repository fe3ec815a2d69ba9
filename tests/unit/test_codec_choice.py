"""Which codec Decode/Encode run (layer_model/codec_choice.py), as plain Python: the published one for the latents in
use, or a trained one checked against the MODEL's space, sd_version and the data."""

from __future__ import annotations

import pytest
from comfyui_layer_sketch.layer_model.codec_choice import Codec, choose_codec, latent_candidates, no_published_codec
from comfyui_layer_sketch.layer_model.latent_spaces import FLUX, FLUX2, SD3, SD15, SDXL, SPACES, WAN21
from comfyui_layer_sketch.layer_model.trained_codec import CodecFileError, CodecInfo


def trained(space, name: str = "mine.safetensors") -> Codec:
    return Codec.trained(name, f"/models/{name}", CodecInfo(space.name, space.channels, space.downscale, 1.0, True))


def test_latent_shapes_name_their_candidate_spaces():
    assert latent_candidates((1, 4, 8, 8)) == (SD15, SDXL)
    assert latent_candidates((1, 16, 8, 8)) == (FLUX, SD3, WAN21)  # an unsampled Qwen-Image latent is 4-D
    assert latent_candidates((1, 128, 4, 4)) == (FLUX2,)
    assert latent_candidates((1, 16, 1, 8, 8)) == (WAN21,)
    assert latent_candidates((1, 8, 8, 8)) == ()


def test_published_follows_sd_version_then_the_model_then_the_one_family_the_data_allows():
    assert choose_codec(None, "SDXL", FLUX, "Flux", lambda: ()).base == "SDXL"  # as chosen, as before
    assert choose_codec(None, "auto", SDXL, "SDXL", lambda: ()).base == "SDXL"
    assert choose_codec(None, "auto", None, "", lambda: latent_candidates((1, 16, 8, 8))).base == "FLUX"
    with pytest.raises(ValueError, match="no MODEL is connected"):
        choose_codec(None, "auto", None, "", lambda: latent_candidates((1, 4, 8, 8)))
    for space in (SD3, FLUX2, WAN21):
        with pytest.raises(ValueError, match=rf"samples {space.label[:6]}.*no published transparency codec.*Layer "
                                             "Diffuse Train Transparent VAE"):
            choose_codec(None, "auto", space, "M", lambda: ())


def test_a_trained_codec_is_checked_against_the_model_before_the_data_is_read():
    def unread():
        raise AssertionError("the data is read only after the MODEL and sd_version are checked")

    with pytest.raises(ValueError, match=r"^The codec mine.safetensors was trained for SD3/3.5 latents, but the "
                                         r"connected MODEL \(Flux\) samples FLUX.1 latents"):
        choose_codec(trained(SD3), "auto", FLUX, "Flux", unread)
    with pytest.raises(ValueError, match=r"trained for FLUX.2 latents, but sd_version is SD1.5, for SD1.5 latents"):
        choose_codec(trained(FLUX2), "SD1.5", None, "", unread)
    codec = trained(WAN21)
    assert choose_codec(codec, "FLUX", WAN21, "QwenImage", lambda: (WAN21,)) is codec  # the MODEL decides
    assert choose_codec(trained(SD3), "auto", None, "", lambda: latent_candidates((1, 16, 8, 8))).space is SD3


def test_a_trained_codec_is_refused_for_data_of_another_shape():
    with pytest.raises(ValueError, match=r"^The latent has 16 channels, but the codec mine.safetensors was trained "
                                         r"for FLUX.2 latents, which have 128"):
        choose_codec(trained(FLUX2), "auto", None, "", lambda: latent_candidates((1, 16, 8, 8)), (1, 16, 8, 8))
    with pytest.raises(ValueError, match=r"connected VAE encodes to SD1.5 or SDXL latents"):
        choose_codec(trained(SD3), "auto", None, "", lambda: (SD15, SDXL))


def test_a_codec_file_describing_an_unknown_or_inconsistent_space_is_refused():
    with pytest.raises(CodecFileError, match="trained for 'Wan22' latents, which this version of the pack does not"):
        Codec.trained("x", "/x", CodecInfo("Wan22", 48, 16, 1.0, True))
    with pytest.raises(CodecFileError, match="says Flux2 but 16 channels at 1/8"):
        Codec.trained("x", "/x", CodecInfo("Flux2", 16, 8, 1.0, True))
    assert {trained(space).space for space in SPACES.values()} == set(SPACES.values())


def test_the_refusal_for_a_space_without_a_codec_names_the_trainer_node_and_command():
    message = str(no_published_codec(FLUX2, "The connected MODEL (Flux2) samples"))
    assert "the node Layer Diffuse Train Transparent VAE" in message
    assert "`python -m layer_model.train_codec` in the pack's folder" in message
