"""Draw the example input pictures the shipped workflows open with (workflows/inputs/*.png).

The pack copies them into ComfyUI's input folder at start-up (when not already there), so every
shipped workflow opens with its Load Image nodes filled and runs as soon as the models are in place.
Drawn with Pillow, deterministic:

    .host/0.30.0/venv/bin/python -P devtools/example_inputs.py
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

OUT = Path(__file__).resolve().parent.parent / "workflows" / "inputs"
PREFIX = "layer_sketch_example_"


def _bottle_outline(size: int) -> list[tuple[float, float]]:
    """A bottle's silhouette (shoulders, neck, body) as a closed polygon, centred."""
    s = size / 512
    points = [(236, 70), (276, 70), (276, 150), (330, 210), (330, 440), (182, 440), (182, 210), (236, 150)]
    return [(x * s, y * s) for x, y in points]


def sketch(size: int = 512) -> Image.Image:
    """Dark pen strokes on white paper: a bottle on a table, a few loose lines."""
    image = Image.new("RGB", (size, size), (250, 248, 244))
    draw = ImageDraw.Draw(image)
    ink, s = (30, 30, 35), size / 512
    draw.line([*_bottle_outline(size), _bottle_outline(size)[0]], fill=ink, width=max(2, round(4 * s)), joint="curve")
    draw.rectangle([230 * s, 52 * s, 282 * s, 72 * s], outline=ink, width=max(2, round(4 * s)))
    draw.rectangle([200 * s, 260 * s, 312 * s, 360 * s], outline=ink, width=max(2, round(3 * s)))
    draw.line([(40 * s, 440 * s), (472 * s, 440 * s)], fill=ink, width=max(2, round(3 * s)))
    draw.ellipse([360 * s, 380 * s, 440 * s, 440 * s], outline=ink, width=max(2, round(3 * s)))
    return image


def shape_reference(size: int = 512) -> Image.Image:
    """A flat-shaded bottle on a soft backdrop: clear outlines for Canny."""
    image = _backdrop(size, (200, 214, 226), (120, 128, 140))
    draw = ImageDraw.Draw(image)
    draw.polygon(_bottle_outline(size), fill=(214, 120, 40))
    s = size / 512
    draw.rectangle([230 * s, 52 * s, 282 * s, 72 * s], fill=(60, 60, 70))
    return image


def background(size: int) -> Image.Image:
    """A table top under a window light: something for a foreground to stand on."""
    image = _backdrop(size, (236, 226, 208), (150, 140, 128))
    draw = ImageDraw.Draw(image)
    s = size / 512
    draw.rectangle([0, 330 * s, size, size], fill=(132, 94, 62))
    draw.rectangle([0, 330 * s, size, 342 * s], fill=(160, 118, 80))
    draw.rectangle([330 * s, 60 * s, 470 * s, 250 * s], fill=(246, 244, 236), outline=(120, 110, 100), width=6)
    return image.filter(ImageFilter.GaussianBlur(1.5 * s))


def transparent_object(size: int = 512) -> Image.Image:
    """A glass bottle with real alpha: opaque cap and label, half-transparent glass, clear background."""
    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    s = size / 512
    draw.polygon(_bottle_outline(size), fill=(90, 170, 120, 110))
    draw.rectangle([200 * s, 260 * s, 312 * s, 360 * s], fill=(236, 230, 210, 255))
    draw.rectangle([230 * s, 52 * s, 282 * s, 72 * s], fill=(40, 40, 48, 255))
    return image


def composite(size: int) -> Image.Image:
    """The glass bottle standing in the table-top scene: a picture with an object to cut out or erase."""
    return Image.alpha_composite(background(size).convert("RGBA"), transparent_object(size)).convert("RGB")


def composite_masked(size: int) -> Image.Image:
    """That picture as ComfyUI's mask editor saves it once the bottle is painted over: alpha 0 where painted (Load
    Image's MASK is 1 - alpha), the colour kept underneath (Load Image's IMAGE)."""
    picture = composite(size).convert("RGBA")
    picture.putalpha(transparent_object(size).getchannel("A").point(lambda alpha: 0 if alpha else 255))
    return picture


def _backdrop(size: int, top: tuple[int, int, int], bottom: tuple[int, int, int]) -> Image.Image:
    column = Image.new("RGB", (1, size))
    for y in range(size):
        t = y / (size - 1)
        column.putpixel((0, y), tuple(round(a + (b - a) * t) for a, b in zip(top, bottom, strict=True)))
    return column.resize((size, size))


def pictures() -> dict[str, Image.Image]:
    return {
        f"{PREFIX}sketch.png": sketch(),
        f"{PREFIX}shape.png": shape_reference(),
        f"{PREFIX}background.png": background(512),
        f"{PREFIX}background_1024.png": background(1024),
        f"{PREFIX}transparent.png": transparent_object(),
        f"{PREFIX}transparent_1024.png": transparent_object(1024),
        f"{PREFIX}composite_1024.png": composite(1024),
        f"{PREFIX}composite_masked_1024.png": composite_masked(1024),
    }


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, picture in pictures().items():
        picture.save(OUT / name, optimize=True)
        print(f"wrote workflows/inputs/{name}")


if __name__ == "__main__":
    main()
