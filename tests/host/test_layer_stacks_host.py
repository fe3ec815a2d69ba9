"""Save Layer Stack in the real host: an RGBA batch (as Qwen-Image-Layered's decode gives it) and, on the newest
host, the host's own LAYERS built by its Add Layer node, saved as PSD and ORA and read back by independent readers
(psd-tools; zipfile + xml.etree + PIL)."""

from __future__ import annotations

import io
import math
import xml.etree.ElementTree as ET
import zipfile

import numpy as np
import pytest
import torch
from comfyui_layer_sketch.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from PIL import Image
from psd_tools import PSDImage

SaveStack = NODE_CLASS_MAPPINGS["LayerDiffuseSaveLayerStack"]


def _uint8(image: torch.Tensor) -> np.ndarray:
    return (image.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def _ora(path) -> list[dict]:
    """Each layer of an OpenRaster file, bottom first: its stack.xml attributes and its pixels."""
    with zipfile.ZipFile(path) as archive:
        elements = ET.fromstring(archive.read("stack.xml")).find("stack").findall("layer")
        return [{**element.attrib, "pixels": np.asarray(Image.open(io.BytesIO(archive.read(element.get("src")))))}
                for element in reversed(elements)]


def _rgba_batch(count: int = 3) -> torch.Tensor:
    images = torch.rand(count, 20, 28, 4, generator=torch.Generator().manual_seed(0))
    images[..., 3] = (images[..., 3] > 0.5).float()  # cut-out layers, as a decomposition gives them
    return images


def test_the_node_registers_on_every_host_with_layers_optional():
    inputs = SaveStack.INPUT_TYPES()
    assert inputs["optional"]["layers"][0] == "LAYERS" and "layers" not in inputs["required"]
    assert NODE_DISPLAY_NAME_MAPPINGS["LayerDiffuseSaveLayerStack"] == "Layer Diffuse Save Layer Stack"


def test_an_rgba_batch_becomes_one_layered_file_with_every_image_a_layer(output_dir):
    images = _rgba_batch()
    result = SaveStack().save("qwen/split", "ora + psd + png", images=images, layer_names="back, middle, front")
    expected = [_uint8(image) for image in images]
    psd = PSDImage.open(output_dir / "qwen" / "split_00001_.psd")
    assert psd.size == (28, 20) and [layer.name for layer in psd] == ["back", "middle", "front"]
    for layer, pixels in zip(psd, expected, strict=True):
        assert layer.offset == (0, 0) and layer.size == (28, 20) and layer.blend_mode.name == "NORMAL"
        assert np.array_equal(np.asarray(layer.topil().convert("RGBA")), pixels)
    ora = _ora(output_dir / "qwen" / "split_00001_.ora")
    assert [layer["name"] for layer in ora] == ["back", "middle", "front"]
    assert all(np.array_equal(layer["pixels"], pixels) for layer, pixels in zip(ora, expected, strict=True))
    pngs = [entry["filename"] for entry in result["ui"]["images"]]
    assert pngs == ["split_00001_01.png", "split_00001_02.png", "split_00001_03.png"]
    assert np.array_equal(np.asarray(Image.open(output_dir / "qwen" / pngs[2])), expected[2])
    assert not list(output_dir.rglob("*.part"))


def test_several_decompositions_top_first_with_a_mask_make_one_file_each(output_dir):
    images = _rgba_batch(4)[..., :3]
    mask = torch.zeros(4, 20, 28)
    mask[:, :, :10] = 1.0  # the host's MASK: 1 = transparent
    SaveStack().save("pairs", "psd + png", images=images, mask=mask, order="top first", layers_per_file=2)
    assert sorted(p.name for p in output_dir.glob("*.psd")) == ["pairs_00001_.psd", "pairs_00002_.psd"]
    second = PSDImage.open(output_dir / "pairs_00002_.psd")
    bottom = np.asarray(second[0].topil().convert("RGBA"))
    assert np.array_equal(bottom[..., :3], _uint8(images[3])), "top first: the file's bottom is the pair's last"
    assert (bottom[:, :10, 3] == 0).all() and (bottom[:, 10:, 3] == 255).all()


@pytest.mark.parametrize(("given", "message"), [({}, "not neither"), ({"layers": {"version": 1}}, "not both")])
def test_images_or_layers_must_be_connected_not_both(output_dir, given, message):
    images = None if not given else _rgba_batch(1)
    with pytest.raises(ValueError, match=f"Connect either images .* or layers .*{message}"):
        SaveStack().save("x", "ora + psd + png", images=images, **given)
    assert not list(output_dir.iterdir())


def _add_layer(**kwargs):
    from comfy_extras.nodes_compositor import AddLayer

    return AddLayer.execute(**kwargs)[0]


@pytest.mark.newest_host
def test_the_hosts_layers_keep_positions_opacity_blend_and_order(output_dir):
    from comfy_extras.compositor_blend import placed_bounds
    from comfy_extras.nodes_compositor import canvas_extent, document_items, expand_item_frames

    paper = torch.rand(1, 24, 32, 3, generator=torch.Generator().manual_seed(1))
    stamp = _rgba_batch(2)[:, :10, :12]
    mask = torch.zeros(1, 10, 12)
    mask[:, :, :3] = 1.0
    document = _add_layer(image=paper, name="paper")
    document = _add_layer(layers=document, image=stamp, name="stamps", x=-4, y=18, opacity=0.6,
                          blend_mode="multiply", mask=mask)
    document = _add_layer(layers=document, image=paper[:, :8, :8], name="lowest", x=20, y=3, z_index=-1,
                          blend_mode="screen", rotation=90.0)
    SaveStack().save("doc", "ora + psd + png", layers=document)

    psd = PSDImage.open(output_dir / "doc_00001_.psd")
    assert psd.size == canvas_extent(expand_item_frames(document_items(document))) == (32, 28), \
        "no canvas in the document: the extent of the placed layers, as the host takes it"
    assert [layer.name for layer in psd] == ["lowest", "paper", "stamps", "stamps"], "z_index, then list order"
    assert [item.get("name") for item in document_items(document)] == ["lowest", "paper", "stamps"]
    bx, by, _, _ = placed_bounds(20, 3, 8, 8, math.radians(90.0))
    assert psd[0].offset == (bx, by) and psd[0].blend_mode.name == "SCREEN"
    for layer, frame in zip(psd[2:], stamp, strict=True):
        assert layer.offset == (-4, 18) and layer.size == (12, 10)
        assert layer.opacity == round(0.6 * 255) and layer.blend_mode.name == "MULTIPLY"
        pixels = np.asarray(layer.topil().convert("RGBA"))
        assert np.array_equal(pixels[:, 3:, :3], _uint8(frame)[:, 3:, :3])
        assert (pixels[:, :3, 3] == 0).all(), "the mask (1 = transparent) multiplies the image's alpha"
        assert np.array_equal(pixels[:, 3:, 3], _uint8(frame)[:, 3:, 3])
    assert np.array_equal(np.asarray(psd[1].topil().convert("RGB")), _uint8(paper[0]))
    ora = _ora(output_dir / "doc_00001_.ora")
    assert [(layer["name"], layer["x"], layer["y"], layer["composite-op"]) for layer in ora] == [
        ("lowest", str(bx), str(by), "svg:screen"), ("paper", "0", "0", "svg:src-over"),
        ("stamps", "-4", "18", "svg:multiply"), ("stamps", "-4", "18", "svg:multiply")]
    assert float(ora[3]["opacity"]) == pytest.approx(0.6)
    assert np.array_equal(ora[3]["pixels"], np.asarray(psd[3].topil().convert("RGBA")))


@pytest.mark.newest_host
def test_a_blend_mode_a_format_cannot_hold_is_refused_before_any_file(output_dir):
    document = _add_layer(image=torch.rand(1, 8, 8, 3), name="base")
    document = _add_layer(layers=document, image=torch.rand(1, 8, 8, 3), name="glow", blend_mode="exclusion")
    with pytest.raises(ValueError, match="layer 'glow' uses blend mode 'exclusion', which ORA cannot store"):
        SaveStack().save("doc", "ora + psd + png", layers=document)
    assert not list(output_dir.iterdir())
    SaveStack().save("doc", "psd + png", layers=document)
    assert PSDImage.open(output_dir / "doc_00001_.psd")[1].blend_mode.name == "EXCLUSION"


def test_the_hosts_prompt_check_accepts_the_node_with_layers_unconnected(monkeypatch):
    """A host without a LAYERS type (0.3.75, 0.30.0) validates a graph with the node: the optional type is inert."""
    import asyncio

    import execution

    import nodes

    monkeypatch.setitem(nodes.NODE_CLASS_MAPPINGS, "LayerDiffuseSaveLayerStack", SaveStack)
    prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 8, "batch_size": 2, "color": 0}},
              "2": {"class_type": "LayerDiffuseSaveLayerStack",
                    "inputs": {"images": ["1", 0], "filename_prefix": "x", "formats": "ora + psd + png"}}}
    valid, error, outputs, node_errors = asyncio.run(execution.validate_prompt("check", prompt, None))
    assert valid, (error, node_errors)
    assert outputs == ["2"]
