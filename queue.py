"""Queue an API-format workflow on a running ComfyUI, follow it, download what it made (standard library only).

    python -m comfyui_layer_sketch.queue WORKFLOW.json [--server URL] [--set NODE.INPUT=VALUE ...] [--out DIR]

Run it from ComfyUI/custom_nodes (or anywhere this folder is importable), with any Python 3.10+.
NODE is a node id, a node's title (`_meta.title`) or a class name used once in the graph; VALUE is
read as JSON when it parses (numbers, true/false, lists) and as text otherwise. Progress comes over the
server's websocket (by polling when that is not reachable); the exit status is 0 on success, 1 when
the workflow failed while running, 2 when the server refused it; the host's message is printed.
"""

from __future__ import annotations

if __name__ == "queue":  # pragma: no cover - imported as the standard library's `queue` by mistake
    # A script started from this folder has it first on sys.path, so `import queue` finds this file.
    # Become the standard library module, so that such scripts (python -m sketch_guidance.train) work.
    import importlib.util as _util
    import os as _os
    import sys as _sys
    import sysconfig as _sysconfig

    _spec = _util.spec_from_file_location("queue", _os.path.join(_sysconfig.get_path("stdlib"), "queue.py"))
    _stdlib = _util.module_from_spec(_spec)
    _sys.modules["queue"] = _stdlib
    _spec.loader.exec_module(_stdlib)
else:
    from .headless import main

    if __name__ == "__main__":
        raise SystemExit(main())
