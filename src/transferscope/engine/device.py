"""Where to compute: ``resolve_device("auto" | "cpu" | "cuda" | "cuda:N" | "mps")`` and the
autocast dtype of a precision (``fp32``, ``bf16``, ``fp16``).

``auto`` is the process's GPU under torchrun with NCCL, else the first CUDA GPU when there is
one, else the CPU. Asking for a device this machine lacks is a one-line
:class:`~transferscope.errors.ConfigError` (the CLI exits with status 2), never a traceback.

Example:
    >>> resolve_device("cpu")
    device(type='cpu')
    >>> amp_dtype("bf16")
    torch.bfloat16
"""

from __future__ import annotations

import re

import torch

from transferscope.errors import ConfigError

__all__ = ["amp_dtype", "check_amp", "DEVICES", "PRECISIONS", "resolve_device", "to_device"]

DEVICES = "auto, cpu, cuda, cuda:N, mps"
PRECISIONS = ("fp32", "bf16", "fp16")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """The ``torch.device`` named by ``device`` (None = ``"auto"``), checked to exist."""
    if isinstance(device, torch.device):
        device = str(device)
    name = (device or "auto").strip().lower()
    if name == "auto":
        from transferscope.engine import distributed

        world = distributed.world()
        if world.size > 1:
            return world.device
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    m = re.fullmatch(r"cuda(?::(\d+))?", name)
    if m:
        if not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "without CUDA"
            raise ConfigError(f"device {device!r}: no CUDA GPU here (torch {torch.__version__} "
                              f"built {build}, torch.cuda.is_available() is False); use "
                              "--device cpu or --device auto")
        index = int(m.group(1) or 0)
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r}: this machine has "
                              f"{torch.cuda.device_count()} CUDA GPU(s), numbered from 0")
        return torch.device("cuda", index)
    if name == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError(f"device {device!r}: Apple's MPS is not available here; use "
                              "--device cpu or --device auto")
        return torch.device("mps")
    raise ConfigError(f"device {device!r}: use one of {DEVICES}")


def amp_dtype(precision: str) -> torch.dtype | None:
    """Autocast dtype of ``precision``: None for fp32, else bfloat16 / float16."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def check_amp(precision: str, device: torch.device) -> None:
    """fp16 autocast is for GPUs; on the CPU (no fp16 kernels worth having) say so."""
    if amp_dtype(precision) is torch.float16 and device.type == "cpu":
        raise ConfigError("precision fp16 needs a GPU (--device cuda); on the CPU use bf16")


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``x.to(device)``; asynchronous (``non_blocking``) from pinned memory to a GPU."""
    return x.to(device, non_blocking=device.type == "cuda")
