"""How long the UMAP mixture's candidates take, one after the other or in worker processes.

Fits the colour default (a contrastive encoder, seed 0) on the CIFAKE fit split of
`quality.py` unless `--run` already holds a saved run, encodes the fit images, then fits the
mixture `auto` picks for such features (L2, UMAP to 10, 20 EM restarts, 5 candidates) on the
first N of them, once per `--jobs` value, each in a fresh process (so every row pays numba's
compilation of UMAP, as a fresh `aegmm fit` does), and checks that every row kept the same
clusters.

    python benchmarks/mixture_speed.py --run /tmp/exp/cifake_s0 --sizes 2000,8000,16000 --jobs 1,2 \
        --out benchmarks/results/mixture_speed

Run from a checkout without `n_jobs` (before the candidates ran in workers), the rows say
"before" and fit as that code did.
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

from common import load_cifake, machine, split_cifake


def ensure_run(run: Path, seed: int) -> dict:
    """The saved default run (fitted and timed here if the folder does not exist yet)."""
    from aegmm import ImageClusterer

    if run.exists():
        return {"run": str(run), "fitted_here": False}
    fit, _ = split_cifake(load_cifake())
    started = time.perf_counter()
    ImageClusterer(seed=seed, progress=True).fit(fit.images).save(run)
    return {"run": str(run), "fitted_here": True, "fit_seconds": round(time.perf_counter() - started, 1)}


def encode(run: Path, features: Path) -> None:
    import aegmm

    fit, _ = split_cifake(load_cifake())
    np.save(features, aegmm.load(run, progress=False).transform(fit.images))


def one_fit(features: Path, n: int, jobs: int, labels: Path) -> dict:
    """Child process: the UMAP mixture on the first n feature vectors, with `jobs` workers."""
    from aegmm.config import MixtureConfig
    from aegmm.mixture import LatentMixture

    x = np.load(features)[:n]
    umap = {"reducer": "umap", "normalize": "l2", "reduced_dim": 10, "n_init": 20, "candidates": 5}
    config = MixtureConfig(n_components=10, **umap)  # what auto picks for contrastive features
    mixture = LatentMixture(config)
    started = time.perf_counter()
    if "n_jobs" in inspect.signature(LatentMixture.fit).parameters:
        mixture.fit(x, n_jobs=jobs)
    else:
        mixture.fit(x)
    seconds = time.perf_counter() - started
    np.save(labels, mixture.predict(x))
    agreement = {str(seed): round(value, 6) for seed, value in mixture.agreement_.items()}
    return {"seconds": round(seconds, 1), "agreement": agreement}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a saved CIFAKE run (fitted here if missing)")
    parser.add_argument("--sizes", default="2000,8000,16000")
    parser.add_argument("--jobs", default="1,2", help="worker processes to try, comma-separated")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        features, n, jobs, labels = args.child
        print(json.dumps(one_fit(Path(features), int(n), int(jobs), Path(labels))))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    record = {"command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}
    record["machine_start"] = machine()
    record["encoder"] = ensure_run(args.run, args.seed)
    features = args.out / "features.npy"
    encode(args.run, features)
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        for jobs in (int(s) for s in args.jobs.split(",")):
            labels = args.out / f"labels_{n}_{jobs}.npy"
            child = [sys.executable, __file__, "--run", str(args.run), "--out", str(args.out)]
            done = subprocess.run([*child, "--child", str(features), str(n), str(jobs), str(labels)],
                                  check=True, capture_output=True, text=True)  # fmt: skip
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
