"""Process-group helpers: one process, or many under torchrun (gloo on CPU, NCCL on GPU)."""

from __future__ import annotations

import json
import os

import numpy as np
import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank; before the group is joined, the RANK that torchrun set (else 0)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: torch.device) -> None:
    """Join the process group torchrun describes in the environment (no-op otherwise)."""
    if not launched_by_torchrun() or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def mean_over_processes(value: torch.Tensor) -> float:
    """The mean of a scalar over all processes (the value itself in one process)."""
    if world_size() == 1:
        return float(value)
    total = value.float().reshape(1).clone()
    dist.all_reduce(total)
    return float(total) / world_size()


def log_shard(epoch: int, indices: np.ndarray) -> None:
    """With AEGMM_SHARD_LOG=DIR, each process appends the positions it trains on (for tests)."""
    folder = os.environ.get("AEGMM_SHARD_LOG")
    if folder:
        with open(os.path.join(folder, f"rank{rank()}.jsonl"), "a") as handle:
            handle.write(json.dumps({"epoch": epoch, "indices": indices.tolist()}) + "\n")


def resolve_device(name: str | torch.device) -> torch.device:
    """'auto' -> CUDA, then Apple MPS, then CPU; anything else must be available."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            name = "mps"
        else:
            name = "cpu"
    if name not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device must be auto, cpu, cuda or mps, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for, but no CUDA GPU is available; use --device cpu")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device 'mps' was asked for, but Apple MPS is not available; use --device cpu")
    if name == "cuda" and launched_by_torchrun():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device(name)
