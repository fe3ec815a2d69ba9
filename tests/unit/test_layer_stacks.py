"""Layer stacks with offsets, opacity, blend modes and visibility, written by the pack and read back by
independent readers (psd-tools; zipfile + xml.etree + PIL for OpenRaster), and the pure conversions from
host-shaped inputs: an RGBA batch (Qwen-Image-Layered's decode) and a LAYERS document as Add Layer builds it."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
import zipfile

import numpy as np
import pytest
import torch
from comfyui_layer_sketch.layer_model.layer_documents import stack_from_document, stacks_from_batch, to_uint8
from comfyui_layer_sketch.layer_model.layered_files import (
    Layer,
    check,
    merged,
    write_ora_document,
    write_psd_document,
)
from PIL import Image
from psd_tools import PSDImage

PSD_BLEND_NAMES = {"normal": "NORMAL", "multiply": "MULTIPLY", "screen": "SCREEN", "difference": "DIFFERENCE"}


def _pixels(height: int, width: int, seed: int) -> np.ndarray:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 4), dtype=np.uint8)
    pixels[0, 0, 3] = 0
    return pixels


def _stack() -> tuple[tuple[int, int], list[Layer]]:
    """A canvas of 40x30 with layers of their own sizes, one partly off the canvas, one hidden."""
    return (40, 30), [
        Layer(_pixels(30, 40, 0), "paper"),
        Layer(_pixels(10, 12, 1), "stamp – rot", x=5, y=7, opacity=0.5, blend="multiply"),
        Layer(_pixels(8, 9, 2), "edge", x=-3, y=25, blend="screen"),
        Layer(_pixels(6, 6, 3), "hidden", x=20, y=2, blend="difference", visible=False),
    ]


def _read_ora(path) -> tuple[ET.Element, list[tuple[ET.Element, np.ndarray]], np.ndarray]:
    with zipfile.ZipFile(path) as archive:
        assert archive.infolist()[0].filename == "mimetype"
        image = ET.fromstring(archive.read("stack.xml"))
        layers = [(element, np.asarray(Image.open(io.BytesIO(archive.read(element.get("src"))))))
                  for element in image.find("stack").findall("layer")]
        flat = np.asarray(Image.open(io.BytesIO(archive.read("mergedimage.png"))))
    return image, layers, flat


def test_openraster_keeps_offsets_opacity_blend_visibility_and_order(tmp_path):
    canvas, layers = _stack()
    write_ora_document(str(tmp_path / "s.ora"), canvas, layers)
    image, read, flat = _read_ora(tmp_path / "s.ora")
    assert (image.get("w"), image.get("h")) == ("40", "30")
    assert [element.get("name") for element, _ in read] == [layer.name for layer in layers[::-1]], "top first"
    for (element, pixels), layer in zip(read, layers[::-1], strict=True):
        assert (int(element.get("x")), int(element.get("y"))) == (layer.x, layer.y)
        assert float(element.get("opacity")) == layer.opacity
        assert element.get("composite-op") == f"svg:{'src-over' if layer.blend == 'normal' else layer.blend}"
        assert element.get("visibility") == ("visible" if layer.visible else "hidden")
        assert np.array_equal(pixels, layer.pixels)
    assert np.array_equal(flat, merged(layers, canvas))


def test_psd_keeps_offsets_opacity_blend_visibility_and_order(tmp_path):
    canvas, layers = _stack()
    write_psd_document(str(tmp_path / "s.psd"), canvas, layers)
    psd = PSDImage.open(tmp_path / "s.psd")
    assert psd.size == canvas and [layer.name for layer in psd] == [layer.name for layer in layers]
    for read, layer in zip(psd, layers, strict=True):
        assert read.offset == (layer.x, layer.y) and read.size == layer.pixels.shape[1::-1]
        assert read.opacity == round(layer.opacity * 255)
        assert read.blend_mode.name == PSD_BLEND_NAMES[layer.blend]
        assert read.visible == layer.visible
        assert np.array_equal(np.asarray(read.topil().convert("RGBA")), layer.pixels)
    flat, expected = np.asarray(psd.topil().convert("RGBA")).astype(int), merged(layers, canvas).astype(int)
    assert np.array_equal(flat[..., 3], expected[..., 3])
    seen = expected[..., 3] >= 64  # below that, the colour taken back out of white loses its precision
    assert np.abs(flat - expected)[seen].max() <= 4, "the flat picture, stored over white as Photoshop does"


def test_the_flat_picture_places_each_visible_layer_with_its_opacity():
    red = np.zeros((2, 2, 4), np.uint8)
    red[..., 0], red[..., 3] = 255, 255
    flat = merged([Layer(red, "a", x=3, y=1, opacity=0.5), Layer(red, "b", x=0, y=0, visible=False),
                   Layer(red, "c", x=-1, y=3)], (4, 4))
    assert flat[1, 3].tolist() == [255, 0, 0, 128] and flat[2, 3, 3] == 128 and flat[1, 2, 3] == 0
    assert flat[0, 0, 3] == 0, "the hidden layer leaves no trace"
    assert flat[3, 0].tolist() == [255, 0, 0, 255] and flat[3, 1, 3] == 0, "the part past the edge is cut"


@pytest.mark.parametrize(("blend", "formats", "message"), [
    ("exclusion", ("ora",), "'exclusion', which ORA cannot store \\(only PSD has it\\)"),
    ("grain-merge", ("psd",), "which PSD cannot store \\(neither ORA nor PSD has it\\)"),
    ("glow", ("psd",), "unknown blend mode 'glow'"),
])
def test_blend_modes_a_format_cannot_hold_are_refused_naming_the_layer(blend, formats, message):
    with pytest.raises(ValueError, match=f"layer 'top'.*{message}"):
        check((4, 4), [Layer(np.zeros((4, 4, 4), np.uint8), "bottom"),
                       Layer(np.zeros((4, 4, 4), np.uint8), "top", blend=blend)], formats)
    check((4, 4), [Layer(np.zeros((4, 4, 4), np.uint8), "top", blend="exclusion")], ("psd",))


def test_an_rgba_batch_becomes_stacks_of_full_canvas_layers():
    images = torch.rand(6, 5, 7, 4, generator=torch.Generator().manual_seed(0))
    stacks = stacks_from_batch(images, None, "sky, , cat", per_file=3)
    assert len(stacks) == 2 and all(canvas == (7, 5) for canvas, _ in stacks)
    assert [layer.name for layer in stacks[1][1]] == ["sky", "layer 2", "cat"]
    assert np.array_equal(stacks[1][1][0].pixels, to_uint8(images[3]))
    flipped = stacks_from_batch(images, None, top_first=True)
    assert len(flipped) == 1 and np.array_equal(flipped[0][1][0].pixels, to_uint8(images[5]))
    with pytest.raises(ValueError, match="6 images, not a multiple of layers_per_file \\(4\\)"):
        stacks_from_batch(images, None, per_file=4)


def test_a_mask_replaces_the_images_alpha_and_rgb_alone_is_opaque():
    images = torch.rand(2, 4, 4, 4)
    mask = torch.zeros(1, 4, 4)
    mask[:, :2] = 1.0  # the host's convention: 1 = transparent
    (_, layers), = stacks_from_batch(images, mask)
    assert all((layer.pixels[:2, :, 3] == 0).all() and (layer.pixels[2:, :, 3] == 255).all() for layer in layers)
    (_, opaque), = stacks_from_batch(images[..., :3], None)
    assert all((layer.pixels[..., 3] == 255).all() for layer in opaque)
    with pytest.raises(ValueError, match="The mask is 3x4 px but the image is 4x4 px"):
        stacks_from_batch(images, torch.zeros(1, 4, 3))


def _document(*items: dict, canvas=None) -> dict:
    return {"version": 1, "layers": list(items), **({"canvas": canvas} if canvas else {})}


def test_a_layers_document_is_read_as_the_host_reads_it():
    red = torch.zeros(1, 4, 6, 4)
    red[..., 0] = red[..., 3] = 1.0
    pair = torch.rand(2, 3, 3, 3)
    mask = torch.zeros(1, 3, 3)
    mask[0, 0] = 1.0
    canvas, layers = stack_from_document(_document(
        {"image": red, "type": "raster", "x": 10, "y": 2, "z_index": 5, "name": "top", "opacity": 0.25,
         "blend_mode": "multiply", "flip_h": True},
        {"image": pair, "type": "raster", "x": -2, "y": 0, "mask": mask},
        {"image": "not pixels"},  # skipped, as the host skips it
    ))
    assert [layer.name for layer in layers] == ["layer 1", "layer 2", "top"], "stable z order, frames expanded"
    assert canvas == (16, 6), "no canvas given: the extent of the placed layers"
    assert (layers[0].x, layers[0].y, layers[2].x, layers[2].opacity, layers[2].blend) == (-2, 0, 10, 0.25, "multiply")
    assert (layers[1].pixels[0, :, 3] == 0).all() and (layers[1].pixels[1:, :, 3] == 255).all(), "mask times alpha"
    sized, = stack_from_document(_document({"image": red, "w": 12, "h": 2}, canvas=(20, 20)))[1:]
    assert sized[0].pixels.shape == (2, 12, 4)
    with pytest.raises(ValueError, match="blend mode 'glow'"):
        stack_from_document(_document({"image": red, "blend_mode": "glow"}))
    with pytest.raises(ValueError, match="version 2"):
        stack_from_document({"version": 2, "layers": []})
    with pytest.raises(ValueError, match="holds no layer"):
        stack_from_document(_document())


def test_rotation_turns_the_pixels_about_the_layers_centre():
    square = torch.zeros(1, 10, 20, 4)
    square[:, :, :10, 3] = 1.0  # the left half opaque
    _, (layer,) = stack_from_document(_document({"image": square, "x": 30, "y": 40, "rotation": np.pi / 2}))
    assert layer.pixels.shape[:2] == (20, 10) and (layer.x, layer.y) == (35, 35), "centre (40, 45) stays"
    assert layer.pixels[:10, :, 3].min() == 255 and layer.pixels[10:, :, 3].max() == 0, "clockwise: left goes up"
