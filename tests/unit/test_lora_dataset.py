"""The RGBA LoRA dataset's pure parts: captions beside the images, what is skipped and defaulted, the sizes images
are read at, and the encoding loop (the host's encoders stood in for by plain functions). The host's own encoders
and Train LoRA are in tests/host/test_lora_dataset_host.py."""

from __future__ import annotations

import pytest
import torch
from comfyui_layer_sketch.layer_model.lora_dataset import (
    DEFAULT_CAPTION,
    captioned_folder,
    check_resolution,
    encode_images,
    load_training_image,
    read_caption,
)
from comfyui_layer_sketch.layer_model.rgba_dataset import RGBADatasetError
from support.shapes import write_rgba_folder

SIDE = 48


@pytest.fixture
def folder(tmp_path):
    folder = write_rgba_folder(tmp_path / "set", 4, SIDE, opaque=1, without_alpha=2)
    (folder / "shape_000.txt").write_text("  a red circle\n", encoding="utf-8")
    (folder / "shape_001.txt").write_text("a square", encoding="utf-8")
    (folder / "shape_002.txt").write_text("", encoding="utf-8")  # an empty caption is a caption
    (folder / "rgb_006.txt").write_text("never read: the image has no alpha", encoding="utf-8")
    return folder


def test_captions_are_read_beside_each_image_and_missing_ones_default(folder):
    assert read_caption(str(folder / "shape_000.png")) == "a red circle"
    assert read_caption(str(folder / "shape_003.png")) is None
    dataset = captioned_folder(str(folder), "a transparent image")
    assert [(image.caption, image.has_caption_file) for image in dataset.images] == [
        ("a red circle", True), ("a square", True), ("", True), ("a transparent image", False)]
    assert dataset.without_caption == ("shape_003.png",)
    assert dataset.summary() == (
        "4 transparent images; skipped 2 without an alpha channel, 1 fully opaque\n"
        "1 without a caption file (shape_003.png): captioned 'a transparent image', the default caption; put the "
        "caption in <name>.txt beside each image")
    assert captioned_folder(str(folder)).images[3].caption == DEFAULT_CAPTION == ""


def test_a_folder_without_transparent_images_is_refused(tmp_path):
    only_opaque = write_rgba_folder(tmp_path / "opaque", 0, SIDE, opaque=2, without_alpha=1)
    with pytest.raises(RGBADatasetError, match=r"holds no transparent image to train on \(0 transparent images; "
                                               r"skipped 1 without an alpha channel, 2 fully opaque\)"):
        captioned_folder(str(only_opaque))
    with pytest.raises(RGBADatasetError, match="does not exist"):
        captioned_folder(str(tmp_path / "nowhere"))


def test_images_are_read_square_at_the_resolution_or_at_their_own_size(tmp_path):
    folder = write_rgba_folder(tmp_path / "set", 1, SIDE)
    path = str(next(folder.glob("*.png")))
    assert load_training_image(path, 32).shape == (1, 4, 32, 32)
    assert load_training_image(path, 0).shape == (1, 4, SIDE, SIDE)
    for wrong in (8, 40, -16):
        with pytest.raises(ValueError, match="multiple of 16 px, or 0"):
            check_resolution(wrong)


def test_each_image_is_encoded_in_order_and_each_caption_once(folder):
    dataset = captioned_folder(str(folder), "default")
    seen, done = [], []

    def encode_caption(text: str) -> list:
        seen.append(text)
        return [text]

    latents, conditioning = encode_images(dataset.images, 32, lambda rgba: rgba[:, 3:].mean().reshape(1, 1),
                                          encode_caption, done.append)
    assert [c[0] for c in conditioning] == ["a red circle", "a square", "", "default"]
    assert seen == ["a red circle", "a square", "", "default"] and sum(done) == 4
    expected = [load_training_image(image.path, 32)[:, 3:].mean() for image in dataset.images]
    assert torch.allclose(torch.cat(latents).flatten(), torch.stack(expected))
    _, shared = encode_images(dataset.images[:1] * 2, 32, lambda rgba: rgba, encode_caption)
    assert shared[0] is shared[1] and seen.count("a red circle") == 2  # once per call, shared within it
