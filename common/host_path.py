"""Where the pack's command lines find ComfyUI (standard library only: `--help` needs neither torch nor the host).

The commands run from the pack's folder, ComfyUI/custom_nodes/<pack>, so ComfyUI is two folders up unless
--comfyui or COMFYUI_PATH says otherwise. The host is imported only after `use_comfyui`.
"""

from __future__ import annotations

import sys
from pathlib import Path


def comfyui_root(given: str | None, library_file: str) -> Path:
    """The ComfyUI folder: `given` (--comfyui or COMFYUI_PATH), else the one the pack sits in (ComfyUI/
    custom_nodes/<pack>/<library>/<file>); exits with a message when neither holds ComfyUI."""
    candidates = [Path(given)] if given else [Path(library_file).absolute().parents[3]]
    for root in candidates:
        if (root / "comfy" / "sd.py").is_file():
            return root
    raise SystemExit(f"ComfyUI not found at {candidates[0]}: pass --comfyui DIR or set COMFYUI_PATH.")


def use_comfyui(root: Path, cpu: bool) -> None:
    """Make the host importable and apply --cpu before anything imports comfy.model_management."""
    sys.path.insert(0, str(root))
    from comfy.cli_args import args as host_args

    host_args.cpu = host_args.cpu or cpu
