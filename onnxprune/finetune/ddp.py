"""Distributed data parallel set-up from torchrun's environment, and the training device."""
from __future__ import annotations

import os

__all__ = ["init_distributed", "shutdown_distributed", "pick_device", "wrap_ddp"]


def init_distributed() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; initialises the process group (gloo on
    CPU, NCCL on CUDA). A plain run is (0, 1)."""
    import torch.distributed as dist
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        import torch
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        # tear the group down before interpreter exit: a gloo group left to the destructors can
        # abort the process ("terminate called without an active exception")
        import atexit
        atexit.register(lambda: dist.is_initialized() and dist.destroy_process_group())
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def shutdown_distributed() -> None:
    """Wait for every rank, then tear the process group down (a group left to the interpreter's
    exit can abort a rank with "terminate called without an active exception")."""
    import torch.distributed as dist
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def pick_device(name: str):
    """``auto``: CUDA when available, else CPU; under torchrun each rank takes its local GPU."""
    import torch
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and "LOCAL_RANK" in os.environ and torch.cuda.device_count() > 1:
        name = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return torch.device(name)


def wrap_ddp(module, device, world: int):
    """``module`` itself in one process, else wrapped in DistributedDataParallel."""
    import torch
    if world <= 1:
        return module
    return torch.nn.parallel.DistributedDataParallel(
        module, device_ids=[device.index] if device.type == "cuda" else None)
