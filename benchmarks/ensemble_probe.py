"""One-off probe (issue 13): does an ensemble of autoencoders avoid the grayscale merged partitions?

For encoder seed s and M members, the features of an image are the bottleneck vectors of the
cached default encoders s, s+1, ..., s+M-1, each scaled to unit length, side by side and divided
by sqrt(M) (so the whole vector has unit length). aegmm's own mixture (`LatentMixture` with the
`auto` settings a single-channel run of that size resolves to: L2, UMAP to 10, 20 EM restarts, 5
candidates kept by agreement, mixture seed s) clusters the fit images' features and assigns the
scored ones, which `quality.py` scores the same way: MNIST's 2,000 held-out digits, or all 1,797
of scikit-learn's digits (transductive). One member is the default itself, refitted.

    python benchmarks/ensemble_probe.py --cache /tmp/qcache --dataset mnist --members 3 \
        --seeds 0,1,2,3,4,5,6,7,8,9 --out OUT

It reads the encoders a full `quality.py --cache` run saved: the MNIST default (10 epochs, clean
inputs), the digits default (39 epochs, noise 0.1) or `mnist3k`, the MNIST default trained on
3,000 of its fit digits (`--variant train_images=3000`: 23 epochs, noise 0.1), for every seed up
to s+M-1. No `--smoke`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.preprocessing import normalize

sys.path.insert(0, str(Path(__file__).resolve().parent))

from aegmm.config import MixtureConfig  # noqa: E402
from aegmm.mixture import LatentMixture  # noqa: E402
from common import agreement, load_digits, load_mnist, machine  # noqa: E402
from digits_failures import DEFAULT_RUNS, cached_runs  # noqa: E402
from report import mean_sd  # noqa: E402


def scored_labels(dataset: str) -> np.ndarray:
    """The labels of the images `quality.py` scores on this dataset."""
    return load_digits().classes if dataset == "digits" else load_mnist(8000, 2000, seed=0)[1].classes


def side_by_side(latents: list[np.ndarray]) -> np.ndarray:
    """Each member's vectors scaled to unit length, concatenated, divided by sqrt(members)."""
    return np.hstack([normalize(x) for x in latents]).astype(np.float32) / np.sqrt(len(latents))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cache", type=Path, required=True, help="the --cache folder of quality.py")
    parser.add_argument("--dataset", choices=sorted(DEFAULT_RUNS), required=True)
    parser.add_argument("--members", type=int, default=3, help="encoders per ensemble")
    parser.add_argument("--seeds", default="0,1,2", help="comma list of first-member encoder seeds")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    folders = dict(cached_runs(args.cache, *DEFAULT_RUNS[args.dataset]))
    wanted = {s + i for s in seeds for i in range(args.members)}
    if missing := sorted(wanted - set(folders)):
        parser.error(f"the cache holds no default {args.dataset} encoder for seeds {missing}")
    arrays = {s: np.load(folders[s] / "arrays.npz") for s in wanted}
    y = scored_labels(args.dataset)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in seeds:
        members = [seed + i for i in range(args.members)]
        fit = side_by_side([arrays[m]["fit_latents"] for m in members])
        scored = side_by_side([arrays[m]["score_latents"] for m in members])
        config = MixtureConfig(n_components=10, seed=seed).resolve(
            channels=1, n_images=len(fit), objective="reconstruction"
        )
        start = time.perf_counter()
        mixture = LatentMixture(config).fit(fit, n_jobs=2)
        seconds = time.perf_counter() - start
        row = {"seed": seed, "members": members, **agreement(y, mixture.predict(scored))}
        row["mixture_s"] = round(seconds, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    summary = {
        "command": " ".join(sys.argv),
        "machine": machine(),
        "dataset": args.dataset,
        "members": args.members,
        "rows": rows,
        **{k: [round(float(v), 4) for v in mean_sd([r[k] for r in rows])] for k in ("acc", "nmi")},
    }
    (args.out / f"{args.dataset}_members{args.members}.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"{args.dataset}, {args.members} members: acc {summary['acc']}, NMI {summary['nmi']}")


if __name__ == "__main__":
    main()
