"""Layer & Sketch: transparent images, layers and sketch guidance for ComfyUI.

ComfyUI imports this package from `custom_nodes/`; it registers the nodes and the model folders.
"""

from .layer_model.host import register_model_folder
from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

register_model_folder()

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
