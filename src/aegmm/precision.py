"""The arithmetic training computes in: float32, or bfloat16 / float16 autocast (TrainConfig.precision)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from . import distributed
from .config import TrainConfig, auto_precision


@dataclass(frozen=True)
class Precision:
    """How a training step computes: autocast's dtype (None: float32 throughout) and loss scaling."""

    dtype: torch.dtype | None
    scale_loss: bool  # float16 gradients underflow without a GradScaler; bfloat16 ones do not


def precision_plan(
    precision: str, device_type: str, bf16_supported: bool = False, objective: str = "reconstruction"
) -> Precision:
    """The arithmetic of TrainConfig.precision on a device type ("cpu", "cuda", "mps").

    auto: `config.auto_precision` of the objective (mixed precision on CUDA; bfloat16 for the
    contrastive objectives on a CPU with bfloat16 instructions; float32 otherwise). float16 is for
    CUDA only; bfloat16 on CUDA needs a GPU that supports it.
    """
    if precision == "auto":
        precision = auto_precision(objective, device_type, bf16_supported)
    if precision == "float32":
        return Precision(None, False)
    if precision == "float16":
        if device_type != "cuda":
            raise ValueError(f"precision float16 needs a CUDA GPU, but training runs on {device_type}")
        return Precision(torch.float16, True)
    if device_type == "cuda" and not bf16_supported:
        raise ValueError("precision bfloat16 needs a GPU that supports it; this one does not: use float16")
    if device_type not in ("cpu", "cuda"):
        raise ValueError(f"precision bfloat16 runs on CPU or CUDA, not on {device_type}")
    return Precision(torch.bfloat16, False)


def native_bfloat16(device: torch.device) -> bool:
    """Whether the device computes bfloat16 in hardware: a CUDA GPU that supports it, or a CPU with
    AVX512-BF16 or AMX tiles. Other CPUs emulate it, which is slower than float32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    checks = (
        getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    )
    return any(check() for check in checks if check is not None)


def resolve_on_device(config: TrainConfig, **given) -> tuple[TrainConfig, torch.device]:
    """(config.resolve(**given) for the device it trains on, that device): the precision and, through
    it, the contrastive epochs follow the device."""
    device = distributed.resolve_device(config.device)
    return config.resolve(**given, device_type=device.type, native_bf16=native_bfloat16(device)), device


def device_precision(config: TrainConfig, device: torch.device) -> Precision:
    objective = "reconstruction" if config.objective == "auto" else config.objective
    return precision_plan(config.precision, device.type, native_bfloat16(device), objective)


def autocast(device: torch.device, plan: Precision):
    if plan.dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=plan.dtype)
