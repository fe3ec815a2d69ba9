"""The shipped workflows' example pictures, copied into ComfyUI's input folder so Load Image finds them.

Copied once at start-up, only where no file of that name exists (a user's own file always wins), each
written to a temporary name and renamed, so a half-copied picture never appears in the list.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import folder_paths

EXAMPLES = Path(__file__).resolve().parent.parent / "workflows" / "inputs"


def install_example_inputs() -> list[str]:
    """Copy missing example pictures into the input folder; return the names copied."""
    target = Path(folder_paths.get_input_directory())
    copied = []
    for picture in sorted(EXAMPLES.glob("*.png")):
        if (target / picture.name).exists():
            continue
        try:
            _copy_atomically(picture, target / picture.name)
            copied.append(picture.name)
        except OSError as error:  # a read-only input folder: the workflows still load, minus the example
            logging.warning("Layer & Sketch: could not copy the example picture %s into %s: %s",
                            picture.name, target, error)
    return copied


def _copy_atomically(source: Path, destination: Path) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=destination.parent, prefix=f".{source.stem}-", suffix=".part")
    os.close(handle)
    try:
        shutil.copyfile(source, temporary)
        os.replace(temporary, destination)
    finally:
        Path(temporary).unlink(missing_ok=True)
