"""Layers out, in the real host: composite and save-layers nodes, files read back."""

from __future__ import annotations

import errno
import os
import xml.etree.ElementTree as ET
import zipfile

import numpy as np
import pytest
import torch
from comfyui_layer_sketch.nodes import NODE_CLASS_MAPPINGS
from PIL import Image
from psd_tools import PSDImage

Composite = NODE_CLASS_MAPPINGS["LayerDiffuseComposite"]
SaveLayers = NODE_CLASS_MAPPINGS["LayerDiffuseSaveLayers"]


def _foreground(batch: int = 1) -> torch.Tensor:
    rgba = torch.zeros(batch, 16, 24, 4)
    rgba[:, 4:12, 6:18] = torch.tensor([1.0, 0.2, 0.1, 1.0])
    rgba[:, 4:12, 6:8, 3] = 0.5
    return rgba


def test_composite_puts_the_foreground_over_an_opaque_background():
    background = torch.full((1, 16, 24, 3), 0.25)
    rgba, mask, preview = Composite().composite(background, _foreground())
    assert rgba.shape == (1, 16, 24, 4) and preview.shape == (1, 16, 24, 3)
    torch.testing.assert_close(rgba[0, 8, 10], torch.tensor([1.0, 0.2, 0.1, 1.0]))
    torch.testing.assert_close(rgba[0, 8, 6], torch.tensor([0.625, 0.225, 0.175, 1.0]))  # half over background
    torch.testing.assert_close(rgba[0, 0, 0], torch.tensor([0.25, 0.25, 0.25, 1.0]))
    assert mask.max() == 0.0, "an opaque background leaves nothing transparent"
    (stacked, _, _) = Composite().composite(_foreground(3), _foreground(1))
    assert stacked.shape[0] == 3 and stacked[0, 0, 0, 3] == 0.0


def test_composite_refuses_layers_of_different_sizes():
    with pytest.raises(ValueError, match=r"same size \(background 24x16, foreground 20x16\)"):
        Composite().composite(torch.zeros(1, 16, 24, 3), torch.zeros(1, 16, 20, 4))


def test_save_layers_writes_layered_files_and_pngs_into_the_output_folder(output_dir):
    background = torch.rand(2, 16, 24, 3, generator=torch.Generator().manual_seed(0))
    result = SaveLayers().save(background, _foreground(), "sets/cat", "ora + psd + png",
                               layer_names="sky, cat")
    files = sorted(p.name for p in (output_dir / "sets").iterdir())
    assert files == ["cat_00001_.ora", "cat_00001_.psd", "cat_00001_background.png", "cat_00001_foreground.png",
                     "cat_00002_.ora", "cat_00002_.psd", "cat_00002_background.png", "cat_00002_foreground.png"]
    assert [i["filename"] for i in result["ui"]["images"]] == [f for f in files if f.endswith(".png")]
    psd = PSDImage.open(output_dir / "sets" / "cat_00002_.psd")
    assert [layer.name for layer in psd] == ["sky", "cat"] and psd.size == (24, 16)
    cat = np.asarray(psd[1].topil().convert("RGBA"))
    assert cat[0, 0, 3] == 0 and cat[8, 10, 3] == 255 and cat[8, 6, 3] in (127, 128)
    with zipfile.ZipFile(output_dir / "sets" / "cat_00001_.ora") as archive:
        names = [e.get("name") for e in ET.fromstring(archive.read("stack.xml")).iter("layer")]
    assert names == ["cat", "sky"]
    png = Image.open(output_dir / "sets" / "cat_00001_foreground.png")
    assert png.mode == "RGBA" and png.size == (24, 16)
    assert not list(output_dir.rglob("*.part"))


def test_a_png_that_fails_mid_write_leaves_no_partial_file(output_dir, monkeypatch):
    SaveLayers().save(torch.zeros(1, 16, 24, 3), _foreground(), "cat", "png")
    before = {p.name: p.read_bytes() for p in output_dir.iterdir()}
    assert sorted(before) == ["cat_00001_background.png", "cat_00001_foreground.png"]
    written = []

    def writes_some_bytes_then_fails(image, path, *args, **kwargs):  # stands in for PIL's PNG writer
        written.append(path)
        with open(path, "wb") as handle:
            handle.write(b"\x89PNG\r\n\x1a\n")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Image.Image, "save", writes_some_bytes_then_fails)
    with pytest.raises(OSError, match=os.strerror(errno.ENOSPC)):
        SaveLayers().save(torch.zeros(1, 16, 24, 3), _foreground(), "cat", "png")
    assert written, "the failure was injected"
    assert {p.name: p.read_bytes() for p in output_dir.iterdir()} == before, "no partial file, earlier files kept"
