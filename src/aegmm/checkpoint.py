"""Training checkpoints: weights and Adam state as safetensors, the rest as JSON, written atomically."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import ModelConfig, TrainConfig
from .storage import read_json, read_tensors, write_json, write_tensors

STATE_FILE = "train_state.safetensors"
META_FILE = "train_state.json"
RESUMABLE = ("epochs", "device")  # settings a resumed run may change


def save_checkpoint(
    folder: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    history: list[dict],
    model_config: ModelConfig,
    train_config: TrainConfig,
) -> None:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    for index, state in opt["state"].items():
        for key, value in state.items():
            tensors[f"optim.{index}.{key}"] = torch.as_tensor(value)
    write_tensors(Path(folder) / STATE_FILE, tensors)
    meta = {
        "epoch": epoch,
        "history": history,
        "param_groups": opt["param_groups"],
        "model": asdict(model_config),
        "train": asdict(train_config),
    }
    write_json(Path(folder) / META_FILE, meta)  # written last: its epoch marks a complete checkpoint


def has_checkpoint(folder: Path) -> bool:
    return (Path(folder) / META_FILE).is_file() and (Path(folder) / STATE_FILE).is_file()


def load_checkpoint(
    folder: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    model_config: ModelConfig,
    train_config: TrainConfig,
) -> tuple[int, list[dict]]:
    """Restore weights and optimizer state; returns (last complete epoch, history)."""
    meta = read_json(Path(folder) / META_FILE)
    _check_same_run(meta, model_config, train_config, folder)
    tensors = read_tensors(Path(folder) / STATE_FILE)
    weights = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    model.load_state_dict(weights)
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return int(meta["epoch"]), list(meta["history"])


def _check_same_run(meta: dict, model_config: ModelConfig, train_config: TrainConfig, folder) -> None:
    if meta.get("model") != asdict(model_config):
        raise ValueError(
            f"cannot resume from {folder}: it was trained with model settings {meta.get('model')}, "
            f"now {asdict(model_config)}"
        )
    saved = {k: v for k, v in meta.get("train", {}).items() if k not in RESUMABLE}
    now = {k: v for k, v in asdict(train_config).items() if k not in RESUMABLE}
    if saved != now:
        changed = sorted(k for k in now if saved.get(k) != now[k])
        raise ValueError(f"cannot resume from {folder}: training settings changed: {changed}")
