"""Do the CIFAKE features or the mixture hold the clusters back? On one cached encoder's features
(a `quality.py --cache` entry, trained on the CIFAKE fit split):

- neighbour purity: the share of each fit image's k nearest fit images (L2-normalised features)
  that have its CIFAR class, and the held-out accuracy of a 20-nearest-neighbour vote (labels
  used: an upper reference, not a clustering);
- the domain: the share of the 20 nearest that have its REAL/FAKE domain, and the held-out
  accuracy of a logistic regression reading the domain from the features (how much of the
  generator the features keep);
- the mixture side: UMAP (n_neighbors x dims, min_dist 0) on the standardised L2 features, then a
  full-covariance GMM (K = 10, 5 restarts), scored on the fit images.

    python benchmarks/feature_neighbours.py --entry /tmp/qcache/fb16bae0fe9a0834 --out DIR
    python benchmarks/feature_neighbours.py --entry DIR --neighbours 15,30 --dims 10 --out DIR
    python benchmarks/feature_neighbours.py --entry DIR --neighbours "" --dims "" --out DIR  # no UMAP
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import NearestNeighbors
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import agreement, cached_features, load_cifake, machine, split_cifake  # noqa: E402


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def neighbours(fit: np.ndarray, held: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(each fit image's 20 nearest other fit images, each held-out image's 20 nearest fit images),
    indices into `fit`, on L2-normalised features: found once for the class and the domain."""
    fit = unit(fit)
    index = NearestNeighbors(n_neighbors=21).fit(fit)
    _, near = index.kneighbors(fit)  # (N, 21): each image first
    _, near_held = index.kneighbors(unit(held), n_neighbors=20)
    return near[:, 1:], near_held


def purity(
    near: np.ndarray, near_held: np.ndarray, fit_classes: np.ndarray, held_classes: np.ndarray
) -> dict:
    out = {f"purity_{k}": float((fit_classes[near[:, :k]] == fit_classes[:, None]).mean()) for k in (10, 20)}
    votes = np.array([np.bincount(fit_classes[row], minlength=10).argmax() for row in near_held])
    return out | {"vote_20nn_heldout_acc": float((votes == held_classes).mean())}


def domain(
    near: np.ndarray, fit: np.ndarray, fit_domains: np.ndarray, held: np.ndarray, held_domains: np.ndarray
) -> dict:
    """How much of the REAL/FAKE domain the features hold: neighbours' and a linear read-out's."""
    from sklearn.linear_model import LogisticRegression

    linear = LogisticRegression(max_iter=2000).fit(unit(fit), fit_domains)
    return {
        "domain_purity_20": float((fit_domains[near] == fit_domains[:, None]).mean()),
        "linear_domain_heldout_acc": float(linear.score(unit(held), held_domains)),
    }


def umap_mixture(x: np.ndarray, classes: np.ndarray, neighbours: int, dims: int, seed: int = 0) -> dict:
    """UMAP then a GMM on `x`, the standardised L2 features (computed once by the caller)."""
    import umap

    t0 = time.perf_counter()
    embedding = umap.UMAP(
        n_components=dims, n_neighbors=neighbours, min_dist=0.0, random_state=seed, n_jobs=1
    ).fit_transform(x)
    labels = GaussianMixture(
        10, covariance_type="full", n_init=5, reg_covar=1e-4, random_state=0
    ).fit_predict(embedding)
    scores = agreement(classes, labels)
    return {"neighbours": neighbours, "dims": dims, **scores, "seconds": round(time.perf_counter() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entry", type=Path, required=True, help="a quality.py cache entry (arrays.npz)")
    parser.add_argument("--neighbours", default="15,30,60,100", help="UMAP n_neighbors to try")
    parser.add_argument("--dims", default="10,5", help="UMAP output sizes to try (each with 30 neighbours)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    fit_set, held_set = split_cifake(load_cifake())
    fit, held = cached_features(args.entry, fit_set, held_set)
    x = StandardScaler().fit_transform(unit(fit))
    umap_neighbours, dims = (
        list(map(int, filter(None, text.split(",")))) for text in (args.neighbours, args.dims)
    )
    rows = [umap_mixture(x, fit_set.classes, n, 10) for n in umap_neighbours]
    rows += [umap_mixture(x, fit_set.classes, 30, d) for d in dims if d != 10]
    near, near_held = neighbours(fit, held)
    report = {
        "command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine(),
        "entry": str(args.entry),
        "neighbour_purity": purity(near, near_held, fit_set.classes, held_set.classes),
        "domain": domain(near, fit, fit_set.domains, held, held_set.domains),
        "umap_gmm_fit_set": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "feature_neighbours.json").write_text(json.dumps(report, indent=2))
    lines = [
        f"Command: `{report['command']}`",
        "",
        "Neighbour purity: " + json.dumps(report["neighbour_purity"]),
        "",
        "REAL/FAKE domain: " + json.dumps(report["domain"]),
        "",
    ]
    lines += ["| UMAP neighbours | dims | acc | NMI | seconds |", "| --- | --- | --- | --- | --- |"]
    lines += [
        f"| {r['neighbours']} | {r['dims']} | {r['acc']:.3f} | {r['nmi']:.3f} | {r['seconds']} |"
        for r in rows
    ]
    (args.out / "feature_neighbours.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
