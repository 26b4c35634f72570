"""Which features of a trained encoder cluster best: the same network read several ways.

    python benchmarks/feature_probe.py RUN [RUN ...] --kinds bottleneck,pooled,gem [--jobs 2] --out FILE.jsonl

RUN is a saved run folder (e.g. the `run/` of a `quality.py --cache` entry: the default
contrastive encoders). Each kind of feature is computed for the CIFAKE split of `quality.py`
(16,000 fit / 4,000 held-out) and clustered by the run's own mixture settings with
`--candidates` candidates (1 by default, to keep it cheap); one JSON line per (run, kind) with the
held-out agreement with the CIFAR classes. Kinds:

- `bottleneck`: the latent vector (what runs saved before `--features` clustered);
- `pooled`: the trunk's average-pooled output (512 x width numbers);
- `l3l4`: the third and fourth stages' pooled outputs, each L2-normalised, side by side;
- `gem`: the last stage's average- and max-pooled outputs, each L2-normalised, side by side;
- `flip_<kind>` / `tta_<kind>`: the mean of the L2-normalised readings of the image and its
  mirror image / of those two and four 28-px corner crops resized back to 32 px (test-time
  augmentation).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from common import append_row, held_out_agreement, load_cifake, split_cifake

BASE = ("bottleneck", "pooled", "l3l4", "gem")
AVERAGED = ("flip_", "tta_")  # prefixes: the kind averaged over views of each image


def base_of(kind: str) -> str:
    """The kind read from each view: "pooled" for "tta_pooled", the kind itself otherwise."""
    return kind.split("_", 1)[1] if kind.startswith(AVERAGED) else kind


def readings(encoder, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every base kind of feature of one normalised batch, from one pass."""
    third = encoder.stages[:3](encoder.stem(x))
    last = encoder.stages[3](third)
    pooled = last.mean((2, 3))
    return {
        "bottleneck": encoder.bottleneck(pooled),
        "pooled": pooled,
        "l3l4": torch.cat([F.normalize(third.mean((2, 3)), dim=1), F.normalize(pooled, dim=1)], 1),
        "gem": torch.cat([F.normalize(pooled, dim=1), F.normalize(last.amax((2, 3)), dim=1)], 1),
    }


def views(x: torch.Tensor, kind: str) -> list[torch.Tensor]:
    if kind.startswith("flip_"):
        return [x, x.flip(3)]
    side = x.shape[-1]
    crop = side - side // 8
    corners = [(0, 0), (0, side - crop), (side - crop, 0), (side - crop, side - crop)]
    crops = [x[:, :, i : i + crop, j : j + crop] for i, j in corners]
    resized = [F.interpolate(c, size=side, mode="bilinear", align_corners=False) for c in crops]
    return [x, x.flip(3), *resized]


@torch.inference_mode()
def features(clusterer, images: np.ndarray, kind: str, batch: int = 500) -> np.ndarray:
    encoder, normalizer = clusterer.autoencoder_.encoder.eval(), clusterer.normalizer_
    base = base_of(kind)
    out = []
    for start in range(0, len(images), batch):
        x = normalizer.to_tensor(images[start : start + batch], torch.device("cpu"))
        if base == kind:
            out.append(readings(encoder, x)[kind].numpy())
            continue
        each = [F.normalize(readings(encoder, v)[base], dim=1) for v in views(x, kind)]
        out.append(torch.stack(each).mean(0).numpy())
    return np.concatenate(out)


def main(argv=None) -> int:
    layout = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=layout)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--kinds", default="bottleneck,pooled")
    parser.add_argument("--candidates", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=1, help="worker processes for the candidates")
    parser.add_argument("--out", type=Path, required=True, help="JSON lines, appended")
    args = parser.parse_args(argv)
    kinds = args.kinds.split(",")
    for kind in kinds:
        if base_of(kind) not in BASE:
            parser.error(f"unknown kind {kind!r}; expected {', '.join(BASE)}, optionally as flip_/tta_")

    import aegmm

    fit, scored = split_cifake(load_cifake())
    for run in args.runs:
        clusterer = aegmm.load(run, progress=False)
        for kind in kinds:
            start = time.perf_counter()
            fit_x, scored_x = features(clusterer, fit.images, kind), features(clusterer, scored.images, kind)
            config = replace(clusterer.config_.mixture, candidates=args.candidates)
            row = {"run": str(run), "seed": clusterer.config_.train.seed, "kind": kind}
            row |= {"candidates": args.candidates}
            row |= held_out_agreement(config, fit_x, scored_x, scored.classes, args.jobs)
            append_row(row | {"seconds": round(time.perf_counter() - start)}, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
