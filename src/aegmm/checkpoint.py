"""Training checkpoints: weights and Adam state as safetensors, the rest as JSON, written atomically.

A checkpoint is one file, `train_state.safetensors`, replaced atomically after each epoch: its
header carries the epoch, history and settings, so weights and bookkeeping can never disagree,
whenever the process is stopped. `train_state.json` is a readable copy written just after it.
A state that is no longer finite (a diverged run) is never saved over the last good one.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .config import ModelConfig, TrainConfig
from .storage import read_json, read_tensor_metadata, read_tensors, write_json, write_tensors

STATE_FILE = "train_state.safetensors"
META_FILE = "train_state.json"
META_KEY = "aegmm.checkpoint"  # header entry of STATE_FILE holding the JSON bookkeeping
RESUMABLE = ("epochs", "device", "train_minutes")  # settings a resumed run may change


def data_fingerprint(images: np.ndarray, chunk: int = 8192) -> dict:
    """Count, shape and sha256 of the decoded training images, read chunk by chunk (memory maps
    included): ``--resume`` refuses to continue on other images."""
    digest = hashlib.sha256()
    for start in range(0, len(images), chunk):
        digest.update(np.ascontiguousarray(images[start : start + chunk]).tobytes())
    return {"count": len(images), "shape": list(images.shape[1:]), "sha256": digest.hexdigest()}


def save_checkpoint(
    folder: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    history: list[dict],
    model_config: ModelConfig,
    train_config: TrainConfig,
    scaler: torch.amp.GradScaler | None = None,
    data: dict | None = None,
) -> None:
    """``data``: the training images' ``data_fingerprint``."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    for index, state in opt["state"].items():
        for key, value in state.items():
            tensors[f"optim.{index}.{key}"] = torch.as_tensor(value)
    _check_finite(tensors, history, epoch)
    meta = {
        "epoch": epoch,
        "history": history,
        "param_groups": opt["param_groups"],
        "model": asdict(model_config),
        "train": asdict(train_config),
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "data": data,
    }
    write_tensors(Path(folder) / STATE_FILE, tensors, metadata={META_KEY: json.dumps(meta)})
    write_json(Path(folder) / META_FILE, meta)  # for people; loading trusts the state file's header


def _check_finite(tensors: dict[str, torch.Tensor], history: list[dict], epoch: int) -> None:
    last = history[-1] if history else {}
    bad = [f"the {k.replace('_', ' ')}" for k in ("train_loss", "val_loss") if math.isinf(last.get(k, 0.0))]
    bad += [
        f"tensor {k}" for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()
    ]
    if bad:
        raise FloatingPointError(
            f"training diverged in epoch {epoch}: {bad[0]} became infinite or NaN; {kept_checkpoint(epoch)}; "
            "try a lower learning rate (--lr)"
        )


def kept_checkpoint(epoch: int) -> str:
    """What is left after epoch `epoch` diverged: the previous epoch's checkpoint, if any."""
    return f"the checkpoint of epoch {epoch - 1} is kept" if epoch > 1 else "no checkpoint was saved"


def has_checkpoint(folder: Path) -> bool:
    return (Path(folder) / STATE_FILE).is_file()


def member_folder(folder: Path, index: int) -> Path:
    """Where member `index` of an ensemble keeps its checkpoint (TrainConfig.members > 1)."""
    return Path(folder) / f"member{index}"


def check_resume_layout(folder: Path, members: int) -> None:
    """Refuse a resume whose checkpoints were written by a run with another number of networks:
    one autoencoder checkpoints into `folder` itself, an ensemble into member0, member1, ...;
    without this check the run would find nothing to resume and silently train from scratch.
    An ensemble may resume with more or fewer members: each member is its own one-network run."""
    single = has_checkpoint(folder)
    saved = sorted(p.name for p in Path(folder).glob("member*") if has_checkpoint(p))
    if members == 1 and saved and not single:
        raise ValueError(
            f"cannot resume from {folder}: it holds the checkpoints of an ensemble ({', '.join(saved)}), "
            f"got members 1; resume with --members {len(saved)} or more, or start over with --force"
        )
    if members > 1 and single:
        raise ValueError(
            f"cannot resume from {folder}: it holds the checkpoint of one autoencoder, got members "
            f"{members}; resume with --members 1, or start over with --force"
        )


def load_checkpoint(
    folder: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    model_config: ModelConfig,
    train_config: TrainConfig,
    scaler: torch.amp.GradScaler | None = None,
    data: dict | None = None,
) -> tuple[int, list[dict]]:
    """Restore weights, optimizer and loss-scaler state; returns (last complete epoch, history).

    ``data`` (the ``data_fingerprint`` of the images now) must equal the one saved.
    """
    meta = _read_meta(Path(folder))
    _check_same_run(meta, model_config, train_config, folder)
    _check_same_data(meta.get("data"), data, folder)
    tensors = read_tensors(Path(folder) / STATE_FILE)
    weights = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    model.load_state_dict(weights)
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    if scaler is not None and scaler.is_enabled() and meta.get("scaler"):
        scaler.load_state_dict(meta["scaler"])
    return int(meta["epoch"]), list(meta["history"])


def saved_epochs(folder: Path) -> int:
    """The epochs the checkpoint's run was set to train (its resolved TrainConfig.epochs)."""
    return int(_read_meta(Path(folder))["train"]["epochs"])


def _read_meta(folder: Path) -> dict:
    header = read_tensor_metadata(folder / STATE_FILE)
    if META_KEY not in header:  # written before the bookkeeping moved into the state file
        return read_json(folder / META_FILE)
    try:
        return json.loads(header[META_KEY])
    except json.JSONDecodeError as exc:
        raise ValueError(f"{folder / STATE_FILE} holds unreadable checkpoint metadata ({exc})") from None


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


def _check_same_data(saved: dict | None, now: dict | None, folder) -> None:
    if now is None or saved == now:
        return
    if not saved:
        raise ValueError(
            f"cannot resume from {folder}: it records no fingerprint of its training images (written by "
            "an older aegmm), so it cannot be checked against these; start again with --force"
        )
    raise ValueError(
        f"cannot resume from {folder}: it was trained on {saved['count']:,} other images "
        f"(sha256 {saved['sha256'][:12]}), now {now['count']:,} images (sha256 {now['sha256'][:12]}); "
        "resume with the same data, or start again with --force"
    )
