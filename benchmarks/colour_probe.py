"""Do the contrastive CIFAKE features lack colour? Append a colour descriptor and cluster again.

The colour views (jitter, random grayscale) teach the encoder to ignore colour, and hue jitter cost
CIFAKE accuracy (`results/loss_probes/NOTES.md`), so the CIFAR classes carry colour cues. This
probe puts a colour descriptor of each image beside a cached encoder's pooled features (a
`quality.py --cache` entry) and clusters both with the default's UMAP mixture:

    pooled -> unit length -> standardised  |  descriptor -> standardised x w
    side by side -> UMAP (10, one seed) -> GaussianMixture (the run's settings, K = 10)

w makes the descriptor's total variance `ratio` times the pooled part's (ratio 0: the features
alone). Descriptors, each fitted on the fit images only:

- `thumb`: the 8 x 8 thumbnail (192 numbers) reduced by PCA to 20 (colour and layout: what the
  pixel peers cluster);
- `grid`: the mean colour of each quarter of the image (12 numbers);
- `hist`: the square root of the 4 x 4 x 4 colour histogram (64 numbers).

One UMAP and mixture per mixture seed (no candidates), scored on the held-out images' CIFAR classes.

    python benchmarks/colour_probe.py /tmp/qcache/ENTRY [...] --ratios 0,0.1,0.25,0.5 --out FILE.jsonl
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import agreement, append_row, cached_features, comma_choices, load_cifake, split_cifake  # noqa: E402
from feature_neighbours import unit  # noqa: E402


def histogram(images: np.ndarray, bins: int = 4) -> np.ndarray:
    """sqrt of each image's share of pixels in each of bins^3 RGB cells: (N, bins^3)."""
    q = (images.astype(np.int64) * bins) // 256
    cell = (q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]
    cells = bins**3
    rows = np.arange(len(images)).reshape(-1, *[1] * (cell.ndim - 1))  # each image's own cells
    counts = np.bincount((cell + rows * cells).ravel(), minlength=len(images) * cells)
    counts = counts.reshape(len(images), cells).astype(np.float32)
    return np.sqrt(counts / counts.sum(1, keepdims=True))


def thumbnail(images: np.ndarray, side: int = 8) -> np.ndarray:
    """Each image averaged down to side x side pixels: (N, side * side * C), in [0, 1]."""
    n, h, w, c = images.shape
    x = images[:, : h - h % side, : w - w % side].astype(np.float32) / 255
    return x.reshape(n, side, h // side, side, w // side, c).mean((2, 4)).reshape(n, -1)


def quarters(images: np.ndarray) -> np.ndarray:
    """The mean colour of each quarter of uint8 (N, H, W, C) images: (N, 4C), in [0, 1]."""
    return thumbnail(images, side=2)


DESCRIPTORS = {"thumb": thumbnail, "grid": quarters, "hist": histogram}
THUMB_COMPONENTS = 20


def with_colour(
    fit: np.ndarray,
    held: np.ndarray,
    fit_images: np.ndarray,
    held_images: np.ndarray,
    descriptor: str,
    ratio: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(fit, held) features: the unit-length features standardised, with the descriptor beside them,
    standardised and scaled so that its total variance on the fit images is `ratio` times theirs."""
    scaler = StandardScaler().fit(unit(fit))
    fit_x, held_x = scaler.transform(unit(fit)), scaler.transform(unit(held))
    if ratio == 0:
        return fit_x, held_x
    describe = DESCRIPTORS[descriptor]
    fit_c, held_c = describe(fit_images), describe(held_images)
    if descriptor == "thumb":
        pca = PCA(THUMB_COMPONENTS, random_state=0).fit(fit_c)
        fit_c, held_c = pca.transform(fit_c), pca.transform(held_c)
    colour = StandardScaler().fit(fit_c)
    fit_c, held_c = colour.transform(fit_c), colour.transform(held_c)
    w = np.sqrt(ratio * fit_x.var(0).sum() / fit_c.var(0).sum())
    return np.hstack([fit_x, w * fit_c]), np.hstack([held_x, w * held_c])


def cluster(config, fit: np.ndarray, held: np.ndarray, seed: int) -> np.ndarray:
    """Held-out labels of a UMAP (10) + GaussianMixture (K = 10, `config`'s settings) fitted on `fit`."""
    from aegmm.embedding import UMAPPlacement
    from aegmm.mixture import make_gmm

    placement = UMAPPlacement(n_components=10, random_state=seed).fit(fit)
    gmm = make_gmm(10, replace(config, n_components=10).resolve(), seed).fit(placement.embedding_)
    return gmm.predict(placement.transform(held))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("entries", nargs="+", type=Path, help="quality.py cache entries (arrays.npz, run/)")
    parser.add_argument("--descriptors", default="thumb", help=f"comma list of {', '.join(DESCRIPTORS)}")
    parser.add_argument("--ratios", default="0,0.1,0.25,0.5")
    parser.add_argument("--mixture-seeds", default="0,1,2")
    parser.add_argument("--out", type=Path, required=True, help="JSON lines, appended")
    args = parser.parse_args(argv)
    descriptors = comma_choices(parser, args.descriptors, DESCRIPTORS, "descriptor")
    ratios = [float(r) for r in args.ratios.split(",")]
    seeds = [int(s) for s in args.mixture_seeds.split(",")]

    import aegmm

    fit_set, held_set = split_cifake(load_cifake())
    for entry in args.entries:
        fit, held = cached_features(entry, fit_set, held_set)
        config = aegmm.load(entry / "run", progress=False).config_
        for descriptor in descriptors:
            for ratio in ratios:
                if ratio == 0 and descriptor != descriptors[0]:
                    continue  # the features alone: once per entry
                x, y = with_colour(fit, held, fit_set.images, held_set.images, descriptor, ratio)
                for seed in seeds:
                    start = time.perf_counter()
                    row = {"entry": str(entry), "seed": config.train.seed, "descriptor": descriptor}
                    row |= {"ratio": ratio, "mixture_seed": seed}
                    row |= agreement(held_set.classes, cluster(config.mixture, x, y, seed))
                    append_row(row | {"seconds": round(time.perf_counter() - start)}, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
