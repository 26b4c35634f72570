"""Shared pieces of the benchmarks: data and splits, timing and memory, machine facts, metrics."""

from __future__ import annotations

import json
import math
import os
import platform
import re
import resource
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

REPO = Path(__file__).resolve().parents[1]
# ../shared/data beside the checkout; AEGMM_SHARED_DATA names another folder (a lent GPU machine
# gets only the repository, so device_check.sh carries the files in and points here)
SHARED_DATA = Path(os.environ.get("AEGMM_SHARED_DATA") or REPO.parent / "shared" / "data")
RESULTS = Path(__file__).resolve().parent / "results"
CIFAKE_ZIP = SHARED_DATA / "cifake_train_20k.zip"
CIFAKE_SUBSET = SHARED_DATA / "cifake_train_subset.npz"  # 6,000 decoded images, for smoke runs
DOMAIN_NAMES = ("REAL", "FAKE")  # domain 0 and 1; FAKE is the positive class of every AUROC
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_CLASS_SUFFIX = re.compile(r" \((\d+)\)\.jpg$", re.IGNORECASE)


# -- data ----------------------------------------------------------------------------------------


@dataclass
class Labelled:
    """uint8 images (N, H, W, C) with their CIFAR class (or digit) and REAL/FAKE domain."""

    images: np.ndarray
    classes: np.ndarray  # int64 (N,): CIFAR-10 class 0-9, or the digit
    domains: np.ndarray | None = None  # int64 (N,): 0 REAL, 1 FAKE; None for digits

    def take(self, index: np.ndarray) -> Labelled:
        domains = None if self.domains is None else self.domains[index]
        return Labelled(self.images[index], self.classes[index], domains)

    @property
    def strata(self) -> np.ndarray:
        """domain x class (20 groups on CIFAKE), the stratification key of every split."""
        return self.classes if self.domains is None else self.domains * 10 + self.classes


def cifar_class(member: str) -> int:
    """`NNNN (k).jpg` is CIFAR-10 class k-1; a name without a suffix is class 0."""
    match = _CLASS_SUFFIX.search(member)
    return int(match.group(1)) - 1 if match else 0


def load_cifake(path: Path = CIFAKE_ZIP) -> Labelled:
    """All 20,000 images of the zip, decoded by aegmm's own loader (Pillow), labels from the names."""
    from aegmm import load_images

    data = load_images(path, image_size=32, channels=3)
    domains = np.array([DOMAIN_NAMES.index(p.split("/")[1]) for p in data.paths], dtype=np.int64)
    classes = np.array([cifar_class(p) for p in data.paths], dtype=np.int64)
    return Labelled(data.images, classes, domains)


def load_cifake_subset(path: Path = CIFAKE_SUBSET) -> Labelled:
    """The already decoded 6,000-image CIFAKE subset (`images`, `cifar_class`, `domain`): smoke runs."""
    if not path.is_file():
        raise FileNotFoundError(f"the CIFAKE subset is missing: expected {path}")
    with np.load(path) as data:
        return Labelled(data["images"], data["cifar_class"].astype(np.int64), data["domain"].astype(np.int64))


def load_digits() -> Labelled:
    """scikit-learn's 1,797 8x8 digits through aegmm's `builtin:digits` (0..16 scaled to 0..255)."""
    from aegmm import load_images

    data = load_images("builtin:digits")
    return Labelled(data.images, data.labels.astype(np.int64))


MNIST = SHARED_DATA / "mnist_train_10k.npz"


def load_mnist(fit_size: int = 8000, test_size: int = 2000, seed: int = 0) -> tuple[Labelled, Labelled]:
    """mnist_train_10k.npz split fit / held-out, stratified by digit (train_test_split, seed), 28x28x1."""
    from sklearn.model_selection import train_test_split

    with np.load(MNIST) as data:
        everything = Labelled(data["images"], data["labels"].astype(np.int64))
    fit, test = train_test_split(
        np.arange(len(everything.classes)),
        train_size=fit_size,
        test_size=test_size,
        stratify=everything.classes,
        random_state=seed,
    )
    return everything.take(np.sort(fit)), everything.take(np.sort(test))


def split_cifake(data: Labelled, test_size: int = 4000, seed: int = 0) -> tuple[Labelled, Labelled]:
    """(fit, held-out) stratified by domain x CIFAR class; 16,000 / 4,000 by default."""
    positions = np.arange(len(data.images))
    fit, test = train_test_split(positions, test_size=test_size, stratify=data.strata, random_state=seed)
    return data.take(np.sort(fit)), data.take(np.sort(test))


def cached_features(entry: Path, fit: Labelled, held: Labelled) -> tuple[np.ndarray, np.ndarray]:
    """The (fit, held-out) features of a `quality.py --cache` entry, refused unless they are as many
    as the split's `fit` and `held` images (another split's features would be scored silently wrong)."""
    arrays = np.load(entry / "arrays.npz")
    fit_x, held_x = arrays["fit_latents"], arrays["score_latents"]
    if len(fit_x) != len(fit.classes) or len(held_x) != len(held.classes):
        sizes = f"{len(fit_x)} / {len(held_x)}"
        raise SystemExit(f"expected features of the CIFAKE split (16,000 / 4,000), got {sizes}")
    return fit_x, held_x


def stratified_subset(data: Labelled, n: int, seed: int = 0) -> Labelled:
    """n images of `data`, stratified like the split (all of them when n >= len)."""
    if n >= len(data.images):
        return data
    positions = np.arange(len(data.images))
    keep, _ = train_test_split(positions, train_size=n, stratify=data.strata, random_state=seed)
    return data.take(np.sort(keep))


TAIL_SIZES = (170, 140, 115, 95, 78, 64, 52, 43, 36, 30)  # a long tail: images per class, largest first


def tail_indices(classes: np.ndarray, seed: int, scale: float = 1.0) -> np.ndarray:
    """Sorted indices of TAIL_SIZES (times `scale`, at least 2) images of each class, the classes in a
    random order (seed): scikit-learn's digits become 823 images, 170 of one digit down to 30 of another."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(10)
    sizes = [max(2, round(size * scale)) for size in TAIL_SIZES]
    return np.sort(np.concatenate([
        rng.choice(np.nonzero(classes == c)[0], size, replace=False) for size, c in zip(sizes, order)
    ]))  # fmt: skip


def output_folder(out: Path | None, smoke: bool) -> Path:
    """--out, or the results folder; a smoke run writes to a new temporary folder, never to results/."""
    if not smoke:
        return RESULTS if out is None else out
    if out is None:
        return Path(tempfile.mkdtemp(prefix="aegmm-smoke-"))
    if out.resolve().is_relative_to(RESULTS):
        raise ValueError(f"a smoke run must not write into {RESULTS}, got --out {out}")
    return out


# -- time and memory ----------------------------------------------------------------------------


def rss_mib() -> float:
    """Resident memory of this process now (Linux /proc), else the peak so far (getrusage)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return max_rss_mib()


def max_rss_mib() -> float:
    """Peak resident memory of the process so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


@dataclass
class Measured:
    """Wall time and resident memory of one block of work (see `measure`)."""

    seconds: float = 0.0
    start_rss_mib: float = 0.0
    peak_rss_mib: float = 0.0  # highest resident memory sampled while the block ran
    cpu_seconds: float = 0.0  # CPU time of the process (all threads) while the block ran
    extra: dict = field(default_factory=dict)

    @property
    def rise_mib(self) -> float:
        """Peak minus the memory held when the block started: what the block itself needed."""
        return max(0.0, self.peak_rss_mib - self.start_rss_mib)

    def as_dict(self) -> dict:
        return {
            "seconds": round(self.seconds, 3),
            "cpu_seconds": round(self.cpu_seconds, 3),
            "start_rss_mib": round(self.start_rss_mib, 1),
            "peak_rss_mib": round(self.peak_rss_mib, 1),
            "rise_mib": round(self.rise_mib, 1),
        }


class measure:
    """Context manager: wall time and peak RSS, sampled every 20 ms by a background thread.

    ru_maxrss only ever grows over a process, so it cannot give the peak of one method run
    after another; sampling /proc/self/statm can (a spike shorter than 20 ms may be missed).
    CPU time is recorded too: on 2 cores, cpu_seconds / seconds well under 2 means the block
    waited for cores other jobs held (or the process was paused).
    """

    def __init__(self, interval: float = 0.02) -> None:
        self.interval, self.result = interval, Measured()
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.result.peak_rss_mib = max(self.result.peak_rss_mib, rss_mib())

    def __enter__(self) -> Measured:
        self.result.start_rss_mib = self.result.peak_rss_mib = rss_mib()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        self._t0, self._cpu0 = time.perf_counter(), time.process_time()
        return self.result

    def __exit__(self, *exc) -> None:
        self.result.seconds = time.perf_counter() - self._t0
        self.result.cpu_seconds = time.process_time() - self._cpu0
        self._stop.set()
        self._thread.join()
        self.result.peak_rss_mib = max(self.result.peak_rss_mib, rss_mib())


def machine() -> dict:
    """Facts that timings depend on; the load average shows how shared the cores were."""
    import sklearn
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "sklearn": sklearn.__version__,
        "numpy": np.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "processor": platform.processor() or platform.machine(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


# -- metrics ------------------------------------------------------------------------------------


def auroc(scores: np.ndarray, positive: np.ndarray) -> dict:
    """AUROC of a score whose orientation was fixed beforehand (higher = FAKE), and the separation.

    `separation` = max(AUROC, 1 - AUROC) picks the sign with the labels, like the Hungarian
    matching of the accuracy does; `auroc` is the number a label-free user gets.
    """
    from aegmm.evaluation.metrics import roc_auc

    value = roc_auc(scores, positive)
    return {"auroc": round(value, 4), "separation": round(max(value, 1.0 - value), 4)}


def agreement(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """acc (Hungarian), NMI, ARI and purity from aegmm.evaluation.metrics, rounded."""
    from aegmm.evaluation.metrics import label_agreement

    return {k: round(v, 4) for k, v in label_agreement(y_true, y_pred).items()}


def held_out_agreement(config, fit: np.ndarray, held: np.ndarray, classes: np.ndarray, jobs: int) -> dict:
    """A LatentMixture with `config`'s settings and K = 10, fitted on `fit` (in `jobs` worker
    processes), scored by `agreement` of its labels of `held` with their `classes`."""
    from dataclasses import replace

    from aegmm.mixture import LatentMixture

    mixture = LatentMixture(replace(config, n_components=10)).fit(fit, n_jobs=jobs)
    return agreement(classes, mixture.predict(held))


def number_argument(text: str, usage: str, wanted: str, accept) -> float:
    """A probe's numeric argument: `text` as a finite float that `accept` takes, else exit with
    `usage` and what was `wanted`."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and accept(value)):
        raise SystemExit(f"{usage}\nexpected {wanted}, got {text!r}")
    return value


def field_changes(text: str, known: dict, usage: str) -> dict:
    """'a=1,b=0.35:1' -> {name: value} for the names of `known` ({name: default}), each value read as
    its default's type: true/false for a bool, lo:hi for a tuple, a whole number for an int or None.
    Anything else exits with `usage`."""
    changes = {}
    for item in text.split(","):
        name, _, value = item.partition("=")
        if name not in known or not value:
            raise SystemExit(f"{usage}\nexpected FIELD=VALUE with FIELD one of {sorted(known)}, got {item!r}")
        default = known[name]
        if isinstance(default, bool):
            changes[name] = value.lower() == "true"
        elif isinstance(default, tuple):
            changes[name] = tuple(float(v) for v in value.split(":"))
        elif isinstance(default, float):
            changes[name] = float(value)
        else:
            changes[name] = int(value) if isinstance(default, int) or default is None else value
    return changes


def comma_choices(parser, text: str, known, what: str) -> list[str]:
    """The comma-separated items of a command-line option, each one of `known` (else parser.error)."""
    items = text.split(",")
    for item in items:
        if item not in known:
            parser.error(f"unknown {what} {item!r}; expected {', '.join(known)}")
    return items


def append_row(row: dict, out: Path) -> None:
    """Print one JSON result row and append it to the JSON lines file `out`."""
    print(json.dumps(row), flush=True)
    with open(out, "a") as handle:
        handle.write(json.dumps(row) + "\n")
