"""aegmm: cluster image collections with a ResNet-18 autoencoder and a Gaussian mixture.

The names below are imported on first use, so that `aegmm --help` never waits for torch.
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("aegmm")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "unknown"

_HOMES = {
    "AssignExtras": "exports",
    "Assignments": "pipeline",
    "assign_run": "runs",
    "evaluate_run": "evaluation.evaluate",
    "Evaluation": "evaluation.measure",
    "fit_run": "runs",
    "measure": "evaluation.measure",
    "pack_images": "data.pack",
    "run_demo": "demo",
    "ImageClusterer": "pipeline",
    "ImageSet": "data",
    "load_images": "data",
    "load": "pipeline",
    "MixtureConfig": "config",
    "ModelConfig": "config",
    "RunConfig": "config",
    "TrainConfig": "config",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name in _HOMES:
        value = getattr(import_module(f".{_HOMES[name]}", __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'aegmm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])
