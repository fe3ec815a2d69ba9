"""Which shipped workflows need a newer host than the floor, and the first supported host each fits (the README
says so): Train LoRA gained inputs and dropped its MODEL output after 0.3.75; Qwen-Image-Layered's nodes came
after it too; Add Layer and the LAYERS type came with 0.33.0."""

from __future__ import annotations

from pathlib import Path

import hostenv

NEEDS_HOST = {"train_transparency_lora_zimage.json": "0.30.0", "train_transparency_lora_sdxl.json": "0.30.0",
              "qwen_image_layered_to_psd.json": "0.30.0", "sd15_joint_layers_to_layer_stack.json": "0.33.0"}


def _version(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def fits_this_host(path: Path) -> bool:
    return _version(hostenv.HOST.version) >= _version(NEEDS_HOST.get(path.name, hostenv.FLOOR.version))
