"""Devices and wall-clock timing: which torch device a run may use, and seconds that include the
device's queued work."""
from __future__ import annotations

import time

import torch

from errors import UserError

DEVICE_TYPES = ("cpu", "cuda", "mps")  # the ones the pipeline is written for (not meta, xpu, ...)


def resolve_device(name: str | torch.device, what: str = "--device") -> torch.device:
    """`name` as a device this machine has and the pipeline runs on, or a one-line UserError."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"{what} {name!r} is not a torch device; try cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{what} {name} is not available here (no CUDA GPU); use cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"{what} {name} is not available here: this machine has {torch.cuda.device_count()} "
                        f"CUDA GPU(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"{what} {name} is not available here; use cpu")
    if device.type not in DEVICE_TYPES:
        raise UserError(f"{what} {name}: this tool runs on {', '.join(DEVICE_TYPES)} devices, not {device.type}; "
                        f"use cpu")
    return device


def synchronize(device: torch.device | str) -> None:
    """Wait for `device`'s queued work (CUDA only), so wall-clock timings are complete."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Stopwatch:
    """`with Stopwatch(device) as clock: ...`, then `clock.seconds`: the block's wall-clock time,
    the device's queued work finished at both ends (`synchronize`)."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.device, self.seconds = device, None

    def __enter__(self) -> Stopwatch:
        synchronize(self.device)
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc_info) -> None:
        synchronize(self.device)
        self.seconds = time.perf_counter() - self.start
