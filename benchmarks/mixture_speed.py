"""How long the UMAP mixture's candidates take, one after the other or in worker processes.

Fits the colour default (a contrastive encoder, seed 0) on the CIFAKE fit split of
`quality.py` unless `--run` already holds a saved run, encodes the fit images, then fits the
mixture `auto` picks for such features (L2, UMAP to 10, 20 EM restarts, 5 candidates) on the
first N of them, once per `--jobs` value, each in a fresh process (so every row pays numba's
compilation of UMAP, as a fresh `aegmm fit` does), and checks that every row kept the same
clusters.

    python benchmarks/mixture_speed.py --run /tmp/exp/cifake_s0 --sizes 2000,8000,16000 --jobs 1,2 \
        --out benchmarks/results/mixture_speed

Run from a checkout without `n_jobs` (before the candidates ran in workers), the mixture fits as
that code did, whatever `--jobs` says.

    python benchmarks/mixture_speed.py --smoke   # does it run? 600 subset images, a tiny network, PCA

`--parallel-min N` moves the size from which candidates go to workers (the library's
`PARALLEL_MIN_SAMPLES`) for the rows of this run, so smaller collections can be timed both ways.

The smoke run fits a tiny network on 600 images of `cifake_train_subset.npz` into a temporary
folder and times one PCA mixture (UMAP would spend half a minute compiling in the child).
"""

from __future__ import annotations

import argparse
import inspect
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from common import load_cifake, load_cifake_subset, machine, output_folder, split_cifake

# the smoke's encoder run fits with PCA too: it need not compile UMAP either
SMOKE_FIT = dict(image_size=16, width=0.125, latent_dim=8, epochs=1, batch_size=64, reducer="pca")


def fit_images(smoke: bool) -> np.ndarray:
    """The CIFAKE fit split of quality.py, or 600 subset images for a smoke run."""
    return load_cifake_subset().images[:600] if smoke else split_cifake(load_cifake())[0].images


def ensure_run(run: Path, seed: int, smoke: bool) -> dict:
    """The saved default run (fitted and timed here if the folder does not exist yet)."""
    from aegmm import ImageClusterer

    if run.exists():
        return {"run": str(run), "fitted_here": False}
    started = time.perf_counter()
    options = SMOKE_FIT if smoke else {}
    ImageClusterer(seed=seed, progress=not smoke, **options).fit(fit_images(smoke)).save(run)
    return {"run": str(run), "fitted_here": True, "fit_seconds": round(time.perf_counter() - started, 1)}


def encode(run: Path, features: Path, smoke: bool) -> None:
    import aegmm

    np.save(features, aegmm.load(run, progress=False).transform(fit_images(smoke)))


def one_fit(features: Path, n: int, jobs: int, labels: Path, reducer: str, parallel_min: int) -> dict:
    """Child process: the mixture on the first n feature vectors, with `jobs` workers (from
    `parallel_min` points on; below 0: the library's own threshold)."""
    from aegmm import candidates
    from aegmm.config import MixtureConfig
    from aegmm.mixture import LatentMixture

    if parallel_min >= 0:
        candidates.PARALLEL_MIN_SAMPLES = parallel_min

    x = np.load(features)[:n]
    umap = {"normalize": "l2", "reduced_dim": 10, "n_init": 20, "candidates": 5}  # auto's, for such features
    config = MixtureConfig(n_components=10, reducer=reducer, **umap)
    mixture = LatentMixture(config)
    started = time.perf_counter()
    if "n_jobs" in inspect.signature(LatentMixture.fit).parameters:
        mixture.fit(x, n_jobs=jobs)
    else:
        mixture.fit(x)
    seconds = time.perf_counter() - started
    np.save(labels, mixture.predict(x))
    agreement = {str(seed): round(value, 6) for seed, value in mixture.agreement_.items()}
    return {
        "seconds": round(seconds, 1),
        "parallel_min": candidates.PARALLEL_MIN_SAMPLES,
        "agreement": agreement,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a saved CIFAKE run (fitted here if missing)")
    parser.add_argument("--sizes", default="2000,8000,16000")
    parser.add_argument("--jobs", default="1,2", help="worker processes to try, comma-separated")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="folder for mixture_speed.json (required unless --smoke)")
    parser.add_argument("--smoke", action="store_true", help="600 images, a tiny network, PCA, seconds")
    parser.add_argument(
        "--parallel-min",
        type=int,
        default=-1,
        help="fit in workers from this many points on (default: aegmm.candidates.PARALLEL_MIN_SAMPLES)",
    )
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        features, n, jobs, labels, reducer, parallel_min = args.child
        print(
            json.dumps(one_fit(Path(features), int(n), int(jobs), Path(labels), reducer, int(parallel_min)))
        )
        return 0
    if args.smoke:
        args.sizes, args.jobs = "600", "1,2"
    elif args.out is None or args.run is None:
        parser.error("--run and --out are required (or give --smoke)")
    args.out = output_folder(args.out, args.smoke)
    args.run = args.run or args.out / "run"
    reducer = "pca" if args.smoke else "umap"
    args.out.mkdir(parents=True, exist_ok=True)
    record = {"command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}
    record["machine_start"] = machine()
    record["encoder"] = ensure_run(args.run, args.seed, args.smoke)
    features = args.out / "features.npy"
    encode(args.run, features, args.smoke)
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        for jobs in (int(s) for s in args.jobs.split(",")):
            labels = args.out / f"labels_{n}_{jobs}.npy"
            where = [str(features), str(n), str(jobs), str(labels), reducer, str(args.parallel_min)]
            child = [sys.executable, __file__, "--child", *where]
            done = subprocess.run(child, check=True, capture_output=True, text=True)
            row = {"n": n, "jobs": jobs, **json.loads(done.stdout.strip().splitlines()[-1])}
            first = args.out / f"labels_{n}_{args.jobs.split(',')[0]}.npy"
            row["same_labels_as_first_row"] = bool(np.array_equal(np.load(labels), np.load(first)))
            rows.append(row)
            print(row, flush=True)
    features.unlink()
    for path in args.out.glob("labels_*.npy"):
        path.unlink()
    record |= {"rows": rows, "machine_end": machine()}
    (args.out / "mixture_speed.json").write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
