"""Layered files read back by independent readers: the zip/XML structure for OpenRaster, psd-tools for PSD."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
import zipfile

import numpy as np
import pytest
import torch
from comfyui_layer_sketch.layer_model.alpha import composite_over
from comfyui_layer_sketch.layer_model.layered_files import merged, write_ora, write_psd
from PIL import Image
from psd_tools import PSDImage


def _layers(height: int = 24, width: int = 40) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    background = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
    background[..., 3] = 255
    foreground = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
    foreground[..., 3] = 0
    foreground[4:18, 6:30, 3] = 255
    foreground[4:18, 6:12, 3] = 128  # half-transparent edge
    return [background, foreground]


NAMES = ["background", "foreground – über"]


def test_openraster_holds_the_layers_top_first_with_alpha(tmp_path):
    layers, path = _layers(), tmp_path / "layers.ora"
    write_ora(str(path), layers, NAMES)
    with zipfile.ZipFile(path) as archive:
        first = archive.infolist()[0]
        assert first.filename == "mimetype" and first.compress_type == zipfile.ZIP_STORED
        assert archive.read("mimetype") == b"image/openraster"
        image = ET.fromstring(archive.read("stack.xml"))
        assert (image.get("w"), image.get("h")) == ("40", "24")
        stack = image.find("stack").findall("layer")
        assert [layer.get("name") for layer in stack] == NAMES[::-1], "the top layer comes first"
        for element, expected in zip(stack, layers[::-1], strict=True):
            read = np.asarray(Image.open(io.BytesIO(archive.read(element.get("src")))))
            assert read.shape == (24, 40, 4) and np.array_equal(read, expected)
        flat = np.asarray(Image.open(io.BytesIO(archive.read("mergedimage.png"))))
        assert np.array_equal(flat, merged(layers))
        assert Image.open(io.BytesIO(archive.read("Thumbnails/thumbnail.png"))).size == (40, 24)
    assert not list(tmp_path.glob("*.part"))


def test_psd_opens_in_psd_tools_with_named_transparent_layers(tmp_path):
    layers, path = _layers(), tmp_path / "layers.psd"
    write_psd(str(path), layers, NAMES)
    psd = PSDImage.open(path)
    assert psd.size == (40, 24) and len(psd) == 2
    assert [layer.name for layer in psd] == NAMES, "bottom layer first, unicode names kept"
    for layer, expected in zip(psd, layers, strict=True):
        assert layer.is_visible() and layer.bbox == (0, 0, 40, 24)
        assert np.array_equal(np.asarray(layer.topil().convert("RGBA")), expected)
    assert np.array_equal(np.asarray(psd.topil().convert("RGBA")), merged(layers))


def test_layers_of_different_sizes_are_refused(tmp_path):
    with pytest.raises(ValueError, match="one size"):
        write_ora(str(tmp_path / "x.ora"), [_layers()[0], _layers(24, 41)[0]], ["a", "b"])


def test_composite_over_matches_the_textbook_formula_in_both_alpha_conventions():
    generator = torch.Generator().manual_seed(0)
    bottom, top = torch.rand(2, 4, 8, 8, generator=generator), torch.rand(2, 4, 8, 8, generator=generator)
    out = composite_over([bottom, top])
    alpha = top[:, 3:] + bottom[:, 3:] * (1 - top[:, 3:])
    colour = (top[:, :3] * top[:, 3:] + bottom[:, :3] * bottom[:, 3:] * (1 - top[:, 3:])) / alpha
    torch.testing.assert_close(out, torch.cat([colour, alpha], 1))
    premultiplied = [torch.cat([x[:, :3] * x[:, 3:], x[:, 3:]], 1) for x in (bottom, top)]
    torch.testing.assert_close(composite_over(premultiplied, premultiplied=True), out)
    opaque_top = top.clone()
    opaque_top[:, 3] = 1.0
    torch.testing.assert_close(composite_over([bottom, opaque_top]), opaque_top)
