"""The options of `aegmm` and its verbs; defaults come from the config dataclasses.

Every parse error is one line naming the flag (``--clusters must be >= 1, got 0``). The shared
options (``--threads``, ``--quiet``, ``--debug``, and ``--device`` / ``--batch-size`` where they
apply) are accepted before or after the verb. Importing this module imports no torch.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import math
import re
from dataclasses import fields

from . import __version__
from .config import CHOICES
from .config import MixtureConfig as X
from .config import ModelConfig as M
from .config import TrainConfig as T

ENCODE_BATCH = 128  # images per encoding batch in assign and evaluate


class Parser(argparse.ArgumentParser):
    """argparse, with each error as one line: ``aegmm: error: --flag ...``."""

    def error(self, message: str):
        named = re.match(r"argument ([^:]+): (.*)", message, flags=re.DOTALL)
        if named:
            flag = named.group(1).split("/")[0]
            message = f"{flag} {named.group(2)}"
        else:
            message += f" (see '{self.prog} --help')"
        self.exit(2, f"aegmm: error: {' '.join(message.split())}\n")


def at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def at_least_zero(text: str) -> float:
    value = finite(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def count_or_auto(text: str) -> int | str:
    if text == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1 or 'auto', got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def amount_or_auto(text: str) -> float | str:
    value = "auto" if text == "auto" else finite(text)
    if value != "auto" and value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 or 'auto', got {value}")
    return value


def _shared(parser: argparse.ArgumentParser, *, device: bool, batch: str | None, suppress: bool) -> None:
    """The shared options; after a verb their defaults are suppressed so that a value given
    before the verb is kept."""
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument(
        "--threads",
        type=at_least(1),
        default=default,
        help="CPU threads to use (default: one per core); fewer when other jobs share the machine",
    )
    parser.add_argument(
        "--quiet", action="store_true", default=argparse.SUPPRESS if suppress else False, help="no progress"
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="show full tracebacks on errors",
    )
    if device:
        parser.add_argument(
            "--device",
            default=argparse.SUPPRESS if suppress else "auto",
            help="auto (CUDA, then MPS, then CPU; default), cpu, cuda or mps",
        )
    if batch:
        parser.add_argument("--batch-size", type=at_least(1), default=default, help=batch)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="aegmm",
        description="Cluster image collections: a ResNet-18 autoencoder compresses each image, "
        "a Gaussian mixture groups the latent vectors.",
    )
    parser.add_argument("--version", action="version", version=f"aegmm {__version__}")
    _shared(parser, device=True, batch="images per batch (see each verb's --batch-size)", suppress=False)
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB", parser_class=Parser)
    _fit(verbs.add_parser("fit", help="train the autoencoder and the mixture on a set of images"))
    _assign(verbs.add_parser("assign", help="cluster new images with a fitted run"))
    _evaluate(verbs.add_parser("evaluate", help="write an HTML report measuring a fitted run on images"))
    _pack(verbs.add_parser("pack", help="decode a folder or .zip once into a memory-mapped .npy"))
    _demo(verbs.add_parser("demo", help="fit, assign and evaluate on built-in digits; no data needed"))
    return parser


# the settings `aegmm fit` offers, each a field of a config dataclass: (its class, the flag when it
# is not the field's name, the parser when the field's type does not say it); name, default, choices
# and help come from the dataclass, the help from the comment beside the field
FIT_FIELDS = {
    "n_components": (X, "--clusters", count_or_auto),
    "k_range": (X, None, None),
    "epochs": (T, None, count_or_auto),
    "train_minutes": (T, None, at_least_zero),
    "image_size": (M, None, None),
    "latent_dim": (M, None, count_or_auto),
    "stem": (M, None, None),
    "width": (M, None, None),
    "lr": (T, None, None),
    "noise": (T, None, amount_or_auto),
    "train_images": (T, None, at_least(0)),
    "objective": (T, None, None),
    "temperature": (T, None, None),
    "view_size": (T, None, at_least(0)),
    "stem_init": (T, None, None),
    "members": (T, None, count_or_auto),
    "precision": (T, None, None),
    "features": (X, None, None),
    "normalize": (X, None, None),
    "reducer": (X, None, None),
    "reduced_dim": (X, None, count_or_auto),
    "candidates": (X, None, count_or_auto),
    "candidate_rule": (X, None, None),
    "covariance_type": (X, "--covariance", None),
    "seed": (T, None, int),  # the clusterer's one seed: training's and the mixture's
}
METAVARS = {"n_components": "K", "train_images": "N", "train_minutes": "M"}
FLAGS = {name: flag or "--" + name.replace("_", "-") for name, (_, flag, _) in FIT_FIELDS.items()}
FLAGS["batch_size"] = "--batch-size"


@functools.cache
def _source_lines(kind: type) -> list[str]:
    return inspect.getsource(kind).splitlines()  # read once per config class


def field_help(kind: type, name: str) -> str:
    """The comment beside a config field (and the comment lines below it), fields named as flags."""
    lines = _source_lines(kind)
    at = next(i for i, line in enumerate(lines) if re.match(rf"\s+{name}: ", line))
    parts = [lines[at].split("  # ", 1)[1]]
    for line in lines[at + 1 :]:
        if not line.lstrip().startswith("# "):
            break
        parts.append(line.lstrip()[2:])
    others = "|".join(flag for flag in FLAGS if flag != name)
    return re.sub(rf"\b({others})\b", lambda m: FLAGS[m.group(1)], " ".join(parts))


def _fit_option(fit: argparse.ArgumentParser, name: str) -> None:
    kind, flag, parse = FIT_FIELDS[name]
    spec = next(f for f in fields(kind) if f.name == name)
    metavar = METAVARS.get(name, FLAGS[name][2:].upper().replace("-", "_"))
    options = {"dest": name, "default": spec.default, "metavar": metavar}
    if name in CHOICES:
        options.update(choices=list(CHOICES[name]), metavar=None)
    elif name == "k_range":  # only with --clusters auto: None says it was not given
        options.update(type=at_least(1), nargs=2, metavar=("A", "B"), default=None)
    else:
        options["type"] = parse or {"int": at_least(1), "float": finite}[spec.type]
    default = " ".join(map(str, spec.default)) if name == "k_range" else spec.default
    text = field_help(kind, name) if name != "seed" else f"{field_help(T, name)}; {field_help(X, name)}"
    fit.add_argument(FLAGS[name], help=f"{text} (default {default})", **options)


def _fit(fit: argparse.ArgumentParser) -> None:
    fit.add_argument("data", help="a folder of images, a .zip, an .npz, a packed .npy or builtin:digits")
    fit.add_argument("--out", required=True, help="run folder to write the model and assignments to")
    for name in FIT_FIELDS:
        _fit_option(fit, name)
    fit.add_argument("--resume", action="store_true", help="continue an interrupted run from its last epoch")
    fit.add_argument("--force", action="store_true", help="replace an --out folder that aegmm wrote before")
    batch = f"{field_help(T, 'batch_size')} (default {T.batch_size})"
    _shared(fit, device=True, batch=batch, suppress=True)


def _assign(assign: argparse.ArgumentParser) -> None:
    assign.add_argument("run", help="run folder written by 'aegmm fit'")
    assign.add_argument("data", help="images to assign: a folder, a .zip, an .npz or a packed .npy")
    assign.add_argument(
        "--out", required=True, help="CSV file: path,cluster,probability,log_likelihood,skipped"
    )
    assign.add_argument(
        "--gallery",
        metavar="FILE",
        help="also write a grid of each cluster's most and least typical images (.png, .jpg or .webp)",
    )
    assign.add_argument(
        "--export",
        metavar="DIR",
        help="also sort the images into DIR/cluster_00, ... (named after the dominant label when the "
        "images have labels), plus DIR/outliers for the least likely ones",
    )
    how = assign.add_mutually_exclusive_group()
    how.add_argument("--link", action="store_true", help="--export as symbolic links (default for files)")
    how.add_argument("--copy", action="store_true", help="--export as copies (always for .zip/.npz inputs)")
    assign.add_argument(
        "--latents",
        metavar="FILE.npy",
        help="also write the vectors the mixture clustered (latent vectors, or pooled features: see fit "
        "--features), one row per CSV row (NaN if skipped)",
    )
    _shared(assign, device=True, batch=f"images per encoding batch (default {ENCODE_BATCH})", suppress=True)


def _evaluate(evaluate: argparse.ArgumentParser) -> None:
    evaluate.add_argument("run", help="run folder written by 'aegmm fit'")
    evaluate.add_argument(
        "data", help="images to evaluate on (labels, if any, are used for the label metrics)"
    )
    evaluate.add_argument("--out", required=True, help="folder for report.html, metrics.json and figures/")
    evaluate.add_argument("--seed", type=int, default=0, help="random seed for the resampling measurements")
    evaluate.add_argument(
        "--positive",
        metavar="NAME",
        help="the domain of generated (fake, simulated) images: the positive class of every AUROC "
        "(default: the domain whose name says so, e.g. FAKE or generated)",
    )
    evaluate.add_argument(
        "--force", action="store_true", help="replace an --out folder that aegmm wrote before"
    )
    _shared(evaluate, device=True, batch=f"images per encoding batch (default {ENCODE_BATCH})", suppress=True)


def _pack(pack: argparse.ArgumentParser) -> None:
    pack.add_argument("data", help="a folder of images or a .zip")
    pack.add_argument(
        "--out", required=True, help="the .npy file to write (a .json beside it keeps paths and labels)"
    )
    pack.add_argument(
        "--image-size",
        type=at_least(1),
        default=M.image_size,
        help=f"square size to store (default {M.image_size})",
    )
    pack.add_argument("--channels", type=int, choices=[1, 3], default=3, help="1 (gray) or 3 (RGB; default)")
    _shared(pack, device=False, batch=None, suppress=True)


def _demo(demo: argparse.ArgumentParser) -> None:
    demo.add_argument(
        "--out", default="aegmm-demo", help="folder for the demo's outputs (default aegmm-demo)"
    )
    demo.add_argument("--force", action="store_true", help="replace an --out folder that aegmm wrote before")
    _shared(demo, device=False, batch=None, suppress=True)
