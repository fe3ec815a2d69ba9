"""The one module of `common` that imports ComfyUI: what both libraries and the nodes ask of the host alike.

A MODEL's family, a prompt's conditioning, model-folder registration, the output folder, the host's intermediate
device and progress bar, and the start-up copy of the workflows' example pictures into the input folder.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import comfy.latent_formats
import comfy.model_management as mm
import comfy.utils
import folder_paths
import torch

from . import families, files

_FAMILY_OF_LATENT_FORMAT = {comfy.latent_formats.SDXL: families.SDXL, comfy.latent_formats.SD15: families.SD15,
                            comfy.latent_formats.Flux: families.FLUX}
EXAMPLES = Path(__file__).resolve().parent.parent / "workflows" / "inputs"


def model_family(model, supported: tuple[str, ...], refusal: str) -> str:
    """The MODEL's family (SD1.5, SDXL or FLUX), read from its own latent space, if it is one of `supported`.

    Otherwise ValueError(`refusal`): the caller says why its feature needs those families; `{model}` in
    it names the MODEL's config class (e.g. SD3, Flux2).
    """
    family = _FAMILY_OF_LATENT_FORMAT.get(type(model.model.latent_format))
    if family not in supported:
        raise ValueError(refusal.format(model=type(model.model.model_config).__name__))
    return family


def encode_prompt(clip, text: str) -> list:
    """CONDITIONING of `text` as CLIP Text Encode makes it."""
    return clip.encode_from_tokens_scheduled(clip.tokenize(text))


def register_model_folder(name: str, extensions: set[str]) -> None:
    """Make `models/<name>` a host model folder listing files with `extensions`; extra_model_paths.yaml may add
    more."""
    # Folders from extra_model_paths.yaml (read before packs load) stay first: downloads land there.
    folder_paths.add_model_folder_path(name, os.path.join(folder_paths.models_dir, name))
    paths, known = folder_paths.folder_names_and_paths[name]
    # The yaml loader may have created the entry first with no extensions; the host then lists nothing.
    folder_paths.folder_names_and_paths[name] = (paths, set(known) | extensions)


def intermediate_device() -> torch.device:
    """Where node outputs (IMAGE, MASK) live between nodes."""
    return mm.intermediate_device()


def progress_bar(total: int) -> comfy.utils.ProgressBar:
    """The host's progress bar, shown on the running node in the editor."""
    return comfy.utils.ProgressBar(total)


def progress_text(text: str, node_id: str | None) -> None:
    """A line of text under the running node in the editor (the running losses of a training); nothing when
    the node runs without a server (a script, a test) or without its id."""
    try:
        from server import PromptServer
    except ImportError:
        return
    server = getattr(PromptServer, "instance", None)
    if server is not None and node_id is not None:
        server.send_progress_text(text, node_id)


def output_path(filename_prefix: str, width: int, height: int) -> tuple[str, str, int, str]:
    """(folder, file stem, first free counter, subfolder) in the output folder, as Save Image numbers files."""
    folder, stem, counter, subfolder, _ = folder_paths.get_save_image_path(
        filename_prefix, folder_paths.get_output_directory(), width, height)
    return folder, stem, counter, subfolder


def install_example_inputs() -> list[str]:
    """Copy the shipped workflows' example pictures into the input folder, so Load Image finds them.

    Run once at start-up. Only where no file of that name exists (a user's own file always wins), each
    written to a temporary name and renamed, so a half-copied picture never appears in the list.
    Returns the names copied.
    """
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
    with files.atomic_path(destination) as temporary:
        shutil.copyfile(source, temporary)
