"""How the mixture scales latent vectors before standardising them (MixtureConfig.normalize).

A vector may hold several members' vectors side by side (``--members``, MixtureConfig.parts).
"l2" scales each member's part to unit length and the whole to unit length, so every member
weighs the same and only directions count; "none" keeps the lengths, which the standardising
then weighs like any other number. "both" fits the mixture's candidates under each and keeps one
(mixture.py): a vector's length separates some groups (the digits' 1s from their 8s) and splits
others (MNIST's 1s), and no single scaling is right on both
(benchmarks/results/scalings/NOTES.md).
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.preprocessing import normalize

SCALINGS = ("l2", "none")  # what "both" tries, in this order


class UnitParts(TransformerMixin, BaseEstimator):
    """Each of ``parts`` equal slices of a vector scaled to length 1/sqrt(parts) (scikit-learn's
    ``normalize`` on each; with one part, its Normalizer). Stateless; a zero slice stays zero."""

    def __init__(self, parts: int = 1) -> None:
        self.parts = parts

    def fit(self, X: np.ndarray, y=None) -> UnitParts:
        n = np.shape(X)[1]
        if n % self.parts:
            raise ValueError(f"{n} numbers per vector do not split into {self.parts} equal parts")
        self.n_features_in_ = n
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        x = np.asarray(X, dtype=np.float64)
        unit = normalize(x.reshape(len(x) * self.parts, -1)).reshape(x.shape)
        return unit / np.sqrt(self.parts)


def normalizers(normalize: str, parts: int, n_features: int) -> dict[str, object]:
    """The scalings to try for `normalize` ("l2", "none" or "both"), by name: a fitted UnitParts
    or "passthrough" (a Pipeline's word for no step)."""
    names = SCALINGS if normalize == "both" else (normalize,)
    return {name: normalizer(name, parts, n_features) for name in names}


def normalizer(name: str, parts: int, n_features: int):
    """UnitParts(parts), fitted for `n_features` numbers, for "l2"; "passthrough" for "none"."""
    if name == "none":
        return "passthrough"
    return UnitParts(parts).fit(np.zeros((1, n_features)))
