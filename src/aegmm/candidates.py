"""The mixture's candidates: one fit per seed, side by side in worker processes, and the two
rules that pick one (``LatentMixture`` in mixture.py): the agreement between their clusters, or
how equal their clusters' sizes are."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from joblib import Parallel, delayed
from sklearn.metrics import adjusted_rand_score
from threadpoolctl import threadpool_limits

from .progress import say

# Fewer points than this: the candidates run in the calling process. Since embedding.keep_compiled
# a worker loads UMAP from numba's cache instead of compiling it (about 28 s before), and two
# workers repay themselves from 1,000 CIFAKE feature vectors, the fewest measured: 16.0 -> 10.6 s,
# the same clusters (benchmarks/results/mixture_speed/threshold/NOTES.md).
PARALLEL_MIN_SAMPLES = 1_000


class Candidate(NamedTuple):
    """One seed's fit: its reducer, the lowest-BIC mixture, and what the choices need."""

    reducer: object  # PCA, UMAPPlacement or "passthrough"
    gmm: object  # sklearn's GaussianMixture
    bic_curve: dict[int, float]  # BIC per K tried
    labels: np.ndarray  # the mixture's clusters of the training points
    seconds: dict[int, float]  # fitting time per K tried

    def say_bic(self, progress: bool) -> None:
        """Under n_components "auto", one line per K tried and the choice."""
        if len(self.bic_curve) < 2:
            return
        for k, bic in self.bic_curve.items():
            say(f"  K={k}: BIC {bic:,.1f} ({self.seconds[k]:.1f} s)", enabled=progress)
        best, ks = min(self.bic_curve, key=self.bic_curve.get), list(self.bic_curve)
        say(f"chose K={best} by the lowest BIC over K={ks[0]}..{ks[-1]}", enabled=progress)


def fit_side_by_side(
    fit_one: Callable[[np.ndarray, int], Candidate], points: np.ndarray, seeds: range, n_jobs: int
) -> list[Candidate]:
    """``fit_one(points, seed)`` for each seed, up to ``n_jobs`` at once in joblib's loky workers.

    With more than one seed, each fit runs on one thread, in this process or a worker, so the
    clusters do not depend on ``n_jobs`` (a BLAS or OpenMP pool's thread count can change the
    last bits of a sum, and EM can follow them to another optimum).
    """
    if len(seeds) == 1:
        return [fit_one(points, seeds[0])]
    workers = min(n_jobs, len(seeds)) if len(points) >= PARALLEL_MIN_SAMPLES else 1
    if workers <= 1:
        with threadpool_limits(limits=1):
            return [fit_one(points, seed) for seed in seeds]
    # joblib pickles the task and the fitted candidate between this process and its own workers,
    # in memory (and large arrays through its temporary memory maps); nothing from outside is ever
    # unpickled, and model files stay safetensors and JSON (io.py)
    jobs = (delayed(fit_one)(points, seed) for seed in seeds)
    return Parallel(n_jobs=workers, backend="loky", inner_max_num_threads=1)(jobs)


def agreement(labels: dict[int, np.ndarray]) -> dict[int, float]:
    """Each candidate's mean adjusted Rand index with the other candidates' labels ({} for one)."""
    if len(labels) < 2:
        return {}
    pairs = {(a, b): adjusted_rand_score(labels[a], labels[b]) for a in labels for b in labels if a < b}
    return {seed: float(np.mean([value for pair, value in pairs.items() if seed in pair])) for seed in labels}


def evenness(clusters: np.ndarray, k: int) -> float:
    """How equal the sizes of K clusters are: the entropy of their shares of the points over
    log K; 1 for equal sizes, less the more unequal they are (an empty cluster adds nothing)."""
    if k < 2:
        return 1.0
    shares = np.bincount(clusters, minlength=k) / len(clusters)
    shares = shares[shares > 0]
    return float(-(shares * np.log(shares)).sum() / np.log(k))
