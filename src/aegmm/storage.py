"""Safe files: atomic writes, JSON, and safetensors with JSON metadata. Never pickle."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load_file as load_numpy
from safetensors.numpy import save as dump_numpy
from safetensors.torch import load_file as load_torch
from safetensors.torch import save as dump_torch


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes owner-only files; use the usual permissions
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, value: Any) -> None:
    write_atomic(path, (json.dumps(value, indent=2, sort_keys=False) + "\n").encode())


def read_json(path: Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing file {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc})") from None
    except RecursionError:
        raise ValueError(f"{path} is not valid JSON (nested too deeply)") from None


def write_tensors(
    path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> None:
    """Tensors, and optional text metadata in the same file's header (one atomic write)."""
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    write_atomic(path, dump_torch(cpu, metadata=metadata))


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    return _read(path, load_torch)


def read_tensor_metadata(path: Path) -> dict[str, str]:
    """The text metadata stored in a safetensors header ({} when there is none)."""
    return _read(path, _header_metadata)


def _header_metadata(name: str) -> dict[str, str]:
    with safe_open(name, framework="pt") as handle:
        return dict(handle.metadata() or {})


def write_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    write_atomic(path, dump_numpy({k: np.ascontiguousarray(v) for k, v in arrays.items()}))


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    return _read(path, load_numpy)


def _read(path: Path, loader) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing file {path}")
    try:
        return loader(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"{path} is not a valid safetensors file ({exc})") from None


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
