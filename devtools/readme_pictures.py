"""Make the README's pictures from real runs of the shipped workflows (docs/images/*.png).

The runs use the random-weight checkpoint and weight files of the tests (no real weights can be
downloaded here), so the pictures show the pipeline, not image quality: what each workflow outputs,
with transparency on a checkerboard, and are labelled as such.

    .host/0.30.0/venv/bin/python -P devtools/readme_pictures.py
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import host_first  # ComfyUI in-process, before its modules and the pack

import numpy as np
from comfyui_layer_sketch import queue_workflow as client
from PIL import Image, ImageDraw
from support import fixtures, sketches
from support.servers import sd15_setup, start_server

REPO = Path(__file__).resolve().parent.parent
SIZE = 128
OUT = REPO / "docs" / "images"
CACHE = Path(os.environ.get("LAYER_SKETCH_TEST_CACHE", Path.home() / ".cache" / "comfyui-layer-sketch-tests"))
LABEL = "pipeline check: random weights, not image quality"


def _checkerboard(image: Image.Image) -> Image.Image:
    if image.mode != "RGBA":
        return image.convert("RGB")
    ys, xs = np.indices(image.size[::-1])
    board = np.where(((ys // 8) + (xs // 8)) % 2 == 1, 160, 205).astype(np.uint8)
    background = Image.fromarray(np.stack([board] * 3, axis=-1))
    background.paste(image, mask=image.getchannel("A"))
    return background


def _sheet(tiles: list[tuple[str, Image.Image]], title: str) -> Image.Image:
    width = max(SIZE * len(tiles) + 8 * (len(tiles) + 1), 420)  # room for the title
    sheet = Image.new("RGB", (width, SIZE + 56), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    draw.text((8, 4), f"{title}  ({LABEL})", fill=(0, 0, 0))
    for index, (caption, image) in enumerate(tiles):
        x = 8 + index * (SIZE + 8)
        sheet.paste(_checkerboard(image.resize((SIZE, SIZE))), (x, 20))
        draw.text((x, SIZE + 26), caption, fill=(40, 40, 40))
    return sheet


def _run(server, base: Path, name: str, changes: dict[str, dict]) -> client.PromptResult:
    graph = client.load_workflow(REPO / "workflows" / "api" / f"{name}.json")
    for node in graph.values():
        node["inputs"].update(changes.get(node["class_type"], {}))
    result = client.run(server.url, graph, timeout=1800)
    if not result.ok:
        raise RuntimeError(f"{name}: {result.error}")
    return result


def _images(result, base: Path, *fragments: str) -> list[Image.Image]:
    """The saved images whose file names contain each fragment, in the fragments' order."""
    paths = client.output_paths(result, base / "output")
    return [Image.open(next(p for p in paths if fragment in p.name)) for fragment in fragments]


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        def make_dir(name: str) -> Path:
            return Path(tempfile.mkdtemp(prefix=name, dir=scratch))

        base, layer_folder = sd15_setup(make_dir, CACHE)
        (base / "input").mkdir()
        sketch = (sketches.drawn_sketch(4, SIZE)[0].numpy() * 255).astype(np.uint8)
        Image.fromarray(sketch).save(base / "input" / "layer_sketch_example_sketch.png")
        server = start_server(base, layer_folder)
        common = {"CheckpointLoaderSimple": {"ckpt_name": fixtures.SD15_CHECKPOINT},
                  "EmptyLatentImage": {"width": SIZE, "height": SIZE}, "KSampler": {"steps": 4},
                  "LayerDiffuseDecode": {"augmentations": "4"}, "LayerDiffuseDecodeSplit": {"augmentations": "4"},
                  "SketchGuidanceLoadPredictor": {"predictor_name": fixtures.SD15_PREDICTOR}}
        try:
            [rgba] = _images(_run(server, base, "sd15_transparent", common), base, "rgba")
            _sheet([("RGBA output", rgba)], "sd15_transparent").save(OUT / "sd15_transparent.png")
            foreground, background, blended = _images(_run(server, base, "sd15_joint_layers", common), base,
                                                      "joint_foreground", "joint_background", "joint_blended")
            _sheet([("foreground (RGBA)", foreground), ("background", background), ("blended", blended)],
                   "sd15_joint_layers").save(OUT / "sd15_joint_layers.png")
            saved = _images(_run(server, base, "sd15_fg2bg_chain", common), base, "_background", "_foreground",
                            "fox_blended")
            _sheet([("background layer", saved[0]), ("foreground layer", saved[1]), ("blended", saved[2])],
                   "sd15_fg2bg_chain").save(OUT / "sd15_fg2bg_chain.png")
            [guided] = _images(_run(server, base, "sd15_sketch_guided", common), base, "guided")
            _sheet([("sketch", Image.fromarray(sketch)), ("guided result", guided)],
                   "sd15_sketch_guided").save(OUT / "sd15_sketch_guided.png")
        finally:
            server.stop()
    print(f"wrote {sorted(p.name for p in OUT.glob('*.png'))}")


if __name__ == "__main__":
    main()
