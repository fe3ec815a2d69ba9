"""Atomic writes (common/files.py): the helper itself, then each kind of writer in the pack failing mid-write.

A failed write must leave no temporary file behind and the file it would have replaced as it was. Failures
are injected under the real code: a writer that takes a path (safetensors, torch.save) writes some bytes and
raises; a streamed writer gets a file that takes some bytes and then fails as a full disk does.
"""

from __future__ import annotations

import errno
import io
import os
from pathlib import Path

import pytest
import safetensors.torch
import torch
from comfyui_layer_sketch import queue_workflow
from comfyui_layer_sketch.common import files
from comfyui_layer_sketch.common.training import state
from comfyui_layer_sketch.layer_model import layered_files, pickled_codec, weights
from comfyui_layer_sketch.layer_model.weights import WeightFile, WeightFileError
from comfyui_layer_sketch.sketch_guidance.features import LAYER_SETS
from comfyui_layer_sketch.sketch_guidance.predictor import EdgePredictor, PredictorInfo, save_predictor
from support.payload_server import PAYLOAD, PAYLOAD_SHA, payload_server

OLD = b"the file as it was before"
ROOM = 10  # bytes a failing writer gets onto the disk before it fails


def _full_disk() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _old_file(path: Path) -> Path:
    path.write_bytes(OLD)
    return path


def _contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


class _FullDiskFile(io.FileIO):
    """A file that takes the first ROOM bytes written to it, then fails as a full disk does."""

    def write(self, data) -> int:
        room = ROOM - self.tell()
        written = super().write(bytes(memoryview(data).cast("B")[:max(room, 0)]))
        if written < len(memoryview(data).cast("B")):
            raise _full_disk()
        return written


@pytest.fixture
def full_disk(monkeypatch) -> list[str]:
    """Files the helper opens for streamed writes fail after ROOM bytes; returns the paths opened."""
    opened = []

    def open_failing(path, mode="r", *args, **kwargs):
        assert mode == "wb"
        opened.append(str(path))
        return _FullDiskFile(path, "wb")

    monkeypatch.setattr(files, "open", open_failing, raising=False)  # the helper's `open`, not the builtin
    return opened


@pytest.fixture
def failing_path_writer() -> tuple[list[str], object]:
    """A stand-in for writers called as `writer(obj, path, ...)` (safetensors, torch.save, PIL's Image.save):
    writes some bytes to `path`, then raises."""
    written: list[str] = []

    def writer(_obj, path, *args, **kwargs):
        written.append(str(path))
        with open(path, "wb") as handle:
            handle.write(b"x" * ROOM)
        raise _full_disk()

    return written, writer


def _assert_failed_cleanly(folder: Path, temporaries: list[str], expected: dict[str, bytes]) -> None:
    assert temporaries, "the failure was injected"
    assert all(Path(t).parent == folder for t in temporaries), "temporary files go beside the target"
    assert _contents(folder) == expected, "no temporary file left, the old file untouched"


# --- the helper ----------------------------------------------------------------------------------------------


def test_a_file_appears_complete_with_a_plain_files_mode(tmp_path):
    target = _old_file(tmp_path / "a.bin")
    with files.atomic_file(target) as handle:
        handle.write(b"new ")
        handle.write(b"content")
        assert target.read_bytes() == OLD, "the old file stays until the write is complete"
    assert _contents(tmp_path) == {"a.bin": b"new content"}
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask, "not the owner-only mode of a temporary file"

    with files.atomic_path(tmp_path / "b.bin") as path:
        Path(path).write_bytes(b"by path")
    files.write_bytes(tmp_path / "c.bin", b"in memory")
    assert _contents(tmp_path) == {"a.bin": b"new content", "b.bin": b"by path", "c.bin": b"in memory"}


@pytest.mark.parametrize("failure", [RuntimeError("writer failed"), KeyboardInterrupt()])
def test_a_failure_mid_write_leaves_no_temporary_file_and_the_old_file(tmp_path, failure):
    target = _old_file(tmp_path / "a.bin")
    with pytest.raises(type(failure)):
        with files.atomic_file(target) as handle:
            handle.write(b"partial")
            handle.flush()
            raise failure
    assert _contents(tmp_path) == {"a.bin": OLD}
    with pytest.raises(type(failure)):
        with files.atomic_path(target) as path:
            Path(path).write_bytes(b"partial")
            raise failure
    assert _contents(tmp_path) == {"a.bin": OLD}


def test_a_writer_that_leaves_no_file_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        with files.atomic_path(tmp_path / "a.bin") as path:
            os.remove(path)
    assert _contents(tmp_path) == {}


def test_temporary_names_are_unique_and_beside_the_target(tmp_path):
    target = tmp_path / "a.bin"
    with files.atomic_path(target) as first, files.atomic_path(target) as second:
        assert first != second and Path(first).parent == Path(second).parent == tmp_path
        assert Path(first).name.startswith(".a.bin.") and first.endswith(".part")
        Path(first).write_bytes(b"first")
        Path(second).write_bytes(b"second")
    assert _contents(tmp_path) == {"a.bin": b"first"}, "the write that ends last wins, whole"


# --- each kind of writer ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("write", [layered_files.write_ora, layered_files.write_psd])
def test_layered_file_writers(tmp_path, full_disk, write):
    target = _old_file(tmp_path / "layers.file")
    layer = torch.zeros(8, 8, 4, dtype=torch.uint8).numpy()
    with pytest.raises(OSError, match=os.strerror(errno.ENOSPC)):
        write(str(target), [layer, layer], ["background", "foreground"])
    _assert_failed_cleanly(tmp_path, full_disk, {"layers.file": OLD})


def test_predictor_save(tmp_path, monkeypatch, failing_path_writer):
    written, writer = failing_path_writer
    monkeypatch.setattr(safetensors.torch, "save_file", lambda state, path, metadata=None: writer(state, path))
    target = _old_file(tmp_path / "edges.safetensors")
    with pytest.raises(OSError):
        save_predictor(EdgePredictor(PredictorInfo("SD15", "paper", LAYER_SETS["paper"], 24)), str(target))
    _assert_failed_cleanly(tmp_path, written, {"edges.safetensors": OLD})


def test_training_state_save(tmp_path, monkeypatch, failing_path_writer):
    written, writer = failing_path_writer
    monkeypatch.setattr(torch, "save", writer)
    target = _old_file(tmp_path / "edges.safetensors.state.pt")
    predictor = torch.nn.Linear(2, 2)
    parts = {"predictor": predictor.state_dict(), "optimizer": torch.optim.Adam(predictor.parameters()).state_dict()}
    with pytest.raises(OSError):
        state.save(str(target), {"run": 1}, 1, [0.5], parts)
    _assert_failed_cleanly(tmp_path, written, {"edges.safetensors.state.pt": OLD})


def test_codec_conversion(tmp_path, monkeypatch, failing_path_writer):
    written, writer = failing_path_writer
    # The published shapes, uninitialised: the write fails before a value is read.
    state = {key: torch.empty(shape, dtype=torch.float16) for key, shape in pickled_codec.expected_shapes().items()}
    monkeypatch.setattr(pickled_codec, "read_pickled_state", lambda path: state)
    monkeypatch.setattr(safetensors.torch, "save_file", lambda tensors, path, metadata=None: writer(tensors, path))
    target = _old_file(tmp_path / "TransparentVAE.safetensors")
    with pytest.raises(WeightFileError, match="Could not write the converted TransparentVAE.safetensors"):
        pickled_codec.convert_pickled_codec(str(tmp_path / "TransparentVAE.pth"), str(target))
    _assert_failed_cleanly(tmp_path, written, {"TransparentVAE.safetensors": OLD})


@pytest.fixture(scope="module")
def server_url():
    with payload_server() as base:
        yield base


def test_weight_download(server_url, tmp_path, monkeypatch, full_disk):
    monkeypatch.setenv(weights.BASE_URL_ENV, server_url)
    target = _old_file(tmp_path / "good.bin")  # a stale copy that download() is asked to replace
    with pytest.raises(WeightFileError, match=os.strerror(errno.ENOSPC)):
        weights.download(WeightFile("good.bin", weights.SD15, "decoder", PAYLOAD_SHA, "payload"), str(tmp_path))
    _assert_failed_cleanly(tmp_path, full_disk, {target.name: OLD})


def test_weight_download_interrupted_by_ctrl_c(server_url, tmp_path, monkeypatch):
    monkeypatch.setenv(weights.BASE_URL_ENV, server_url)

    def interrupt(done: int, total: int | None) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        weights.download(WeightFile("good.bin", weights.SD15, "decoder", PAYLOAD_SHA, "payload"), str(tmp_path),
                         progress=interrupt)
    assert _contents(tmp_path) == {}


def _saved_image() -> queue_workflow.PromptResult:
    image = {"filename": "good.bin", "subfolder": "", "type": "output"}
    return queue_workflow.PromptResult("1", "success", {"9": {"images": [image]}})


def test_queue_client_image_download(server_url, tmp_path, full_disk):
    target = _old_file(tmp_path / "good.bin")
    with pytest.raises(OSError, match=os.strerror(errno.ENOSPC)):
        queue_workflow.download(server_url, _saved_image(), tmp_path)
    _assert_failed_cleanly(tmp_path, full_disk, {target.name: OLD})


def test_queue_client_image_download_lands_in_place(server_url, tmp_path):
    assert queue_workflow.download(server_url, _saved_image(), tmp_path) == [tmp_path / "good.bin"]
    assert _contents(tmp_path) == {"good.bin": PAYLOAD}
