"""Gradients through modules whose weights are inference tensors (plain torch).

ComfyUI runs nodes under `torch.inference_mode()`, so models its loaders build have inference tensors as
weights, which autograd refuses to save for backward. Sketch guidance (a UNet) and the codec trainer (a host
VAE) differentiate through such models; the views here let them do it without copying the weights.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


def _normal_view(tensor: torch.Tensor) -> torch.Tensor:
    """A normal (non-inference) tensor on the same memory: autograd may save it, nothing is copied."""
    view = torch.empty(0, dtype=tensor.dtype, device=tensor.device)
    view.set_(tensor.untyped_storage(), tensor.storage_offset(), tensor.shape, tensor.stride())
    return view


@contextmanager
def normal_tensor_views(module: nn.Module, freeze: bool = False) -> Iterator[int]:
    """Within the block, the module's inference-mode parameters and buffers are normal tensors on the
    same memory, so gradients can flow through it; yields how many were swapped. Restored afterwards.

    Hosts that load weights under `torch.inference_mode()` create inference tensors, which autograd
    refuses to save for backward; copying them would double the model's memory. `freeze` also swaps the
    parameters that require grad for views that do not: a backward pass then reaches the module's inputs only,
    and the host's module, whose weights it left trainable, is not changed.
    """
    swapped: list[tuple[nn.Module, str, str, torch.Tensor]] = []
    with torch.inference_mode(False):
        for owner in module.modules():
            for kind, table in (("param", owner._parameters), ("buffer", owner._buffers)):
                for name, tensor in list(table.items()):
                    data = tensor.data if isinstance(tensor, nn.Parameter) else tensor
                    if type(data) is not torch.Tensor:  # quantised tensors: skip
                        continue
                    if data.is_inference():
                        view = _normal_view(data)
                    elif freeze and kind == "param" and tensor.requires_grad:
                        view = data.detach()
                    else:
                        continue
                    table[name] = nn.Parameter(view, requires_grad=False) if kind == "param" else view
                    swapped.append((owner, kind, name, tensor))
    try:
        yield len(swapped)
    finally:
        for owner, kind, name, original in reversed(swapped):
            (owner._parameters if kind == "param" else owner._buffers)[name] = original


class InferenceTensorsAsNormal(torch.overrides.TorchFunctionMode):
    """Within the mode, torch functions see every inference tensor they are given as a normal tensor on the
    same memory, so autograd may save it for the backward pass.

    Other packs keep tensors they made under the host's inference mode in their patches (IP-Adapter's image
    embeddings and masks, attention weights); the guided UNet call runs them with gradients on, where
    autograd would refuse to save them. Nothing is copied and the packs' objects are not touched.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*_as_normal(args), **_as_normal(kwargs or {}))


def _as_normal(value):
    if isinstance(value, torch.Tensor):
        if type(value) in (torch.Tensor, nn.Parameter) and value.is_inference():
            return _normal_view(value)
        return value
    if type(value) in (list, tuple):
        return type(value)(_as_normal(v) for v in value)
    if isinstance(value, dict):
        return {k: _as_normal(v) for k, v in value.items()}
    return value
