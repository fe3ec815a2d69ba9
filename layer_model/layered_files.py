"""Layered image files that editors open with their layers: OpenRaster (.ora) and Photoshop (.psd).

Layers are straight-alpha RGBA uint8 arrays [H,W,4], bottom first, all the same size. Both writers
write atomically (common/files.py): a file appears complete under its name, or not at all.
"""

from __future__ import annotations

import io
import struct
import zipfile
from collections.abc import Sequence
from xml.sax.saxutils import quoteattr

import numpy as np
from PIL import Image

from ._common import files

THUMBNAIL_SIZE = 256


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, "RGBA").save(buffer, format="PNG")
    return buffer.getvalue()


def merged(layers: Sequence[np.ndarray]) -> np.ndarray:
    """The layers composited "over", bottom first, as straight RGBA uint8."""
    out_colour = np.zeros(layers[0].shape[:2] + (3,), np.float64)
    out_alpha = np.zeros(layers[0].shape[:2] + (1,), np.float64)
    for layer in layers:
        alpha = layer[..., 3:] / 255.0
        out_colour = layer[..., :3] / 255.0 * alpha + out_colour * (1.0 - alpha)
        out_alpha = alpha + out_alpha * (1.0 - alpha)
    colour = np.divide(out_colour, out_alpha, out=np.zeros_like(out_colour), where=out_alpha > 0)
    return (np.concatenate([colour, out_alpha], axis=-1) * 255.0).round().clip(0, 255).astype(np.uint8)


def _check(layers: Sequence[np.ndarray], names: Sequence[str]) -> None:
    if not layers:
        raise ValueError("no layers to write")
    if len(names) != len(layers):
        raise ValueError(f"{len(layers)} layers but {len(names)} names")
    shapes = {layer.shape for layer in layers}
    if len(shapes) != 1 or layers[0].ndim != 3 or layers[0].shape[2] != 4 or layers[0].dtype != np.uint8:
        raise ValueError(f"layers must be RGBA uint8 arrays of one size, got {sorted(shapes)}")


def ora_bytes(layers: Sequence[np.ndarray], names: Sequence[str]) -> bytes:
    """An OpenRaster file: `mimetype` first and uncompressed, stack.xml (top layer first), layer PNGs,
    the merged image and a thumbnail."""
    _check(layers, names)
    height, width = layers[0].shape[:2]
    entries = [(f"data/layer{index:03d}.png", _png(layer)) for index, layer in enumerate(layers)]
    stack = "".join(
        f'<layer name={quoteattr(name)} src="data/layer{index:03d}.png" x="0" y="0" opacity="1.0" '
        f'visibility="visible" composite-op="svg:src-over"/>'
        for index, name in reversed(list(enumerate(names))))
    xml = (f"<?xml version='1.0' encoding='UTF-8'?>\n<image version=\"0.0.3\" w=\"{width}\" h=\"{height}\">"
           f"<stack>{stack}</stack></image>\n")
    flat = merged(layers)
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


def write_ora(path: str, layers: Sequence[np.ndarray], names: Sequence[str]) -> None:
    files.write_bytes(path, ora_bytes(layers, names))


def _pascal_name(name: str) -> bytes:
    """Layer name as the PSD layer record wants it: Pascal string (MacRoman), padded to 4 bytes."""
    raw = name.encode("mac_roman", errors="replace")[:255]
    data = bytes([len(raw)]) + raw
    return data + b"\0" * (-len(data) % 4)


def _unicode_name(name: str) -> bytes:
    """The 'luni' additional layer information block: the full name in UTF-16."""
    text = name.encode("utf-16-be")
    body = struct.pack(">I", len(name)) + text
    body += b"\0" * (-len(body) % 4)
    return b"8BIM" + b"luni" + struct.pack(">I", len(body)) + body


def psd_bytes(layers: Sequence[np.ndarray], names: Sequence[str]) -> bytes:
    """An 8-bit RGB Photoshop file with one pixel layer per input (with transparency) and the merged image."""
    _check(layers, names)
    height, width = layers[0].shape[:2]
    records, channel_data = b"", b""
    for name, layer in zip(names, layers, strict=True):
        planes = [(-1, layer[..., 3]), (0, layer[..., 0]), (1, layer[..., 1]), (2, layer[..., 2])]
        records += struct.pack(">iiiiH", 0, 0, height, width, len(planes))
        for channel_id, plane in planes:
            records += struct.pack(">hI", channel_id, 2 + plane.size)
            channel_data += struct.pack(">H", 0) + np.ascontiguousarray(plane).tobytes()  # 0: raw
        extra = struct.pack(">I", 0) + struct.pack(">I", 0) + _pascal_name(name) + _unicode_name(name)
        # blend mode "normal", opacity 255, clipping base, flags 0 (visible), filler
        records += b"8BIM" + b"norm" + struct.pack(">BBBB", 255, 0, 0, 0) + struct.pack(">I", len(extra)) + extra
    # A negative count says the merged image's first extra channel is its transparency.
    layer_info = struct.pack(">h", -len(layers)) + records + channel_data
    layer_info += b"\0" * (len(layer_info) % 2)
    layer_section = struct.pack(">I", len(layer_info)) + layer_info + struct.pack(">I", 0)  # no global mask
    flat = merged(layers)
    header = b"8BPS" + struct.pack(">H6xHIIHH", 1, 4, height, width, 8, 3)  # v1, 4 channels, 8 bit, RGB
    image = struct.pack(">H", 0) + b"".join(np.ascontiguousarray(flat[..., c]).tobytes() for c in range(4))
    return (header + struct.pack(">I", 0) + struct.pack(">I", 0)  # no colour-mode data, no resources
            + struct.pack(">I", len(layer_section)) + layer_section + image)


def write_psd(path: str, layers: Sequence[np.ndarray], names: Sequence[str]) -> None:
    files.write_bytes(path, psd_bytes(layers, names))
