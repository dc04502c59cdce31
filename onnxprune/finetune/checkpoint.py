"""Atomic training checkpoints: a run interrupted at any point leaves the previous one intact."""
from __future__ import annotations

import os
from pathlib import Path

from onnxprune.finetune.errors import FinetuneError

__all__ = ["save_checkpoint", "load_checkpoint"]


def save_checkpoint(path: Path, state: dict) -> None:
    """Write ``state`` with torch.save to a temporary file, then rename it over ``path``."""
    import torch
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_checkpoint(path: Path | None, device) -> dict:
    """The state written by :func:`save_checkpoint`; a one-line error when there is none."""
    import torch
    if path is None or not Path(path).exists():
        raise FinetuneError(f"--resume: no checkpoint at {path}")
    try:
        return torch.load(path, map_location=device, weights_only=False)
    except Exception as exc:
        raise FinetuneError(f"{path}: not a readable checkpoint ({str(exc).splitlines()[0]})") from None
