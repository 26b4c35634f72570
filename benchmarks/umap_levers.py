"""Why the grayscale mixture defaults are L2 -> UMAP(10, 30 neighbours) -> GMM(20 restarts), with
new images voted by their neighbours: sweeps on saved MNIST latents of the reconstruction encoder.

    python benchmarks/umap_levers.py encode --seed 0 --out /tmp/umap/mnist_s0.npz   # ~10 min, 2 cores
    python benchmarks/umap_levers.py sweep --latents /tmp/umap/mnist_s0.npz --out benchmarks/results/umap
    python benchmarks/umap_levers.py --smoke --out DIR                             # does it run?

encode: ImageClusterer (the reconstruction defaults, 10 epochs) fitted on MNIST's 8,000 fit images
(quality.py's split, seed 0); the latents of the fit and 2,000 held-out images are saved.
sweep, on those latents (all steps fitted on the fit images only):
  1. neighbours: UMAP n_neighbors 10 / 20 / 30 / 50 x UMAP seeds; a GMM with 3 and with 20 EM
     restarts; and a GMM started from the true digits' means ("oracle": is a merge of two digits
     the embedding's or EM's?). acc on the fit images.
  2. placement: held-out acc when new images are placed by UMAP's own transform, by knn_place
     (k = 10 / 20), or voted by their 10 nearest training images (aegmm's LatentMixture).
  3. aegmm's LatentMixture(reducer "umap", the auto settings) itself, over mixture seeds, with
     label-free indices (silhouette, Calinski-Harabasz, Davies-Bouldin) of each partition: can
     they tell a merged partition from a right one? And the GMM's mean log-likelihood against a
     GMM on the same embedding started at the true digits' means: does the mixture prefer it?
Writes sweep.jsonl (one JSON line per row) and sweep.md under --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from common import agreement, load_mnist, machine, output_folder

NEIGHBOURS = (10, 20, 30, 50)


def encode(seed: int, out: Path, epochs: int, fit_size: int = 8000, test_size: int = 2000) -> None:
    from aegmm import ImageClusterer

    fit, held_out = load_mnist(fit_size, test_size, seed=0)
    clusterer = ImageClusterer(  # the mixture is not swept here: PCA, the cheap one
        n_components=10, seed=seed, epochs=epochs, reducer="pca", device="cpu", progress=True
    )
    clusterer.fit(fit.images)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        out,
        fit=clusterer.transform(fit.images),
        held_out=clusterer.transform(held_out.images),
        fit_labels=fit.classes,
        held_out_labels=held_out.classes,
    )


def standardised(fit: np.ndarray, held_out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.preprocessing import StandardScaler, normalize

    scaler = StandardScaler().fit(normalize(fit))
    return scaler.transform(normalize(fit)), scaler.transform(normalize(held_out))


def gmm(k: int, n_init: int, seed: int, **options):
    from sklearn.mixture import GaussianMixture

    return GaussianMixture(k, n_init=n_init, reg_covar=1e-4, max_iter=300, random_state=seed, **options)


def neighbours_rows(x, y, seeds, k, neighbours):
    from aegmm.embedding import import_umap

    umap = import_umap()  # as aegmm's own UMAP: the next process loads what this one compiles

    for n in neighbours:
        for seed in seeds:
            started = time.perf_counter()
            embedding = umap.UMAP(
                n_components=10, n_neighbors=n, min_dist=0.0, random_state=seed, n_jobs=1
            ).fit_transform(x)
            row = {"step": "neighbours", "n_neighbors": n, "seed": seed}
            for n_init in (3, 20):
                model = gmm(k, n_init, seed).fit(embedding)
                row[f"acc_ninit{n_init}"] = agreement(y, model.predict(embedding))["acc"]
                row[f"loglik_ninit{n_init}"] = round(float(model.score(embedding)), 3)
            means = np.stack([embedding[y == c].mean(axis=0) for c in range(k)])
            oracle = gmm(k, 1, seed, means_init=means).fit(embedding)
            row["acc_oracle"] = agreement(y, oracle.predict(embedding))["acc"]
            row["loglik_oracle"] = round(float(oracle.score(embedding)), 3)
            row["seconds"] = round(time.perf_counter() - started, 1)
            yield row


def placement_rows(x, y, xh, yh, seeds, k, n_neighbors=30):
    from sklearn.neighbors import KNeighborsClassifier

    from aegmm.embedding import import_umap, knn_place

    umap = import_umap()
    for seed in seeds:
        reducer = umap.UMAP(
            n_components=10, n_neighbors=n_neighbors, min_dist=0.0, random_state=seed, n_jobs=1
        )
        embedding = reducer.fit_transform(x)
        model = gmm(k, 20, seed).fit(embedding)
        labels = model.predict(embedding)
        row = {"step": "placement", "n_neighbors": n_neighbors, "seed": seed}
        row["acc_fit"] = agreement(y, labels)["acc"]
        row["acc_umap_transform"] = agreement(yh, model.predict(reducer.transform(xh)))["acc"]
        for place_k in (10, 20):
            placed = knn_place(x, embedding, xh, k=place_k)
            row[f"acc_knn_place{place_k}"] = agreement(yh, model.predict(placed))["acc"]
        vote = KNeighborsClassifier(10, weights="distance").fit(x, labels)
        row["acc_vote10"] = agreement(yh, vote.predict(xh))["acc"]
        yield row


def aegmm_rows(fit, y, held_out, yh, seeds, k):
    from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score

    from aegmm.config import MixtureConfig
    from aegmm.mixture import LatentMixture

    for seed in seeds:
        started = time.perf_counter()
        mixture = LatentMixture(MixtureConfig(n_components=k, reducer="umap", seed=seed)).fit(fit)
        labels = mixture.predict(fit)
        standard = mixture.pipeline_[:-2].transform(fit)
        row = {"step": "aegmm", "seed": seed, "acc_fit": agreement(y, labels)["acc"]}
        row["held_out"] = agreement(yh, mixture.predict(held_out))
        size = min(4000, len(fit))
        row["silhouette"] = round(
            float(silhouette_score(standard, labels, sample_size=size, random_state=0)), 4
        )
        row["calinski_harabasz"] = round(float(calinski_harabasz_score(standard, labels)), 1)
        row["davies_bouldin"] = round(float(davies_bouldin_score(standard, labels)), 3)
        embedding = mixture.pipeline_.named_steps["reduce"].embedding_
        means = np.stack([embedding[y == c].mean(axis=0) for c in range(k)])
        truth = gmm(k, 1, seed, means_init=means).fit(embedding)  # started at the true digits' means
        row["loglik"] = round(float(mixture.gmm_.score(embedding)), 4)
        row["acc_true_means_start"] = agreement(y, truth.predict(embedding))["acc"]
        row["loglik_true_means_start"] = round(float(truth.score(embedding)), 4)
        row["seconds"] = round(time.perf_counter() - started, 1)
        yield row


def write_markdown(rows: list[dict], out: Path, command: str, start: dict) -> None:
    lines = [
        "# UMAP settings on MNIST latents",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {start['cpu_count']} CPU cores, started {start['date']}, load average "
        f"{start['load_average']}. acc = Hungarian accuracy against the digits.",
        "",
    ]
    for step in dict.fromkeys(r["step"] for r in rows):
        members = [r for r in rows if r["step"] == step]
        keys = [key for key in members[0] if key != "step"]
        lines += [f"## {step}", "", "| " + " | ".join(keys) + " |", "|" + " --- |" * len(keys)]
        for r in members:
            cells = [json.dumps(r[key]) if isinstance(r[key], dict) else str(r[key]) for key in keys]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    (out / "sweep.md").write_text("\n".join(lines))


def sweep(args) -> None:
    data = np.load(args.latents)
    fit, held_out = data["fit"], data["held_out"]
    y, yh = data["fit_labels"], data["held_out_labels"]
    x, xh = standardised(fit, held_out)
    k = len(np.unique(y))
    seeds = list(range(args.seeds))
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python " + " ".join(sys.argv)
    start, rows = machine(), []
    steps = (
        neighbours_rows(x, y, seeds, k, args.neighbours),
        placement_rows(x, y, xh, yh, seeds, k),
        aegmm_rows(fit, y, held_out, yh, list(range(args.aegmm_seeds)), k),
    )
    with open(args.out / "sweep.jsonl", "w") as log:
        for step in steps:
            for row in step:
                rows.append(row)
                log.write(json.dumps(row) + "\n")
                log.flush()
                print(json.dumps(row), flush=True)
                write_markdown(rows, args.out, command, start)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("step", nargs="?", choices=("encode", "sweep"), default="sweep")
    parser.add_argument("--latents", type=Path, help="the .npz that encode wrote (sweep)")
    parser.add_argument("--out", type=Path, default=None, help="encode: the .npz; sweep: a folder")
    parser.add_argument("--seed", type=int, default=0, help="encode: the training seed")
    parser.add_argument("--epochs", type=int, default=10, help="encode: training epochs")
    parser.add_argument("--seeds", type=int, default=4, help="sweep: UMAP/GMM seeds 0..N-1 (steps 1-2)")
    parser.add_argument("--aegmm-seeds", type=int, default=5, help="sweep: mixture seeds of step 3")
    parser.add_argument("--neighbours", default=",".join(map(str, NEIGHBOURS)), help="sweep: n_neighbors")
    parser.add_argument("--smoke", action="store_true", help="encode 300 + 100 images 1 epoch, then sweep")
    args = parser.parse_args(argv)
    args.neighbours = [int(n) for n in str(args.neighbours).split(",")]
    if args.smoke:
        args.out = output_folder(args.out, smoke=True)
        latents = args.out / "latents.npz"
        encode(0, latents, epochs=1, fit_size=300, test_size=100)
        args.latents, args.seeds, args.aegmm_seeds, args.neighbours = latents, 1, 1, [10]
        sweep(args)
        return 0
    if args.out is None:
        parser.error("--out is required")
    if args.step == "encode":
        encode(args.seed, args.out, args.epochs)
    else:
        sweep(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
