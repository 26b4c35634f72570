"""One-off probe (issue 13): how the digits default fails, on the encoders a `quality.py --cache`
run saved. For every cached default digits run (scikit-learn's 1,797 digits, 39 epochs, noise 0.1,
5 candidates) it prints the kept mixture's accuracy, the clusters holding more than 60 images of
two digits, and the digits spread over two clusters (more than 40 images in each). With `--sweep`
it also fits one UMAP + GMM candidate (seed 0) per encoder for a few UMAP settings. With
`--purity` it prints instead how pure each digit's 10 nearest neighbours are, in the standardised
pixels and in each encoder's latents (with and without L2), and the share of the 8s' neighbours
that are 1s: is the merge already in the encoder's neighbourhoods, or only in the partition?

    python benchmarks/digits_failures.py --cache /tmp/qcache --sweep > results/digits_seeds10/failures.txt
    python benchmarks/digits_failures.py --cache /tmp/qcache --purity > results/candidate_balance/purity.txt

No `--smoke`: it reads only what a full `quality.py` run cached.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import umap
from sklearn.mixture import GaussianMixture
from sklearn.preprocessing import StandardScaler, normalize

from aegmm import load
from common import agreement, load_digits

SWEEP = {  # name: (UMAP neighbours, dimensions, L2 first)
    "default (30 neighbours, 10-D, L2)": (30, 10, True),
    "15 neighbours": (15, 10, True),
    "60 neighbours": (60, 10, True),
    "no L2": (30, 10, False),
    "2-D": (30, 2, True),
}


# the default runs of each grayscale data set that quality.py caches: (epochs, noise, fit images);
# mnist3k: the MNIST default trained on 3,000 of its 8,000 fit digits (quality.py --variant
# train_images=3000: 23 epochs, noise 0.1, one network)
DEFAULT_RUNS = {"digits": (39, 0.1, 1797), "mnist": (10, 0.0, 8000), "mnist3k": (23, 0.1, 8000)}


def cached_runs(
    cache: Path, epochs: int = 39, noise: float = 0.1, n_fit: int = 1797
) -> list[tuple[int, Path]]:
    """(seed, folder) of each cached default grayscale run, one per seed (the first folder by name
    where a seed was cached twice): 32-number latents, 5 candidates, and the given epochs, noise
    and number of fit images (the digits' default unless told: 39 epochs, noise 0.1, 1,797)."""
    runs = {}
    for folder in sorted(cache.glob("*/")):
        config = json.loads((folder / "run" / "config.json").read_text())
        train, mixture = config["train"], config["mixture"]
        default = train["epochs"] == epochs and train["noise"] == noise and mixture["candidates"] == 5
        gray = config["model"]["channels"] == 1 and config["model"]["latent_dim"] == 32
        if gray and default and len(np.load(folder / "arrays.npz")["fit_latents"]) == n_fit:
            runs.setdefault(train["seed"], folder)
    return sorted(runs.items())


def one_candidate(latents: np.ndarray, neighbours: int, dim: int, l2: bool) -> np.ndarray:
    x = StandardScaler().fit_transform(normalize(latents) if l2 else latents)
    embedded = umap.UMAP(
        n_components=dim, n_neighbors=neighbours, min_dist=0.0, random_state=0, n_jobs=1
    ).fit_transform(x)
    gmm = GaussianMixture(10, covariance_type="full", n_init=20, reg_covar=1e-4, random_state=0)
    return gmm.fit(embedded).predict(embedded)


def neighbour_purity(x: np.ndarray, digits: np.ndarray, k: int = 10) -> tuple[np.ndarray, float]:
    """(each digit's mean share of same-digit images among its k nearest neighbours, the share of
    the 8s' neighbours that are 1s), Euclidean distances in x."""
    from sklearn.neighbors import NearestNeighbors

    neighbours = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x, return_distance=False)[:, 1:]
    same = (digits[neighbours] == digits[:, None]).mean(1)
    per_digit = np.array([same[digits == d].mean() for d in range(10)])
    return per_digit, float((digits[neighbours[digits == 8]] == 1).mean())


def print_purity(cache: Path) -> None:
    data = load_digits()
    pixels = data.images.reshape(len(data.classes), -1).astype(np.float64)
    rows = [("pixels, standardised", pixels)]
    for seed, folder in cached_runs(cache):
        latents = np.load(folder / "arrays.npz")["fit_latents"]
        rows += [
            (f"encoder {seed}, L2 + standardised", normalize(latents)),
            (f"encoder {seed}, standardised", latents),
        ]
    print(
        "10-nearest-neighbour purity per digit 0-9 (all | per digit | share of 8s' neighbours that "
        "are 1s | the 1s' and the 8s' mean vector length ± sd, before standardising)"
    )
    for name, x in rows:
        per_digit, eights_to_ones = neighbour_purity(StandardScaler().fit_transform(x), data.classes)
        digits = " ".join(f"{v:.2f}" for v in per_digit)
        norms = np.linalg.norm(x, axis=1)
        lengths = " / ".join(
            f"{norms[data.classes == d].mean():.2f} ± {norms[data.classes == d].std():.2f}" for d in (1, 8)
        )
        print(f"{name:34s} {per_digit.mean():.3f} | {digits} | {eights_to_ones:.3f} | {lengths}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cache", type=Path, required=True, help="the --cache folder of quality.py")
    parser.add_argument("--sweep", action="store_true", help="also fit one candidate per UMAP setting")
    parser.add_argument("--purity", action="store_true", help="only the nearest neighbours' purity")
    args = parser.parse_args()
    if args.purity:
        return print_purity(args.cache)
    digits = load_digits().classes
    scores: dict[str, list[tuple[float, float]]] = {name: [] for name in SWEEP}
    for seed, folder in cached_runs(args.cache):
        mixture = load(folder / "run").mixture_
        predicted = mixture._training_proba().argmax(1)  # the kept candidate's training labels
        counts = np.zeros((10, 10), int)  # cluster x digit
        np.add.at(counts, (predicted, digits), 1)
        merged = {
            int(k): np.nonzero(row > 60)[0].tolist() for k, row in enumerate(counts) if (row > 60).sum() > 1
        }
        split = [d for d in range(10) if (counts[:, d] > 40).sum() > 1]
        acc = agreement(digits, predicted)["acc"]
        print(
            f"seed {seed} ({folder.name}): acc {acc:.4f}; "
            f"clusters with two digits {merged}; split digits {split}"
        )
        if args.sweep:
            latents = np.load(folder / "arrays.npz")["fit_latents"]
            for name, setting in SWEEP.items():
                a = agreement(digits, one_candidate(latents, *setting))
                scores[name].append((a["acc"], a["nmi"]))
                print(f"    one candidate, {name}: acc {a['acc']:.3f}, NMI {a['nmi']:.3f}", flush=True)
    for name, values in scores.items():
        if values:
            v = np.array(values)
            print(
                f"{name}: acc {v[:, 0].mean():.3f} ± {v[:, 0].std(ddof=1):.3f}, "
                f"NMI {v[:, 1].mean():.3f} ± {v[:, 1].std(ddof=1):.3f}"
            )


if __name__ == "__main__":
    main()
