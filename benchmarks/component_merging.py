"""One-off probe (issue 13): do more Gaussian components than clusters, merged down to K, mend the
digits' merged partition? On the digits default's encoders that a `quality.py --cache` run saved
(the same ones as `digits_failures.py`), for each encoder and mixture seeds 0..S-1 it embeds the
latents as aegmm's UMAP candidate does (L2, standardised, UMAP 10-D with 30 neighbours and min_dist
0), fits a full GaussianMixture with K + EXTRA components (20 EM restarts, aegmm's reg_covar,
scikit-learn's 100 EM iterations), and merges components pairwise until K clusters are left, by
one of three rules:

- entropy: the pair whose merging lowers the entropy of the soft memberships most (Baudry et al.,
  "Combining mixture components for clustering", JCGS 2010): the pair the mixture confuses most;
- ward-latent: the pair whose merging adds the least within-cluster sum of squares in the
  standardised latents (Ward's linkage on the encoder's space, not UMAP's);
- ward-umap: the same in the UMAP embedding.

EXTRA = 0 is the plain K-component mixture of one candidate. Accuracy and NMI are on all 1,797
digits against their labels (the same transductive scoring as `quality.py`).

    python benchmarks/component_merging.py --cache /tmp/qcache --seeds 3 --extra 0,1,2 > OUT.txt

No `--smoke`: it reads only what a full `quality.py` run cached.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from sklearn.mixture import GaussianMixture
from sklearn.preprocessing import StandardScaler, normalize

sys.path.insert(0, str(Path(__file__).resolve().parent))

from aegmm.config import MixtureConfig  # noqa: E402
from aegmm.embedding import umap_embedding  # noqa: E402
from common import agreement, load_digits  # noqa: E402
from digits_failures import cached_runs  # noqa: E402

K = 10
REG_COVAR = MixtureConfig().reg_covar  # aegmm's; EM iterations stay sklearn's 100 (aegmm: 300)


def merge_entropy(proba: np.ndarray, k: int) -> list[list[int]]:
    """Groups of component indices, merged pairwise by the largest fall in membership entropy."""
    groups = [[j] for j in range(proba.shape[1])]
    t = proba.copy()
    while len(groups) > k:
        xlogx = t * np.log(np.clip(t, 1e-300, None))
        best, pair = -np.inf, (0, 1)
        for a in range(len(groups)):
            for b in range(a + 1, len(groups)):
                both = t[:, a] + t[:, b]
                gain = (both * np.log(np.clip(both, 1e-300, None)) - xlogx[:, a] - xlogx[:, b]).sum()
                if gain > best:
                    best, pair = gain, (a, b)
        a, b = pair
        t[:, a] += t[:, b]
        t = np.delete(t, b, axis=1)
        groups[a] += groups.pop(b)
    return groups


def merge_ward(x: np.ndarray, labels: np.ndarray, n_components: int, k: int) -> list[list[int]]:
    """Groups of component indices, merged pairwise by the smallest rise in within-group sum of
    squares of `x` (Ward's linkage over the components' hard clusters)."""
    groups = [[j] for j in range(n_components)]
    sizes = [np.sum(labels == j) for j in range(n_components)]
    means = [x[labels == j].mean(0) if sizes[j] else np.zeros(x.shape[1]) for j in range(n_components)]
    while len(groups) > k:
        best, pair = np.inf, (0, 1)
        for a in range(len(groups)):
            for b in range(a + 1, len(groups)):
                if not sizes[a] or not sizes[b]:
                    cost = 0.0
                else:
                    cost = sizes[a] * sizes[b] / (sizes[a] + sizes[b]) * np.sum((means[a] - means[b]) ** 2)
                if cost < best:
                    best, pair = cost, (a, b)
        a, b = pair
        total = sizes[a] + sizes[b]
        if total:
            means[a] = (sizes[a] * means[a] + sizes[b] * means[b]) / total
        sizes[a] = total
        del sizes[b], means[b]
        groups[a] += groups.pop(b)
    return groups


def grouped(labels: np.ndarray, groups: list[list[int]]) -> np.ndarray:
    to_cluster = {j: g for g, members in enumerate(groups) for j in members}
    return np.array([to_cluster[j] for j in labels])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cache", type=Path, required=True, help="the --cache folder of quality.py")
    parser.add_argument("--seeds", type=int, default=3, help="mixture seeds per encoder (0..S-1)")
    parser.add_argument("--extra", default="0,1,2", help="comma list of extra components")
    args = parser.parse_args()
    extras = [int(e) for e in args.extra.split(",")]
    digits = load_digits().classes
    scores: dict[tuple[int, str], list[tuple[float, float]]] = {}
    for encoder, folder in cached_runs(args.cache):
        latents = np.load(folder / "arrays.npz")["fit_latents"].astype(np.float64)
        standard = StandardScaler().fit_transform(latents)
        x = StandardScaler().fit_transform(normalize(latents))
        for seed in range(args.seeds):
            embedded = umap_embedding(x.astype(np.float32), K, seed).astype(np.float64)
            line = []
            for extra in extras:
                gmm = GaussianMixture(
                    K + extra, covariance_type="full", n_init=20, reg_covar=REG_COVAR, random_state=seed
                ).fit(embedded)
                labels, proba = gmm.predict(embedded), gmm.predict_proba(embedded)
                rules = (
                    {"plain": [[j] for j in range(K)]}
                    if extra == 0
                    else {
                        "entropy": merge_entropy(proba, K),
                        "ward-latent": merge_ward(standard, labels, K + extra, K),
                        "ward-umap": merge_ward(embedded, labels, K + extra, K),
                    }
                )
                for rule, groups in rules.items():
                    a = agreement(digits, grouped(labels, groups))
                    scores.setdefault((extra, rule), []).append((a["acc"], a["nmi"]))
                    line.append(f"+{extra} {rule} {a['acc']:.3f}")
            print(f"encoder {encoder} mixture seed {seed}: " + "; ".join(line), flush=True)
    print()
    for (extra, rule), values in scores.items():
        v = np.array(values)
        right = np.mean(v[:, 0] > 0.93)
        print(
            f"K+{extra} {rule}: acc {v[:, 0].mean():.3f} ± {v[:, 0].std(ddof=1):.3f}, "
            f"NMI {v[:, 1].mean():.3f} ± {v[:, 1].std(ddof=1):.3f}, right partition (acc > 0.93) {right:.0%} "
            f"of {len(v)}"
        )


if __name__ == "__main__":
    main()
