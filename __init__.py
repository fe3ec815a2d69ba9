"""Layer & Sketch: transparent images, layers and sketch guidance for ComfyUI.

ComfyUI imports this package from `custom_nodes/`; it registers the nodes, the model folders and
the editor extension (`web/`), and puts the workflows' example pictures into the input folder.
Imported outside ComfyUI (`python -m <pack>.queue_workflow` needs no host), it registers nothing.
"""

import importlib.util

# Outside ComfyUI, or loaded as a lone module (pytest imports a checkout's root `__init__.py` under the
# folder's name, which is no package name when the folder is called e.g. `tmp.Ab12`): register nothing.
if importlib.util.find_spec("folder_paths") is None or not __package__:
    NODE_CLASS_MAPPINGS: dict = {}
    NODE_DISPLAY_NAME_MAPPINGS: dict = {}
else:
    from .common import host as common_host
    from .layer_model import host as layer_host
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
    from .sketch_guidance import host as sketch_host

    layer_host.register_model_folder()
    sketch_host.register_model_folder()
    common_host.install_example_inputs()

WEB_DIRECTORY = "./web"  # the editor extension: image previews on a checkerboard

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
