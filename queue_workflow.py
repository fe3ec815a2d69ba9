"""Queue an API-format workflow on a running ComfyUI, follow it, download what it made (standard library only).

    python -m comfyui_layer_sketch.queue_workflow WORKFLOW.json [--server URL] [--set NODE.INPUT=VALUE ...] [--out DIR]

Run it from ComfyUI/custom_nodes (or anywhere this folder is importable), with any Python 3.10+.
NODE is a node id, a node's title (`_meta.title`) or a class name used once in the graph; VALUE is
read as JSON when it parses (numbers, true/false, lists) and as text otherwise. Progress comes over the
server's websocket (by polling when that is not reachable); the exit status is 0 on success, 1 when
the workflow failed while running, 2 when the server refused it; the host's message is printed.

The module's name shadows no standard-library module: scripts started from the pack's folder (such as
`python -m sketch_guidance.train`) have the folder first on sys.path (tests/unit/test_entry_points.py).
"""

from __future__ import annotations

from .headless import main

if __name__ == "__main__":
    raise SystemExit(main())
