"""What the HTTP tests read back from a server after a prompt: the PNG a graph saved, and whether a LoRA the
host's loader took was applied key for key."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from comfyui_layer_sketch import queue_workflow as client
from PIL import Image
from safetensors import safe_open


def saved_png(url: str, output_dir: Path, graph: dict, size: int | tuple[int, int], preview: bool = False,
              timeout: float = 900, mode: str = "RGBA") -> np.ndarray:
    """Run `graph`; the one PNG it saved, in `mode` (RGBA unless said) at `size` (a side or (width, height)), as
    ints. With `preview`, the checkerboard preview must be shown in the UI too."""
    result = client.run(url, graph, timeout=timeout)
    assert result.ok, json.dumps(result.error, indent=1)
    [png] = client.output_paths(result, output_dir)
    image = Image.open(png)
    expected = (size, size) if isinstance(size, int) else size
    assert image.mode == mode and image.size == expected, f"{png.name}: {image.mode} {image.size}"
    if preview:
        assert [i for i in result.images() if i["type"] == "temp"], "the checkerboard preview is shown in the UI"
    return np.asarray(image).astype(int)


def assert_lora_fully_applied(server_log: Path, lora: Path, blocks: tuple[str, ...]) -> list[str]:
    """The host logged no LoRA key it could not place, and the file trains each of `blocks` (key substrings); the
    file's keys."""
    log = server_log.read_text(errors="replace")
    assert "lora key not loaded" not in log, [line for line in log.splitlines() if "lora key not loaded" in line][:5]
    with safe_open(str(lora), "pt") as opened:
        keys = list(opened.keys())
    for block in blocks:
        assert any(block in key for key in keys), f"the LoRA trains {block}*: {keys[:8]}"
    return keys


def install_saved_lora(base: Path, pattern: str, name: str) -> Path:
    """Move the one LoRA Save LoRA wrote (output/loras/`pattern`) into models/loras as `name`, as a user does
    before the use graph loads it."""
    [saved] = (base / "output" / "loras").glob(pattern)
    target = base / "models" / "loras" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(saved, target)
    return target
