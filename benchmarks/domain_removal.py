"""Would the CIFAKE clusters improve if the features lost the REAL/FAKE domain? An upper bound,
with the domain labels, on cached encoders' features (`quality.py --cache` entries, trained on
the CIFAKE fit split; `feature_neighbours.py` measures how much of the domain they keep):

- `none`: the features as they are;
- `project`: the direction of a logistic regression reading the domain (fitted on the fit images'
  L2-normalised features) projected out of every L2-normalised feature;
- `center`: each domain's mean over the fit images subtracted from the L2-normalised features of
  that domain (held-out images by their true domain).

Each is clustered by the entry's own mixture settings (the default: L2, UMAP, five candidates)
and scored on the held-out images. If even these oracles gain no more than a seed spread, a
label-free way to remove the domain is not worth building.

    python benchmarks/domain_removal.py /tmp/qcache/ENTRY [...] --jobs 2 --out FILE.jsonl
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    append_row,
    cached_features,
    comma_choices,
    held_out_agreement,
    load_cifake,
    split_cifake,
)
from feature_neighbours import unit  # noqa: E402

REMOVALS = ("none", "project", "center")


def remove_domain(
    removal: str, fit: np.ndarray, fit_domains: np.ndarray, held: np.ndarray, held_domains: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(fit, held) features with the domain removed as `removal` says (see the module's list)."""
    if removal == "none":
        return fit, held
    fit, held = unit(fit), unit(held)
    if removal == "project":
        w = LogisticRegression(max_iter=2000).fit(fit, fit_domains).coef_[0]
        w /= np.linalg.norm(w)
        return fit - np.outer(fit @ w, w), held - np.outer(held @ w, w)
    if removal == "center":
        names = np.unique(fit_domains)  # sorted: a domain's row in `means` is its searchsorted index
        means = np.stack([fit[fit_domains == d].mean(0) for d in names])
        row = lambda domains: means[np.searchsorted(names, domains)]  # noqa: E731
        return fit - row(fit_domains), held - row(held_domains)
    raise ValueError(f"removal must be one of {', '.join(REMOVALS)}, got {removal!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("entries", nargs="+", type=Path, help="quality.py cache entries (arrays.npz, run/)")
    parser.add_argument("--removals", default=",".join(REMOVALS))
    parser.add_argument("--jobs", type=int, default=1, help="worker processes for the candidates")
    parser.add_argument("--out", type=Path, required=True, help="JSON lines, appended")
    args = parser.parse_args(argv)
    removals = comma_choices(parser, args.removals, REMOVALS, "removal")

    import aegmm

    fit_set, held_set = split_cifake(load_cifake())
    for entry in args.entries:
        fit, held = cached_features(entry, fit_set, held_set)
        config = aegmm.load(entry / "run", progress=False).config_
        for removal in removals:
            start = time.perf_counter()
            x, y = remove_domain(removal, fit, fit_set.domains, held, held_set.domains)
            row = {"entry": str(entry), "seed": config.train.seed, "removal": removal}
            row |= held_out_agreement(config.mixture, x, y, held_set.classes, args.jobs)
            append_row(row | {"seconds": round(time.perf_counter() - start)}, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
