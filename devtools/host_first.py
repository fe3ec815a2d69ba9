"""Imported first by scripts that run in a host's venv (benchmarks, dev scripts, the tests' fixture makers):
ComfyUI imported in-process, configured as `hostimport.import_host` does (CPU-only where there is no CUDA).

    import host_first  # ComfyUI in-process, before its modules and the pack

What the script imports after it finds the host in place: `comfy`, `folder_paths`, `comfy_extras`, and the
pack `comfyui_layer_sketch` (the venv's .pth finds it), whose `__init__` then registers its nodes, model folders
and example inputs as in ComfyUI. ruff keeps this import in its own section above the others and knows it is
imported for this effect (pyproject.toml, [tool.ruff.lint.isort] and [tool.ruff.lint.pyflakes]).
"""

import hostimport

hostimport.import_host()
