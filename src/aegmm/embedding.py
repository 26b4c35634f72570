"""UMAP for the mixture: an embedding of the training latents, and the placement of new points in it.

umap-learn's own transform needs its pickled UMAP object; aegmm keeps two arrays instead (the
training inputs and their embedding) and places any point among its nearest training points.
"""

from __future__ import annotations

import sys
from collections import Counter

import numpy as np
from scipy import sparse
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.neighbors import NearestNeighbors

UMAP_NEIGHBORS = 30  # UMAP's n_neighbors (benchmarks/results/umap/FINDINGS.md: 30 split MNIST most reliably)
PLACE_NEIGHBORS = 10  # training points that place a new point in the UMAP embedding and vote its cluster


class UMAPPlacement(TransformerMixin, BaseEstimator):
    """UMAP on the training points; any point is placed by ``knn_place`` among them.

    Training points keep their UMAP positions exactly, and new points are placed the same way
    before and after saving: the fitted state is two arrays (no pickled UMAP object).
    """

    def __init__(self, n_components: int = 2, random_state: int = 0) -> None:
        self.n_components, self.random_state = n_components, random_state

    def fit(self, X: np.ndarray, y=None) -> UMAPPlacement:
        self.inputs_ = np.asarray(X, dtype=np.float32)
        self.embedding_ = umap_embedding(self.inputs_, self.n_components, self.random_state)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        return knn_place(self.inputs_, self.embedding_, np.asarray(X), neighbours=self._index())

    def place(self, X: np.ndarray) -> tuple[np.ndarray, sparse.csr_matrix]:
        """(positions (N, n_components), weights (N, n_training) of the neighbours that placed them)."""
        return knn_place(self.inputs_, self.embedding_, X, return_weights=True, neighbours=self._index())

    def _index(self) -> NearestNeighbors:
        """The search index over the training points, built once for every batch placed."""
        if getattr(self, "neighbours_", None) is None:
            self.neighbours_ = NearestNeighbors(n_neighbors=min(PLACE_NEIGHBORS, len(self.inputs_)))
            self.neighbours_.fit(self.inputs_)
        return self.neighbours_


def import_umap():
    """umap-learn, with its compiled functions kept on disk (``keep_compiled``): the one way
    aegmm, and the benchmarks beside it, get UMAP."""
    try:
        import umap
    except ImportError:
        raise ValueError("reducer 'umap' needs umap-learn: pip install umap-learn") from None
    keep_compiled("umap")
    return umap


def umap_embedding(x: np.ndarray, dim: int, seed: int) -> np.ndarray:
    umap = import_umap()
    neighbours = min(UMAP_NEIGHBORS, len(x) - 1)
    reducer = umap.UMAP(n_components=dim, n_neighbors=neighbours, min_dist=0.0, random_state=seed, n_jobs=1)
    return reducer.fit_transform(x).astype(np.float32)


def knn_place(inputs, embedding, queries, k: int = 10, return_weights: bool = False, neighbours=None):
    """Place points in a fitted embedding: inverse-distance mean of their k nearest fit points.

    A point equal to a fit point lands exactly on that point's embedding, so the training
    images keep their UMAP positions; new images are interpolated the same way before and
    after saving (no pickled UMAP object is needed). With ``return_weights``, also the weights
    as a sparse (queries, inputs) matrix whose rows sum to 1. ``neighbours``: a NearestNeighbors
    already fitted on ``inputs`` (its n_neighbors is then k).
    """
    if neighbours is None:
        neighbours = NearestNeighbors(n_neighbors=min(k, len(inputs))).fit(inputs)
    distances, index = neighbours.kneighbors(queries)
    k = index.shape[1]
    weights = 1.0 / np.maximum(distances, 1e-9) ** 2
    weights /= weights.sum(axis=1, keepdims=True)
    placed = np.einsum("nk,nkd->nd", weights, embedding[index].astype(np.float64))
    if not return_weights:
        return placed
    rows = np.repeat(np.arange(len(queries)), k)
    matrix = sparse.csr_matrix((weights.ravel(), (rows, index.ravel())), shape=(len(queries), len(inputs)))
    return placed, matrix


def keep_compiled(package: str) -> None:
    """Keep the numba functions of ``package`` compiled on disk, as ``cache=True`` would.

    umap-learn compiles its functions in every process that first uses them and caches almost
    none (pynndescent caches its own), so each ``aegmm fit`` and every candidate worker would
    compile them again. Numba writes the cache beside the package's source, or under
    ``NUMBA_CACHE_DIR`` / the user's cache folder, and recompiles when a source file changes;
    a function numba finds no folder for is compiled in memory as before. A Python function
    compiled twice with different options (umap's layout step, serial and parallel) is left
    alone: numba's cache does not key on the options, and one would load the other's code. The
    compiled code is the same, so the embedding is too (benchmarks/results/umap_compile/NOTES.md).
    """
    if package in _KEPT_COMPILED:
        return
    from numba.core.dispatcher import Dispatcher

    modules = [m for n, m in list(sys.modules.items()) if n == package or n.startswith(package + ".")]
    found = {id(f): f for m in modules if m for f in vars(m).values() if isinstance(f, Dispatcher)}
    twice = Counter(id(f.py_func) for f in found.values())
    for function in found.values():
        if twice[id(function.py_func)] == 1 and function.stats.cache_path is None:
            try:
                function.enable_caching()
            except RuntimeError:  # "cannot cache function ...: no locator available"
                continue
    _KEPT_COMPILED.add(package)


_KEPT_COMPILED: set[str] = set()
