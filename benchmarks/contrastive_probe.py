"""How well do NT-Xent (SimCLR) features of aegmm's encoder cluster? Scored after selected epochs.

    python benchmarks/contrastive_probe.py --epochs 10 --eval-epochs 2,4,6,8,10      # CIFAKE
    python benchmarks/contrastive_probe.py --dataset mnist --epochs 3 --name probe_mnist
    python benchmarks/contrastive_probe.py --smoke                                    # seconds

CIFAKE: the 20,000 zip images split 16,000 fit / 4,000 held-out (common.split_cifake: stratified
by REAL/FAKE x CIFAR class, random_state 0). MNIST: mnist_train_10k.npz split 8,000 / 2,000,
stratified by digit, random_state 0, the 28x28 digits zero-padded to 32x32 (black border; the
small stem needs a multiple of 8). The encoder trains on the fit images only (10% of them are its
validation split). After each evaluated epoch, the fit and held-out images are encoded; K-Means
(k-means++, n_init 3) and aegmm's LatentMixture (standardise, PCA 20 whitened, full GaussianMixture,
n_init 3, reg_covar 1e-4) are fitted on the fit features and predict the held-out ones, scored
against the CIFAR class (or digit) with Hungarian accuracy and NMI, for K = 10. Features: the
pooled trunk output and the bottleneck, each as is and L2-normalised. Results are rewritten after
every evaluated epoch, so a killed run still leaves its numbers. Everything runs on ONE thread.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.cluster import KMeans  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from aegmm.config import MixtureConfig, ModelConfig, TrainConfig  # noqa: E402
from aegmm.contrastive import encode_features  # noqa: E402
from aegmm.contrastive import train_contrastive as train  # noqa: E402
from aegmm.mixture import LatentMixture  # noqa: E402
from aegmm.preprocess import Normalizer  # noqa: E402
from common import (  # noqa: E402
    RESULTS,
    SHARED_DATA,
    Labelled,
    agreement,
    load_cifake,
    load_cifake_subset,
    machine,
    output_folder,
    split_cifake,
    stratified_subset,
)

K = 10
VARIANTS = ("pooled", "pooled_l2", "bottleneck", "bottleneck_l2")
BASELINES = {  # quoted from the issue (same split), not re-measured here
    "cifake": "For comparison (the issue, same split): the MSE autoencoder's features 0.324 / NMI 0.192; "
    "GMM on 50 PCA components of the pixels 0.307 / 0.212. Targets: acc >= 0.50, NMI >= 0.35.",
    "mnist": "Target: held-out acc >= 0.95.",
}


def load_mnist(fit_size: int, test_size: int) -> tuple[Labelled, Labelled]:
    with np.load(SHARED_DATA / "mnist_train_10k.npz") as data:
        images, labels = data["images"], data["labels"].astype(np.int64)
    images = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)))  # 28x28 -> 32x32, black border
    everything = Labelled(images, labels)
    fit, test = train_test_split(
        np.arange(len(labels)), train_size=fit_size, test_size=test_size, stratify=labels, random_state=0
    )
    return everything.take(np.sort(fit)), everything.take(np.sort(test))


def load(args) -> tuple[Labelled, Labelled]:
    if args.dataset == "mnist":
        return load_mnist(300, 100) if args.smoke else load_mnist(8000, 2000)
    if args.smoke:
        fit, test = split_cifake(load_cifake_subset(), test_size=1000)
        return stratified_subset(fit, 300), stratified_subset(test, 200)
    fit, test = split_cifake(load_cifake())
    return (stratified_subset(fit, args.fit_limit) if args.fit_limit else fit), test


def variants(encoded: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for kind in ("pooled", "bottleneck"):
        x = encoded[kind].astype(np.float64)
        out[kind] = x
        out[f"{kind}_l2"] = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return out


def score(fit_x: np.ndarray, test_x: np.ndarray, truth: np.ndarray, seed: int = 0) -> dict:
    kmeans = KMeans(K, init="k-means++", n_init=3, random_state=seed).fit(fit_x)
    mixture = LatentMixture(
        MixtureConfig(n_components=K, reduced_dim=20, n_init=3, reg_covar=1e-4, seed=seed)
    )
    mixture.fit(fit_x)
    return {
        "kmeans": agreement(truth, kmeans.predict(test_x)),
        "gmm": agreement(truth, mixture.predict(test_x)),
    }


class Probe:
    """Scores the features after the chosen epochs and rewrites the results files each time."""

    def __init__(self, args, fit: Labelled, test: Labelled, normalizer: Normalizer, out: Path, header: dict):
        self.args, self.fit, self.test, self.normalizer = args, fit, test, normalizer
        self.out, self.header, self.evaluations, self.history = out, header, [], []
        self.epochs = {int(e) for e in args.eval_epochs.split(",")} | {args.epochs}

    def __call__(self, epoch: int, model, history: list[dict]) -> None:
        self.history = list(history)
        if epoch not in self.epochs:
            self.write()
            return
        t0 = time.perf_counter()
        fit_f = variants(encode_features(model, self.fit.images, self.normalizer))
        test_f = variants(encode_features(model, self.test.images, self.normalizer))
        encode_s = time.perf_counter() - t0
        scores = {name: score(fit_f[name], test_f[name], self.test.classes) for name in VARIANTS}
        self.evaluations.append(
            {
                "epoch": epoch,
                "encode_seconds": round(encode_s, 1),
                "score_seconds": round(time.perf_counter() - t0 - encode_s, 1),
            }
            | {"scores": scores}
        )
        self.write()
        line = ", ".join(
            f"{n} km {s['kmeans']['acc']:.3f}/{s['kmeans']['nmi']:.3f}" for n, s in scores.items()
        )
        print(f"epoch {epoch}: {line}", flush=True)

    def write(self) -> None:
        payload = self.header | {"history": self.history, "evaluations": self.evaluations}
        (self.out / f"{self.args.name}.json").write_text(json.dumps(payload, indent=2) + "\n")
        (self.out / f"{self.args.name}.md").write_text(markdown(payload))


def markdown(p: dict) -> str:
    lines = [
        f"# Contrastive probe: {p['dataset']}",
        "",
        f"Command: `{p['command']}`",
        "",
        f"Machine: {p['machine']['cpu_count']} CPU cores, ONE torch/BLAS thread (torch.set_num_threads(1), "
        "OMP_NUM_THREADS=1, threadpoolctl 1) on a machine shared with another engineer's job: timings are "
        f"not idle-core timings. Load average at the start {p['machine']['load_average']}; torch "
        f"{p['machine']['torch']}, {p['machine']['date']}.",
        "",
        f"Data: {p['data']}. Model {p['model']}. Training {p['train']}. Contrastive options {p['options']}.",
        "",
        "## Training, per epoch (seconds exclude the scoring)",
        "",
        "| epoch | train loss | val NT-Xent | seconds | images/s |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for h in p["history"]:
        lines.append(
            f"| {h['epoch']} | {h['train_loss']:.4f} | {h['val_loss']:.4f} | {h['seconds']:.0f} | "
            f"{h['images_per_second']:.0f} |"
        )
    lines += [
        "",
        f"## Held-out clustering, K = {K} (fit on the fit features, scored on the held-out ones)",
        "",
        "acc = Hungarian accuracy, NMI against the CIFAR class (digit on MNIST). GMM = aegmm's LatentMixture "
        "(standardise, PCA 20 whitened, full covariance, n_init 3, reg_covar 1e-4).",
        "",
        BASELINES.get(p["dataset"], ""),
        "",
        "| epoch | wall s (cum.) | features | K-Means acc | K-Means NMI | GMM acc | GMM NMI |",
        "| ---: | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for e in p["evaluations"]:
        wall = sum(h["seconds"] for h in p["history"] if h["epoch"] <= e["epoch"])
        for name, s in e["scores"].items():
            km, gm = s["kmeans"], s["gmm"]
            cells = [f"{v:.3f}" for v in (km["acc"], km["nmi"], gm["acc"], gm["nmi"])]
            lines.append(f"| {e['epoch']} | {wall:.0f} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def parse(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", choices=("cifake", "mnist"), default="cifake")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--eval-epochs", default="2,4,6,8", help="comma-separated; the last epoch always")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--temperature", type=float, default=0.2)
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--latent-dim", type=int, default=32)
    parser.add_argument("--precision", default="bfloat16", help="TrainConfig.precision")
    parser.add_argument("--mode", choices=("simclr", "hybrid"), default="simclr")
    parser.add_argument("--shared-gradients", action="store_true", help="hybrid: MSE reaches the encoder")
    parser.add_argument("--schedule", choices=("cosine", "constant"), default="cosine")
    parser.add_argument(
        "--fit-limit", type=int, default=0, help="CIFAKE: train and fit on this many (0 = all)"
    )
    parser.add_argument("--name", default="probe", help="results file stem")
    parser.add_argument("--out", type=Path, default=None, help="default benchmarks/results/contrastive")
    parser.add_argument("--smoke", action="store_true", help="tiny data, 1 epoch, narrow net: does it run?")
    args = parser.parse_args(argv)
    if args.smoke:
        args.epochs, args.eval_epochs, args.width, args.batch_size = 1, "1", 0.125, 64
    return args


def main(argv=None) -> int:
    args = parse(argv)
    torch.set_num_threads(1)
    out = output_folder(args.out, args.smoke)
    out = out / "contrastive" if out == RESULTS else out
    out.mkdir(parents=True, exist_ok=True)
    with threadpool_limits(1):
        fit, test = load(args)
        channels = fit.images.shape[-1]
        model_config = ModelConfig(
            image_size=32, channels=channels, latent_dim=args.latent_dim, width=args.width
        )
        train_config = TrainConfig(
            epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, device="cpu", precision=args.precision
        )
        options = {"mode": args.mode, "temperature": args.temperature, "schedule": args.schedule}
        options["shared_gradients"] = args.shared_gradients
        header = {
            "dataset": args.dataset + (" (smoke)" if args.smoke else ""),
            "command": "python benchmarks/contrastive_probe.py "
            + " ".join(sys.argv[1:] if argv is None else argv),
            "machine": machine()
            | {"threads": "1 (torch, OMP, threadpoolctl); machine shared with another job"},
            "data": f"{len(fit.images):,} fit / {len(test.images):,} held-out images {fit.images.shape[1:]}",
            "model": model_config.__dict__,
            "train": train_config.__dict__,
            "options": options,
        }
        normalizer = Normalizer.fit(fit.images)
        probe = Probe(args, fit, test, normalizer, out, header)

        _, history = train(
            fit.images,
            model_config,
            train_config,
            normalizer,
            progress=sys.stderr.isatty(),
            on_epoch=probe,
            **options,
        )
        probe.history = history
        probe.write()
    print(f"wrote {out / args.name}.md", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
