"""Peak memory of fit and assign as the number of 32x32 images grows (streaming data path).

Generates N random 32x32 RGB images straight into a memory-mapped .npy (chunk by chunk), then
runs `aegmm fit` and `aegmm assign` on it in child processes and records each one's peak
resident memory (ru_maxrss of the child) and wall time.

    python benchmarks/scale.py --sizes 100000 1000000 --out benchmarks/results/scale.md
    python benchmarks/scale.py --smoke --out /tmp/scale/scale.md   # does it run? 2,000 images, seconds

Training cost would grow with N, so the fit trains a narrow network for one epoch on a random
20,000 of the images (`--train-images`), then encodes and clusters all N: the point is the memory
curve, not the clusters. Besides GNU time's peak RSS (which counts resident pages of the
memory-mapped input, i.e. page cache the kernel may drop), the script samples the command's
anonymous memory (RssAnon in /proc) twice a second: the memory the process itself holds.
A smoke run (2,000 images, a tiny network, a 5,000-point mixture comparison) writes to a
temporary folder unless --out is given, and never into benchmarks/results.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FIT_ARGS = [
    "--epochs", "1", "--train-images", "20000", "--width", "0.125", "--clusters", "10",
    "--batch-size", "256", "--quiet",
]  # fmt: skip
SMOKE_FIT_ARGS = [
    "--epochs", "1", "--train-images", "500", "--width", "0.125", "--clusters", "10",
    "--batch-size", "256", "--image-size", "16", "--latent-dim", "8", "--reducer", "pca",
    "--reduced-dim", "4", "--quiet",
]  # fmt: skip
RESULTS = Path(__file__).resolve().parent / "results"


def generate(path: Path, n: int, seed: int = 0, chunk: int = 50_000) -> None:
    """Random images with some structure (10 mean colours), written without holding them in memory."""
    rng = np.random.default_rng(seed)
    images = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, 32, 32, 3))
    colours = rng.integers(30, 220, (10, 1, 1, 3))
    for start in range(0, n, chunk):
        size = min(chunk, n - start)
        noise = rng.integers(-30, 30, (size, 32, 32, 3))
        images[start : start + size] = np.clip(colours[rng.integers(0, 10, size)] + noise, 0, 255)
    images.flush()


def measure(command: list[str]) -> dict:
    """Wall time, peak RSS (GNU time) and sampled peak anonymous memory (MiB) of one command."""
    with tempfile.NamedTemporaryFile(suffix=".rss") as rss:
        start = time.perf_counter()
        timer = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", rss.name, *command])
        peak_anon_kib = 0
        while timer.poll() is None:
            peak_anon_kib = max(peak_anon_kib, _anon_kib(timer.pid))
            time.sleep(0.5)
        if timer.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed with status {timer.returncode}")
        peak_kib = int(Path(rss.name).read_text().split()[-1])
    return {
        "seconds": round(time.perf_counter() - start, 1),
        "peak_rss_mib": round(peak_kib / 1024, 1),
        "peak_anon_mib": round(peak_anon_kib / 1024, 1),
    }


def _anon_kib(parent: int) -> int:
    """RssAnon of the children of `parent` (the command GNU time runs), 0 if they are gone."""
    try:
        children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        total = 0
        for child in children:
            for line in Path(f"/proc/{child}/status").read_text().splitlines():
                if line.startswith("RssAnon:"):
                    total += int(line.split()[1])
        return total
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return 0


def run(n: int, scratch: Path, fit_args: list[str]) -> dict:
    data = scratch / f"images_{n}.npy"
    generate(data, n)
    aegmm = [sys.executable, "-m", "aegmm"]
    fit = measure([*aegmm, "fit", str(data), "--out", str(scratch / f"run_{n}"), *fit_args])
    assign = measure(
        [
            *aegmm,
            "assign",
            str(scratch / f"run_{n}"),
            str(data),
            "--out",
            str(scratch / f"assign_{n}.csv"),
            "--quiet",
        ]
    )
    data.unlink()
    return {"images": n, "data_mib": round(n * 32 * 32 * 3 / 2**20, 1), "fit": fit, "assign": assign}


def subsample_effect(n: int = 100_000, limit: int = 10_000, seed: int = 0) -> dict:
    """BIC and held-out log-likelihood of a mixture fitted on all n points vs a subsample of `limit`.

    The data are latent-like: 10 well-separated but overlapping full-covariance Gaussians in 10-D.
    """
    from aegmm.config import MixtureConfig
    from aegmm.mixture import LatentMixture

    rng = np.random.default_rng(seed)
    means = rng.normal(0, 3, (10, 10))
    mix = [rng.normal(size=(10, 10)) * 0.4 for _ in range(10)]

    def draw(m: int) -> np.ndarray:
        comp = rng.integers(0, 10, m)
        return means[comp] + np.einsum("nij,nj->ni", np.stack(mix)[comp], rng.normal(size=(m, 10)))

    train, held_out = draw(n), draw(min(20_000, n))
    out = {}
    for name, cap in (("full", n), ("subsample", limit)):
        config = MixtureConfig(n_components=10, reducer="none", n_init=1, max_fit_samples=cap)
        start = time.perf_counter()
        mixture = LatentMixture(config).fit(train)
        out[name] = {
            "fit_points": min(cap, n),
            "seconds": round(time.perf_counter() - start, 2),
            "bic_on_all_train": float(mixture.gmm_.bic(mixture.features(train))),
            "held_out_loglik_per_point": float(mixture.score_samples(held_out).mean()),
        }
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument(
        "--out", default=None, help="markdown file; the JSON goes beside it (default results/)"
    )
    parser.add_argument(
        "--scratch", default=None, help="folder for the generated data (2.9 GiB for 1M images)"
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="check that the script runs: 2,000 images, a tiny network (16x16, latent 8, PCA to 4, 500 "
        "training images), mixture comparison on 5,000 points; a temporary folder unless --out is given",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        out = Path(args.out or Path(tempfile.mkdtemp(prefix="aegmm-smoke-")) / "scale.md")
        if out.resolve().is_relative_to(RESULTS):
            parser.error(f"a smoke run must not write into {RESULTS}, got --out {out}")
        sizes, fit_args, points = [2_000], SMOKE_FIT_ARGS, (5_000, 1_000)
    else:
        out = Path(args.out or RESULTS / "scale.md")
        sizes, fit_args, points = args.sizes, FIT_ARGS, (100_000, 10_000)
    default_scratch = out.parent / "scratch" if args.smoke else tempfile.mkdtemp(prefix="aegmm-scale-")
    scratch = Path(args.scratch or default_scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    effect = subsample_effect(*points)
    print(json.dumps(effect), flush=True)
    results = []
    for n in sizes:
        results.append(run(n, scratch, fit_args))
        print(json.dumps(results[-1]), flush=True)
    command = "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    _write(out, results, effect, command, fit_args)
    print(f"wrote {out} and {out.with_suffix('.json')}", flush=True)
    return 0


def _write(path: Path, results: list[dict], effect: dict, command: str, fit_args: list[str]) -> None:
    n_points, n_sub = effect["full"]["fit_points"], effect["subsample"]["fit_points"]
    lines = [
        "# Peak memory at scale (32x32 RGB images, memory-mapped .npy input)",
        "",
        f"Command: `{command}`. "
        f"Fit settings: `{' '.join(fit_args)}`; assign streams in chunks of 20,000 (the library's). "
        f"Machine: {resource.getpagesize()}-byte pages, {os.cpu_count()} CPU cores; load average "
        f"{[round(x, 2) for x in os.getloadavg()]} at the end.",
        "",
        "| images | raw pixels (MiB) | fit peak RSS (MiB) | fit peak anonymous (MiB) | fit time (s) "
        "| assign peak RSS (MiB) | assign peak anonymous (MiB) | assign time (s) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r['images']:,} | {r['data_mib']:,} | {r['fit']['peak_rss_mib']:,} "
            f"| {r['fit']['peak_anon_mib']:,} | {r['fit']['seconds']:,} "
            f"| {r['assign']['peak_rss_mib']:,} | {r['assign']['peak_anon_mib']:,} "
            f"| {r['assign']['seconds']:,} |"
        )
    lines += [
        "",
        "Peak RSS counts pages of the memory-mapped input (and of the latent scratch file) that "
        "were resident; they are page cache that the kernel can drop. Peak anonymous memory "
        "(sampled every 0.5 s) is what the process itself holds: model, batches, mixture "
        "subsample and the loaded libraries.",
        "",
    ]
    lines += [
        "## Mixture on a subsample vs on everything",
        "",
        f"{n_points:,} points from a known 10-component, 10-D full-covariance mixture; the subsample "
        f"has {n_sub:,}; held-out set of {min(20_000, n_points):,}. Log-likelihoods are per point, in the "
        "standardised space each model uses.",
        "",
        "| fitted on | points | fit time (s) | BIC on all training points | held-out log-likelihood |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, e in effect.items():
        lines.append(
            f"| {name} | {e['fit_points']:,} | {e['seconds']} | {e['bic_on_all_train']:,.0f} "
            f"| {e['held_out_loglik_per_point']:.4f} |"
        )
    lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    path.with_suffix(".json").write_text(json.dumps({"sizes": results, "subsample": effect}, indent=2) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
