"""Layered image files that editors open with their layers: OpenRaster (.ora) and Photoshop (.psd).

A file is a canvas (width, height) and `Layer`s, bottom first: straight-alpha RGBA uint8 pixels [H,W,4] of
any size, placed at an offset (which may reach past the canvas), with an opacity, a blend mode named as
the host's layer stack names them (`BLEND_MODES`), and visibility. Both writers write atomically
(common/files.py): a file appears complete under its name, or not at all.

The flat picture stored beside the layers (for viewers that do not read layers) is the visible layers
composited "normal" with their opacity; editors that read layers apply each layer's own blend mode.
"""

from __future__ import annotations

import io
import struct
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from xml.sax.saxutils import quoteattr

import numpy as np
from PIL import Image

from ._common import files

THUMBNAIL_SIZE = 256

# Host blend mode -> (OpenRaster composite-op, PSD blend key); None where the format has no equivalent.
# OpenRaster's ops are the SVG/W3C compositing names; linear dodge (svg:plus also adds alpha), exclusion
# and the Photoshop-only light modes have none there. GIMP's grain modes exist in neither format.
BLEND_MODES: dict[str, tuple[str | None, str | None]] = {
    "normal": ("svg:src-over", "norm"), "multiply": ("svg:multiply", "mul "), "screen": ("svg:screen", "scrn"),
    "overlay": ("svg:overlay", "over"), "darken": ("svg:darken", "dark"), "lighten": ("svg:lighten", "lite"),
    "color-dodge": ("svg:color-dodge", "div "), "color-burn": ("svg:color-burn", "idiv"),
    "hard-light": ("svg:hard-light", "hLit"), "soft-light": ("svg:soft-light", "sLit"),
    "difference": ("svg:difference", "diff"), "exclusion": (None, "smud"), "linear-dodge": (None, "lddg"),
    "linear-burn": (None, "lbrn"), "vivid-light": (None, "vLit"), "pin-light": (None, "pLit"),
    "linear-light": (None, "lLit"), "hard-mix": (None, "hMix"), "subtract": (None, "fsub"),
    "divide": (None, "fdiv"), "grain-extract": (None, None), "grain-merge": (None, None),
    "hue": ("svg:hue", "hue "), "saturation": ("svg:saturation", "sat "), "color": ("svg:color", "colr"),
    "luminosity": ("svg:luminosity", "lum "),
}
FORMAT_COLUMN = {"ora": 0, "psd": 1}


@dataclass(frozen=True)
class Layer:
    pixels: np.ndarray  # [H,W,4] uint8, straight alpha
    name: str
    x: int = 0
    y: int = 0
    opacity: float = 1.0
    blend: str = "normal"
    visible: bool = True


def full_canvas(layers: Sequence[np.ndarray], names: Sequence[str]) -> tuple[tuple[int, int], list[Layer]]:
    """Same-size arrays as layers covering the canvas, bottom first: the form the two-to-four-slot node saves."""
    if len(names) != len(layers):
        raise ValueError(f"{len(layers)} layers but {len(names)} names")
    shapes = {layer.shape for layer in layers}
    if len(shapes) > 1:
        raise ValueError(f"layers must be RGBA uint8 arrays of one size, got {sorted(shapes)}")
    stack = [Layer(pixels, name) for pixels, name in zip(layers, names, strict=True)]
    return (stack[0].pixels.shape[1], stack[0].pixels.shape[0]) if stack else (0, 0), stack


def check(canvas: tuple[int, int], layers: Sequence[Layer], formats: Sequence[str] = ("ora", "psd")) -> None:
    """Refuse, before anything is written, what the files cannot hold: naming the layer and what to do."""
    if not layers:
        raise ValueError("no layers to write")
    if canvas[0] < 1 or canvas[1] < 1:
        raise ValueError(f"the canvas must be at least 1x1 px, got {canvas[0]}x{canvas[1]}")
    for layer in layers:
        pixels = layer.pixels
        if pixels.ndim != 3 or pixels.shape[2] != 4 or pixels.dtype != np.uint8 or 0 in pixels.shape:
            raise ValueError(f"layer {layer.name!r}: pixels must be a non-empty RGBA uint8 array [H,W,4], "
                             f"got {pixels.dtype} {pixels.shape}")
        if layer.blend not in BLEND_MODES:
            raise ValueError(f"layer {layer.name!r}: unknown blend mode {layer.blend!r}")
        for fmt in formats:
            if BLEND_MODES[layer.blend][FORMAT_COLUMN[fmt]] is None:
                able = [f for f in FORMAT_COLUMN if BLEND_MODES[layer.blend][FORMAT_COLUMN[f]] is not None]
                where = f"only {' and '.join(able).upper()} has it" if able else "neither ORA nor PSD has it"
                raise ValueError(f"layer {layer.name!r} uses blend mode {layer.blend!r}, which {fmt.upper()} "
                                 f"cannot store ({where}). Pick another format or another blend mode.")


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, "RGBA").save(buffer, format="PNG")
    return buffer.getvalue()


def merged(layers: Sequence[np.ndarray | Layer], canvas: tuple[int, int] | None = None) -> np.ndarray:
    """The visible layers composited "over" (each at its offset, times its opacity), bottom first, as straight
    RGBA uint8 of the canvas size (the first layer's size when none is given)."""
    stack = [layer if isinstance(layer, Layer) else Layer(layer, "") for layer in layers]
    width, height = canvas or (stack[0].pixels.shape[1], stack[0].pixels.shape[0])
    out_colour = np.zeros((height, width, 3), np.float64)
    out_alpha = np.zeros((height, width, 1), np.float64)
    for layer in stack:
        if not layer.visible:
            continue
        x0, y0 = max(layer.x, 0), max(layer.y, 0)
        x1 = min(layer.x + layer.pixels.shape[1], width)
        y1 = min(layer.y + layer.pixels.shape[0], height)
        if x0 >= x1 or y0 >= y1:
            continue  # wholly off the canvas
        part = layer.pixels[y0 - layer.y:y1 - layer.y, x0 - layer.x:x1 - layer.x]
        alpha = part[..., 3:] / 255.0 * layer.opacity
        below_colour, below_alpha = out_colour[y0:y1, x0:x1], out_alpha[y0:y1, x0:x1]
        out_colour[y0:y1, x0:x1] = part[..., :3] / 255.0 * alpha + below_colour * (1.0 - alpha)
        out_alpha[y0:y1, x0:x1] = alpha + below_alpha * (1.0 - alpha)
    colour = np.divide(out_colour, out_alpha, out=np.zeros_like(out_colour), where=out_alpha > 0)
    return (np.concatenate([colour, out_alpha], axis=-1) * 255.0).round().clip(0, 255).astype(np.uint8)


def ora_document(canvas: tuple[int, int], layers: Sequence[Layer]) -> bytes:
    """An OpenRaster file: `mimetype` first and uncompressed, stack.xml (top layer first), layer PNGs at their
    own size placed by x/y, the merged image and a thumbnail."""
    check(canvas, layers, ("ora",))
    width, height = canvas
    entries = [(f"data/layer{index:03d}.png", _png(layer.pixels)) for index, layer in enumerate(layers)]
    stack = "".join(
        f'<layer name={quoteattr(layer.name)} src="data/layer{index:03d}.png" x="{layer.x}" y="{layer.y}" '
        f'opacity="{layer.opacity:.6g}" visibility="{"visible" if layer.visible else "hidden"}" '
        f'composite-op="{BLEND_MODES[layer.blend][0]}"/>'
        for index, layer in reversed(list(enumerate(layers))))
    xml = (f"<?xml version='1.0' encoding='UTF-8'?>\n<image version=\"0.0.3\" w=\"{width}\" h=\"{height}\">"
           f"<stack>{stack}</stack></image>\n")
    flat = merged(layers, canvas)
    thumbnail = Image.fromarray(flat, "RGBA")
    thumbnail.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(zipfile.ZipInfo("mimetype"), b"image/openraster", compress_type=zipfile.ZIP_STORED)
        archive.writestr("stack.xml", xml, compress_type=zipfile.ZIP_DEFLATED)
        for source, data in entries:
            archive.writestr(source, data, compress_type=zipfile.ZIP_STORED)  # PNGs are compressed already
        archive.writestr("mergedimage.png", _png(flat), compress_type=zipfile.ZIP_STORED)
        archive.writestr("Thumbnails/thumbnail.png", _png(np.asarray(thumbnail)), compress_type=zipfile.ZIP_STORED)
    return buffer.getvalue()


def ora_bytes(layers: Sequence[np.ndarray], names: Sequence[str]) -> bytes:
    return ora_document(*full_canvas(layers, names))


def write_ora(path: str, layers: Sequence[np.ndarray], names: Sequence[str]) -> None:
    files.write_bytes(path, ora_bytes(layers, names))


def write_ora_document(path: str, canvas: tuple[int, int], layers: Sequence[Layer]) -> None:
    files.write_bytes(path, ora_document(canvas, layers))


def _pascal_name(name: str) -> bytes:
    """Layer name as the PSD layer record wants it: Pascal string (MacRoman), padded to 4 bytes."""
    raw = name.encode("mac_roman", errors="replace")[:255]
    data = bytes([len(raw)]) + raw
    return data + b"\0" * (-len(data) % 4)


def _unicode_name(name: str) -> bytes:
    """The 'luni' additional layer information block: the full name in UTF-16."""
    text = name.encode("utf-16-be")
    body = struct.pack(">I", len(text) // 2) + text
    body += b"\0" * (-len(body) % 4)
    return b"8BIM" + b"luni" + struct.pack(">I", len(body)) + body


def _psd_record(layer: Layer) -> tuple[bytes, bytes]:
    """One layer record (bounds, channels, blend, opacity, flags, name) and its raw channel data."""
    height, width = layer.pixels.shape[:2]
    planes = [(-1, layer.pixels[..., 3]), (0, layer.pixels[..., 0]), (1, layer.pixels[..., 1]),
              (2, layer.pixels[..., 2])]
    record = struct.pack(">iiiiH", layer.y, layer.x, layer.y + height, layer.x + width, len(planes))
    data = b""
    for channel_id, plane in planes:
        record += struct.pack(">hI", channel_id, 2 + plane.size)
        data += struct.pack(">H", 0) + np.ascontiguousarray(plane).tobytes()  # 0: raw
    extra = struct.pack(">I", 0) + struct.pack(">I", 0) + _pascal_name(layer.name) + _unicode_name(layer.name)
    opacity = round(min(max(layer.opacity, 0.0), 1.0) * 255)
    flags = 0 if layer.visible else 2  # bit 1: hidden
    record += (b"8BIM" + BLEND_MODES[layer.blend][1].encode("ascii") + struct.pack(">BBBB", opacity, 0, flags, 0)
               + struct.pack(">I", len(extra)) + extra)
    return record, data


def _matted_on_white(flat: np.ndarray) -> np.ndarray:
    """Photoshop stores a transparent document's flat picture over white (readers take the white back out)."""
    alpha = flat[..., 3:] / 255.0
    colour = flat[..., :3] * alpha + 255.0 * (1.0 - alpha)
    return np.concatenate([colour.round().astype(np.uint8), flat[..., 3:]], axis=-1)


def psd_document(canvas: tuple[int, int], layers: Sequence[Layer]) -> bytes:
    """An 8-bit RGB Photoshop file with one pixel layer per input (with transparency) and the merged image."""
    check(canvas, layers, ("psd",))
    width, height = canvas
    parts = [_psd_record(layer) for layer in layers]
    # A negative count says the merged image's first extra channel is its transparency.
    layer_info = (struct.pack(">h", -len(layers)) + b"".join(record for record, _ in parts)
                  + b"".join(data for _, data in parts))
    layer_info += b"\0" * (len(layer_info) % 2)
    layer_section = struct.pack(">I", len(layer_info)) + layer_info + struct.pack(">I", 0)  # no global mask
    flat = _matted_on_white(merged(layers, canvas))
    header = b"8BPS" + struct.pack(">H6xHIIHH", 1, 4, height, width, 8, 3)  # v1, 4 channels, 8 bit, RGB
    image = struct.pack(">H", 0) + b"".join(np.ascontiguousarray(flat[..., c]).tobytes() for c in range(4))
    return (header + struct.pack(">I", 0) + struct.pack(">I", 0)  # no colour-mode data, no resources
            + struct.pack(">I", len(layer_section)) + layer_section + image)


def psd_bytes(layers: Sequence[np.ndarray], names: Sequence[str]) -> bytes:
    return psd_document(*full_canvas(layers, names))


def write_psd(path: str, layers: Sequence[np.ndarray], names: Sequence[str]) -> None:
    files.write_bytes(path, psd_bytes(layers, names))


def write_psd_document(path: str, canvas: tuple[int, int], layers: Sequence[Layer]) -> None:
    files.write_bytes(path, psd_document(canvas, layers))
