"""Issue 13: is the mixture what holds CIFAKE back? Other ways to cluster the same frozen features.

    python benchmarks/cluster_alternatives.py --cache /tmp/qcache --out DIR [--threads 2]

Reads every CIFAKE run that `quality.py --datasets cifake --cache DIR` trained on the split of
seed 0 (16,000 fit / 4,000 held-out images) and clusters its cached features (what the mixture
clusters: the trunk's pooled output for contrastive encoders) in other ways. Every method is
fitted on the fit images only and scored on the held-out ones against the 10 CIFAR classes:

- mixture: the run's own fitted mixture (UMAP candidates kept by agreement), as `aegmm fit` gives;
- scan: SCAN's clustering step (Van Gansbeke et al., ECCV 2020) on frozen features: a linear
  softmax head on the standardised features, trained so that each fit image and one of its 20
  nearest neighbours (cosine) agree, minus 5 x the entropy of the mean assignment; the lowest-loss
  of 5 heads; held-out images by the head;
- scan+gmm: a full-covariance GaussianMixture in the mixture's own UMAP space started from the scan
  head's clusters, held-out images placed as the mixture places them;
- over K=20 / K=50: a GaussianMixture with 20 or 50 components in that UMAP space, its components
  merged to 10 by average linkage on how many 20-nearest-neighbour links (unit-length features)
  join them, relative to their sizes;
- spectral: scikit-learn's SpectralClustering on the symmetric 20-nearest-neighbour graph of the
  unit-length features; held-out images by a vote of their 20 nearest fit images;
- smoothed: the mixture's fit labels replaced three times by the vote of each image and its 20
  nearest fit images, held-out images by the vote of their 20 nearest fit images;
- 20-NN vote with the labels: not a clustering, a ceiling on what the neighbourhoods hold: each
  held-out image gets the majority CIFAR class of its 20 nearest fit images.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import sparse
from sklearn.cluster import AgglomerativeClustering, SpectralClustering
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import NearestNeighbors
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import agreement, load_cifake, machine, split_cifake  # noqa: E402
from feature_neighbours import unit  # noqa: E402

K = 10
NEIGHBOURS = 20
METHODS = ("mixture", "scan", "scan+gmm", "over K=20", "over K=50", "spectral", "smoothed", "20-NN vote")


def vote(labels: np.ndarray, near: np.ndarray, k: int = K) -> np.ndarray:
    """Each row's most frequent label among its neighbours `near` (indices into `labels`)."""
    counts = np.zeros((len(near), k))
    for j in range(near.shape[1]):
        np.add.at(counts, (np.arange(len(near)), labels[near[:, j]]), 1)
    return counts.argmax(1)


def scan_head(
    x: np.ndarray, near: np.ndarray, seed: int, heads: int = 5, epochs: int = 30, entropy: float = 5
):
    """The lowest-loss of `heads` linear heads trained with SCAN's loss; a predict function."""
    mu, sd = x.mean(0), x.std(0) + 1e-8
    xt = torch.tensor((x - mu) / sd, dtype=torch.float32)
    best, best_loss = None, float("inf")
    for h in range(heads):
        torch.manual_seed(seed * 100 + h)
        head = torch.nn.Linear(x.shape[1], K)
        opt = torch.optim.Adam(head.parameters(), lr=1e-3, weight_decay=1e-4)
        g = torch.Generator().manual_seed(seed * 100 + h)
        total = 0.0
        for _ in range(epochs):
            total = 0.0
            for idx in torch.randperm(len(xt), generator=g).split(256):
                pick = torch.randint(near.shape[1], (len(idx),), generator=g).numpy()
                j = torch.from_numpy(near[idx.numpy(), pick])
                p, q = head(xt[idx]).softmax(1), head(xt[j]).softmax(1)
                consistency = -torch.log((p * q).sum(1).clamp_min(1e-8)).mean()
                mean_p = p.mean(0)
                loss = consistency + entropy * (mean_p * torch.log(mean_p.clamp_min(1e-8))).sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
        if total < best_loss:
            best, best_loss = head, total

    @torch.no_grad()
    def predict(z: np.ndarray) -> np.ndarray:
        return best(torch.tensor((z - mu) / sd, dtype=torch.float32)).argmax(1).numpy()

    return predict


def gmm_from_labels(space: np.ndarray, labels: np.ndarray, seed: int) -> GaussianMixture:
    """A full-covariance mixture started from the labels' groups (groups too small to estimate dropped)."""
    groups = [k for k in np.unique(labels) if (labels == k).sum() > space.shape[1]]
    means, precisions = [], []
    for k in groups:
        members = space[labels == k]
        means.append(members.mean(0))
        d = members - means[-1]
        precisions.append(np.linalg.inv(d.T @ d / len(d) + 1e-4 * np.eye(space.shape[1])))
    weights = np.array([(labels == k).sum() for k in groups], dtype=float)
    gmm = GaussianMixture(
        len(groups),
        covariance_type="full",
        reg_covar=1e-4,
        random_state=seed,
        max_iter=300,
        weights_init=weights / weights.sum(),
        means_init=np.array(means),
        precisions_init=np.array(precisions),
    )
    return gmm.fit(space)


def over_merged(space, test_space, near: np.ndarray, components: int, seed: int) -> np.ndarray:
    """Held-out labels of a `components`-component mixture merged to K by neighbour links."""
    gmm = GaussianMixture(components, covariance_type="full", n_init=3, reg_covar=1e-4, random_state=seed)
    labels = gmm.fit(space).predict(space)
    links = np.zeros((components, components))
    np.add.at(links, (np.repeat(labels, near.shape[1]), labels[near].ravel()), 1)
    links = links + links.T
    sizes = np.bincount(labels, minlength=components)
    affinity = links / np.sqrt(np.outer(sizes, sizes) + 1e-9)
    np.fill_diagonal(affinity, 0)
    merge = AgglomerativeClustering(K, metric="precomputed", linkage="average")
    groups = merge.fit(affinity.max() - affinity).labels_
    return groups[gmm.predict(test_space)]


def spectral(near: np.ndarray, seed: int) -> np.ndarray:
    n = len(near)
    rows = np.repeat(np.arange(n), near.shape[1])
    graph = sparse.csr_matrix((np.ones(near.size), (rows, near.ravel())), shape=(n, n))
    graph = ((graph + graph.T) > 0).astype(float)
    model = SpectralClustering(K, affinity="precomputed", random_state=seed, assign_labels="cluster_qr")
    return model.fit(graph).labels_


def alternatives(folder: Path, fit, held_out) -> dict:
    """Held-out agreement of every method on one cached run; the run's training settings."""
    from aegmm import load

    with np.load(folder / "arrays.npz") as arrays:
        fit_x, test_x = arrays["fit_latents"], arrays["score_latents"]
    clusterer = load(folder / "run")
    model, train = clusterer.config_.model, clusterer.config_.train
    seed, mixture = int(train.seed), clusterer.mixture_
    index = NearestNeighbors(n_neighbors=NEIGHBOURS + 1).fit(unit(fit_x))
    near = index.kneighbors(unit(fit_x), return_distance=False)[:, 1:]  # without the image itself
    test_near = index.kneighbors(unit(test_x), n_neighbors=NEIGHBOURS, return_distance=False)
    (space, fit_proba, _), (test_space, test_proba, _) = (
        mixture.score(x, with_features=True) for x in (fit_x, test_x)
    )  # one placement each: the mixture's space and its memberships
    fit_labels = fit_proba.argmax(1)
    predicted, seconds = {"mixture": test_proba.argmax(1)}, {}
    started = time.perf_counter()
    scan = scan_head(fit_x, near, seed)
    predicted["scan"] = scan(test_x)
    predicted["scan+gmm"] = gmm_from_labels(space, scan(fit_x), seed).predict(test_space)
    seconds["scan"] = time.perf_counter() - started
    for components in (20, 50):
        predicted[f"over K={components}"] = over_merged(space, test_space, near, components, seed)
    started = time.perf_counter()
    predicted["spectral"] = vote(spectral(near, seed), test_near)
    seconds["spectral"] = time.perf_counter() - started
    smoothed = fit_labels
    for _ in range(3):
        smoothed = vote(smoothed, np.hstack([np.arange(len(near))[:, None], near]))
    predicted["smoothed"] = vote(smoothed, test_near)
    predicted["20-NN vote"] = vote(fit.classes, test_near)
    row = {
        "folder": folder.name,
        "seed": seed,
        "network": f"stem {model.stem}, width {model.width}, {train.objective}, {train.epochs} epochs",
        "seconds": {name: round(value, 1) for name, value in seconds.items()},
    }
    return row | {name: agreement(held_out.classes, labels) for name, labels in predicted.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", type=Path, required=True, help="quality.py's --cache folder")
    p.add_argument("--out", type=Path, required=True, help="folder for alternatives.json and .md")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    fit, held_out = split_cifake(load_cifake())
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    with threadpool_limits(args.threads):
        for folder in sorted(args.cache.iterdir()):
            if not (folder / "arrays.npz").exists():
                continue
            with np.load(folder / "arrays.npz") as arrays:
                sizes = len(arrays["fit_latents"]), len(arrays["score_latents"])
            if sizes != (len(fit.classes), len(held_out.classes)):
                continue  # another data set's run
            rows.append(alternatives(folder, fit, held_out))
            print(json.dumps(rows[-1]), flush=True)
    record = {"command": "python " + " ".join(sys.argv), "machine": machine(), "rows": rows}
    (args.out / "alternatives.json").write_text(json.dumps(record, indent=1) + "\n")
    lines = [
        f"Command: `{record['command']}`",
        "",
        "Held-out CIFAKE images (4,000), the 10 CIFAR classes: accuracy / NMI.",
        "",
        "| network | seed | " + " | ".join(METHODS) + " |",
        "| --- | --- | " + " | ".join("---" for _ in METHODS) + " |",
    ]
    for row in rows:
        cells = [f"{row[m]['acc']:.3f} / {row[m]['nmi']:.3f}" for m in METHODS]
        lines.append(f"| {row['network']} | {row['seed']} | " + " | ".join(cells) + " |")
    (args.out / "alternatives.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
