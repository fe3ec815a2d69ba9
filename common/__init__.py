"""What both libraries (`layer_model`, `sketch_guidance`) and the pack's scripts share, written once.

Each concern has one module here: atomic file writes, model families, the training skeleton, ... .
Everything is plain Python/torch except `common/host.py`, the one module here that imports ComfyUI.
Nothing here imports either library, so both can use it without importing each other.

Libraries reach these modules through their `_common.py` (`from ._common import files`), which finds
this package both when ComfyUI loads the pack and when a library is run from the pack's folder
(`python -m sketch_guidance.train`, where `common` is a top-level package).
"""
