"""Refuse ``--device gpu`` where it cannot work, before Paddle loads (milliseconds, not the
~18 s a CPU-only install took to fail inside Paddle with a ValueError)."""

from __future__ import annotations

import os
from pathlib import Path

from rtdetr_edge.errors import RtdetrEdgeError
from rtdetr_edge.resource import installed_version

NVIDIA_DRIVER_FILES = ("/dev/nvidiactl", "/proc/driver/nvidia/version")
HIDDEN = ("void", "none", "-1", "")


class DeviceUnavailableError(RtdetrEdgeError):
    code = "device_unavailable"


def gpu_problem(paddle_gpu: str | None, paddle_cpu: str | None, driver_visible: bool,
                nvidia_visible_devices: str | None, cuda_visible_devices: str | None) -> str | None:  # fmt: skip
    """Why a GPU predictor cannot start here (None: nothing known against it). Pure."""
    if paddle_gpu is None:
        have = f"paddlepaddle {paddle_cpu}, a CPU-only build" if paddle_cpu else "no Paddle at all"
        return (f"--device gpu needs the CUDA build of Paddle (paddlepaddle-gpu, in the runtime-gpu image); this "
                f"install has {have}: use --device cpu, or the runtime-gpu image")  # fmt: skip
    for name, value in (("NVIDIA_VISIBLE_DEVICES", nvidia_visible_devices), ("CUDA_VISIBLE_DEVICES", cuda_visible_devices)):
        if value is not None and value.strip().lower() in HIDDEN:
            return f"{name}={value!r} hides every GPU from this process: unset it, or use --device cpu"
    if not driver_visible:
        return ("no NVIDIA driver is visible (no /dev/nvidiactl): run on a GPU node with an nvidia.com/gpu resource "
                "request (the device plugin mounts the driver), or use --device cpu")  # fmt: skip
    return None


def require_gpu() -> None:
    """Raise :class:`DeviceUnavailableError` with the cause and the fix when no GPU can be used."""
    problem = gpu_problem(
        installed_version("paddlepaddle-gpu"), installed_version("paddlepaddle"), any(Path(p).exists() for p in NVIDIA_DRIVER_FILES),
        os.environ.get("NVIDIA_VISIBLE_DEVICES"), os.environ.get("CUDA_VISIBLE_DEVICES"),
    )  # fmt: skip
    if problem:
        raise DeviceUnavailableError(problem)
