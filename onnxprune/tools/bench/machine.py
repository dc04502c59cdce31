"""What the benchmark ran on: CPU model and cores, GPU, onnxruntime and its working providers, torch."""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys

import numpy as np
import onnx

from onnxprune.runtime import available_providers

__all__ = ["machine_info"]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip().lower() in ("model name", "hardware", "cpu model", "processor") and \
                        value.strip() and not value.strip().isdigit():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _gpu_name() -> str | None:
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_available():
                return torch.cuda.get_device_name(0)
        except Exception:
            pass
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=name", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=10)
            names = [n.strip() for n in out.stdout.splitlines() if n.strip()]
            if out.returncode == 0 and names:
                return ", ".join(names)
        except Exception:
            pass
    return None


def machine_info() -> dict:
    """CPU model and cores, GPU (if any), onnxruntime version and providers, torch version."""
    from importlib import metadata
    import onnxruntime as ort
    try:
        avail = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        avail = os.cpu_count()
    torch_version = None
    if "torch" in sys.modules:
        torch_version = getattr(sys.modules["torch"], "__version__", None)
    if torch_version is None:
        try:
            torch_version = metadata.version("torch")
        except metadata.PackageNotFoundError:
            pass
    return {"cpu": _cpu_model(), "cores": os.cpu_count(), "cores_available": avail,
            "gpu": _gpu_name(), "platform": platform.platform(), "python": platform.python_version(),
            "onnxruntime": ort.__version__, "ort_providers": list(ort.get_available_providers()),
            "ort_providers_working": available_providers("cuda"), "numpy": np.__version__,
            "onnx": onnx.__version__, "torch": torch_version}
