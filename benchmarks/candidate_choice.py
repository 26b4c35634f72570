"""How to choose among the grayscale mixture's candidates (UMAP + GMM fitted with several seeds).

    python benchmarks/candidate_choice.py fit --latents A.npz --seeds 10 --out DIR/A.jsonl
    python benchmarks/candidate_choice.py report --rows DIR/*.jsonl --out DIR   # candidates.md
    python benchmarks/candidate_choice.py --smoke --out DIR                     # does it run?

fit: LatentMixture with the grayscale auto settings and ONE candidate, mixture seeds 0..N-1, on the
fit latents of a file as `umap_levers.py encode` writes it (fit, held_out, fit_labels,
held_out_labels); one JSON line per seed with its accuracy on the fit and held-out images, its
label-free scores and its training labels (`--reduced-dim D`: UMAP to D instead of 10).
report: for every window of C consecutive seeds (C = 3, 5) of every file, the candidate each rule
keeps, and the held-out accuracy it gets:
  - silhouette: the highest silhouette in the standardised latents (aegmm's first rule);
  - consensus: the highest mean adjusted Rand index with the other candidates of the window
    (the partition the seeds reproduce most);
  - likelihood: the highest mean log-likelihood of the mixture on its own embedding;
  - calinski: the highest Calinski-Harabasz index in the standardised latents (for a fixed K: the
    smallest within-cluster sum of squares, K-Means' objective, in the encoder's own space);
  - partition_likelihood: the highest mean log-likelihood of the standardised latents under one
    full-covariance Gaussian per cluster, fitted to the candidate's clusters (the study's model,
    judged in the encoder's space rather than UMAP's);
  - balance: the most equal cluster sizes (aegmm's `--candidate-rule balance`: the highest
    entropy of the clusters' shares);
  - first: the window's first seed alone (one candidate; what a single fit gets).
With `--latents`, each seed's row also names its largest cluster: its size and the two true
labels it holds most (where one cluster holds two classes).

    python benchmarks/candidate_choice.py digits --cache /tmp/qcache --out DIR   # DIR/digits_encoderS.npz
    python benchmarks/candidate_choice.py mnist --cache /tmp/qcache --out DIR    # DIR/mnist_encoderS.npz
    python benchmarks/candidate_choice.py mnist3k --cache /tmp/qcache --out DIR  # DIR/mnist3k_encoderS.npz
    python benchmarks/candidate_choice.py pairs --latents DIR --out DIR2   # DIR2/NAME_{unit,raw}_pairS.npz
    python benchmarks/candidate_choice.py tail --out DIR    # DIR/tail_encoderS.npz from DIR/digits_encoderS
    python benchmarks/candidate_choice.py cifake --cache /tmp/qcache --out DIR   # DIR/cifake_encoderS.npz
    python benchmarks/candidate_choice.py cifake --epochs 100 --cache /tmp/qcache --out DIR   # longer runs

digits, mnist, mnist3k: write the latents of every default encoder of that data set that a
`quality.py --cache` run saved, in the format `fit` reads: for the digits all 1,797 as both fit and
held-out images (transductive, as `quality.py` scores them), for MNIST its 8,000 / 2,000 split
(mnist3k: the MNIST default trained on 3,000 of the fit digits, `--variant train_images=3000`).
pairs: two consecutive encoders side by side, with and without unit length (see write_pairs).
tail: long-tailed subsets of those digits latents (170 of one digit down to 30 of another), to see
what a rule that prefers equal clusters costs where the groups are unequal.
cifake: the same for the cached CIFAKE default encoders (contrastive, 22 epochs or `--epochs`, pooled
features), with the 16,000 / 4,000 split of `quality.py`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from aegmm.cli_parser import count_or_auto
from aegmm.config import MixtureConfig
from common import agreement, machine, output_folder, tail_indices
from report import mean_sd

K = 10  # clusters of every fit (the digits, MNIST and CIFAR classes)
RULES = ("first", "silhouette", "consensus", "likelihood", "calinski", "partition_likelihood", "balance")
LABEL_RULES = ("first", "consensus", "balance")  # rules that need only the rows' labels
REG_COVAR = MixtureConfig().reg_covar  # added to each cluster's covariance by partition_likelihood
WINDOWS = (3, 5)
RIGHT = 0.9  # a held-out accuracy above this counts as a right partition (MNIST: 0.94-0.96 or 0.80-0.87)


def partition_likelihood(x: np.ndarray, labels: np.ndarray) -> float:
    """Mean log-likelihood of x under one full Gaussian per cluster (maximum likelihood, the
    covariance plus REG_COVAR), each weighted by its cluster's share: a hard-assignment GMM."""
    total = 0.0
    for k in np.unique(labels):
        members = x[labels == k]
        share = len(members) / len(x)
        cov = np.atleast_2d(np.cov(members, rowvar=False, bias=True)) + REG_COVAR * np.eye(x.shape[1])
        _, logdet = np.linalg.slogdet(cov)
        diff = members - members.mean(0)
        mahalanobis = np.einsum("ij,ij->i", diff @ np.linalg.inv(cov), diff)
        total += np.sum(np.log(share) - 0.5 * (x.shape[1] * np.log(2 * np.pi) + logdet + mahalanobis))
    return float(total / len(x))


def long_tailed(folder: Path) -> None:
    """tail: from every digits_encoderS.npz of `folder`, a tail_encoderS.npz holding TAIL_SIZES
    digits of each class (the classes in a random order per encoder, seed S; 823 images, fit and
    held-out alike): does a rule that prefers equal clusters cost accuracy where groups are not?"""
    for path in sorted(folder.glob("digits_encoder*.npz")):
        seed = int(path.stem.removeprefix("digits_encoder"))
        data = np.load(path)
        classes = data["fit_labels"]
        keep = tail_indices(classes, seed)
        x, y = data["fit"][keep], classes[keep]
        np.savez(folder / f"tail_encoder{seed}.npz", fit=x, held_out=x, fit_labels=y, held_out_labels=y)
        print(f"{folder / f'tail_encoder{seed}.npz'}: {len(keep)} digits of encoder seed {seed}", flush=True)


def write_pairs(folder: Path, out: Path) -> None:
    """pairs: for every NAME_encoderS.npz of `folder` whose encoder S+1 is there too, the two
    encoders' latents side by side, as `--members 2` gives the mixture (NAME_unit_pairS.npz: each
    vector scaled to unit length) and without that scaling (NAME_raw_pairS.npz: each encoder's
    vectors divided by their mean length on the fit images, a scale the mixture's standardising
    undoes; fit them with --normalize none); both divided by sqrt(2). (`ensemble_probe.side_by_side`
    is the unit scaling in float32; this one works in float64, as the committed pair files were.)"""
    from sklearn.preprocessing import normalize

    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(folder.glob("*_encoder*.npz")):
        name, seed = path.stem.rsplit("_encoder", 1)
        second = folder / f"{name}_encoder{int(seed) + 1}.npz"
        if not second.is_file():
            continue
        members = [np.load(path), np.load(second)]
        labels = {key: members[0][key] for key in ("fit_labels", "held_out_labels")}
        assert all(np.array_equal(members[1][key], value) for key, value in labels.items())
        lengths = [np.linalg.norm(m["fit"].astype(np.float64), axis=1).mean() for m in members]
        scalings = {"unit": lambda x, _: normalize(x), "raw": lambda x, length: x / length}
        for scale, scaled in scalings.items():
            arrays = {}
            for key in ("fit", "held_out"):
                parts = [scaled(m[key].astype(np.float64), n) for m, n in zip(members, lengths, strict=True)]
                arrays[key] = (np.hstack(parts) / np.sqrt(2)).astype(np.float32)
            target = out / f"{name}_{scale}_pair{seed}.npz"
            np.savez(target, **arrays, **labels)
            print(f"{target}: encoders {seed} and {int(seed) + 1} side by side", flush=True)


def cached_latents(cache: Path, dataset: str, out: Path) -> None:
    """One latents .npz per default encoder of `dataset` that a `quality.py --cache` run saved: the
    digits (all 1,797 as fit and held-out) or MNIST (the 8,000 / 2,000 split of `common.load_mnist`)."""
    from common import load_digits, load_mnist
    from digits_failures import DEFAULT_RUNS, cached_runs

    if dataset == "digits":
        classes = load_digits().classes
        labels = classes, classes
    else:
        fit, held_out = load_mnist()
        labels = fit.classes, held_out.classes
    out.mkdir(parents=True, exist_ok=True)
    for seed, folder in cached_runs(cache, *DEFAULT_RUNS[dataset]):
        arrays = np.load(folder / "arrays.npz")
        fit_x = arrays["fit_latents"]
        held_out_x = fit_x if dataset == "digits" else arrays["score_latents"]
        path = out / f"{dataset}_encoder{seed}.npz"
        np.savez(path, fit=fit_x, held_out=held_out_x, fit_labels=labels[0], held_out_labels=labels[1])
        print(f"{path}: encoder seed {seed} ({folder.name})", flush=True)


def cifake_latents(cache: Path, out: Path, epochs: int = 22) -> None:
    """cifake: one latents .npz per cached CIFAKE default encoder (contrastive, small stem, `epochs`
    epochs, pooled features, 5 candidates): the 16,000 / 4,000 split of `common.split_cifake`."""
    from common import load_cifake, split_cifake

    fit, held_out = split_cifake(load_cifake())
    out.mkdir(parents=True, exist_ok=True)
    for folder in sorted(cache.glob("*/")):
        config = json.loads((folder / "run" / "config.json").read_text())
        model, train, mixture = config["model"], config["train"], config["mixture"]
        network = (model["channels"], model["stem"], train.get("objective"), train["epochs"])
        clusters = (mixture["features"], mixture["candidates"])
        if network == (3, "small", "contrastive", epochs) and clusters == ("pooled", 5):
            arrays = np.load(folder / "arrays.npz")
            path = out / f"cifake_encoder{train['seed']}.npz"
            np.savez(path, fit=arrays["fit_latents"], held_out=arrays["score_latents"],
                     fit_labels=fit.classes, held_out_labels=held_out.classes)  # fmt: skip
            print(f"{path}: encoder seed {train['seed']} ({folder.name})", flush=True)


def fit_rows(
    latents: Path,
    seeds: int,
    out: Path,
    normalize: str = "auto",
    scores: bool = True,
    first: int = 0,
    reduced_dim: int | str = "auto",
) -> None:
    """One JSON line per mixture seed (first .. first + seeds - 1); without `scores` only the
    accuracies and labels (the silhouette alone takes minutes on 16,000 CIFAKE features);
    `reduced_dim`: UMAP's output size (auto: aegmm's 10)."""
    from sklearn.metrics import calinski_harabasz_score, silhouette_score

    from aegmm.mixture import LatentMixture

    data = np.load(latents)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as lines:
        for seed in range(first, first + seeds):
            t0 = time.perf_counter()
            config = MixtureConfig(
                n_components=K,
                reducer="umap",
                seed=seed,
                candidates=1,
                normalize=normalize,
                reduced_dim=reduced_dim,
            ).resolve()
            mixture = LatentMixture(config).fit(data["fit"])
            labels = mixture.predict(data["fit"])
            standard = mixture.pipeline_[:-2].transform(data["fit"].astype(np.float64))
            embedding = mixture.pipeline_.named_steps["reduce"].embedding_
            row = {
                "latents": latents.name,
                "normalize": config.normalize,
                "reduced_dim": config.reduced_dim,
                "seed": seed,
                "fit_acc": agreement(data["fit_labels"], labels)["acc"],
                "held_out_acc": agreement(data["held_out_labels"], mixture.predict(data["held_out"]))["acc"],
            }
            if scores:
                row["silhouette"] = float(silhouette_score(standard, labels))  # standardised latents
                row["likelihood"] = float(mixture.gmm_.score(embedding))
                row["calinski"] = float(calinski_harabasz_score(standard, labels))
                row["partition_likelihood"] = partition_likelihood(standard, labels)
            row |= {"seconds": round(time.perf_counter() - t0, 1), "labels": labels.tolist()}
            lines.write(json.dumps(row) + "\n")
            lines.flush()
            print({k: v for k, v in row.items() if k != "labels"}, flush=True)


def choose(window: list[dict], rule: str) -> dict:
    from aegmm.candidates import agreement, evenness

    if rule == "first":
        return window[0]
    if rule == "consensus":  # aegmm's own rule
        mean_ari = agreement({i: np.asarray(row["labels"]) for i, row in enumerate(window)})
        return window[max(mean_ari, key=mean_ari.get)]
    if rule == "balance":  # aegmm's --candidate-rule balance
        return max(window, key=lambda row: evenness(np.asarray(row["labels"]), K))
    return max(window, key=lambda row: row[rule])


def largest_cluster(labels: list[int], truth: np.ndarray | None) -> str:
    """'3,301 (1 + 9)': the largest training cluster's size and its two commonest true labels
    (where one cluster holds two classes); '-' without the true labels."""
    if truth is None:
        return "-"
    labels = np.asarray(labels)
    biggest = np.bincount(labels).argmax()
    common = np.bincount(truth[labels == biggest]).argsort()[::-1][:2]
    return f"{int((labels == biggest).sum()):,} ({' + '.join(str(c) for c in common)})"


def report(
    paths: list[Path],
    out: Path,
    command: str,
    right_above: float = RIGHT,
    latents: Path | None = None,
    windows: tuple[int, ...] = WINDOWS,
) -> None:
    """candidates.md and candidates.json in `out`. With `latents`, the folder of the rows' latents
    files, the first windows also get the NMI of the kept training clusters with the true classes
    (the fit images' NMI: on the digits, fitted and scored alike, the scored NMI)."""
    from sklearn.metrics import normalized_mutual_info_score

    from aegmm.candidates import evenness

    rows = [json.loads(line) for path in paths for line in path.read_text().splitlines()]
    files = sorted({r["latents"] for r in rows})
    truth = {name: np.load(latents / name)["fit_labels"] for name in files} if latents else {}
    for r in rows:
        if r["latents"] in truth:
            r["fit_nmi"] = float(normalized_mutual_info_score(truth[r["latents"]], r["labels"]))
    results = []
    for size in windows:
        for rule in (r for r in RULES if r in LABEL_RULES or all(r in row for row in rows)):
            kept, first = [], []  # every window; the first window of each file (seeds 0..size-1)
            for name in files:
                seeds = sorted((r for r in rows if r["latents"] == name), key=lambda r: r["seed"])
                chosen = [choose(seeds[i : i + size], rule) for i in range(len(seeds) - size + 1)]
                kept += chosen
                first += chosen[:1]
            if kept:
                accs = np.array([r["held_out_acc"] for r in kept])
                right = int((accs > right_above).sum())
                firsts = np.array([r["held_out_acc"] for r in first])
                results.append(
                    {"candidates": size, "rule": rule, "windows": len(kept), "right": right,
                     "mean": float(accs.mean()), "worst": float(accs.min()),
                     "first_window": [float(a) for a in firsts]}
                )  # fmt: skip
                if truth:
                    results[-1]["first_window_fit_nmi"] = [r["fit_nmi"] for r in first]
    lines = [
        "# Choosing among the grayscale mixture's candidates",
        "",
        f"Command: `{command}` (rows: {', '.join(p.name for p in paths)}; each file's rows were written by "
        "`candidate_choice.py fit`, see the first lines of `benchmarks/candidate_choice.py`).",
        f"Machine: {machine()['cpu_count']} CPU cores; quality only (no timings).",
        "",
        "## Each seed (one candidate)",
        "",
        "| latents | seed | fit acc | held-out acc | evenness | silhouette | mean log-likelihood | "
        "Calinski-Harabasz | partition log-likelihood | largest cluster: size (its two commonest labels) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    lines += [
        f"| {r['latents']} | {r['seed']} | {r['fit_acc']:.4f} | {r['held_out_acc']:.4f} | "
        f"{evenness(np.asarray(r['labels']), K):.4f} | "
        f"{r.get('silhouette', math.nan):.4f} | {r.get('likelihood', math.nan):.4f} | "
        f"{r.get('calinski', math.nan):.1f} | {r.get('partition_likelihood', math.nan):.4f} | "
        f"{largest_cluster(r['labels'], truth.get(r['latents']))} |"
        for r in sorted(rows, key=lambda r: (r["latents"], r["seed"]))
    ]
    lines += [
        "",
        f"## The kept candidate, over every window of consecutive seeds (right: acc > {right_above})",
        "",
        "| candidates | rule | windows | right | mean held-out acc | worst |",
        "| ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {r['candidates']} | {r['rule']} | {r['windows']} | {r['right']} | {r['mean']:.4f} | "
        f"{r['worst']:.4f} |"
        for r in results
    ]
    lines += [
        "",
        "## The first window of each file (seeds 0 to C - 1: what aegmm's C candidates fit)",
        "",
        "| candidates | rule | files | mean ± sd held-out acc | per file |",
        "| ---: | --- | ---: | --- | --- |",
    ]
    for r in results:
        mean, sd = mean_sd(r["first_window"])
        each = " ".join(f"{a:.3f}" for a in r["first_window"])
        files = len(r["first_window"])
        nmi = ""
        if "first_window_fit_nmi" in r:
            nmi = " NMI (fit) {:.3f} ± {:.3f}".format(*mean_sd(r["first_window_fit_nmi"]))
        lines.append(f"| {r['candidates']} | {r['rule']} | {files} | {mean:.3f} ± {sd:.3f}{nmi} | {each} |")
    out.mkdir(parents=True, exist_ok=True)
    (out / "candidates.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "candidates.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def smoke(out: Path) -> None:
    rng = np.random.default_rng(0)
    labels = np.arange(400) % 10
    centers = rng.normal(scale=4.0, size=(10, 16))
    points = centers[labels] + rng.normal(size=(400, 16))
    with tempfile.TemporaryDirectory() as scratch:
        latents = Path(scratch) / "blobs.npz"
        np.savez(latents, fit=points[:300], held_out=points[300:], fit_labels=labels[:300],
                 held_out_labels=labels[300:])  # fmt: skip
        fit_rows(latents, 3, out / "blobs.jsonl")
        report([out / "blobs.jsonl"], out, "candidate_choice.py --smoke", latents=Path(scratch))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    steps = ("fit", "report", "digits", "mnist", "mnist3k", "tail", "cifake", "pairs")
    parser.add_argument("step", nargs="?", choices=steps, default="report")
    parser.add_argument("--cache", type=Path, help="digits, mnist(3k): a quality.py run's --cache folder")
    parser.add_argument(
        "--latents",
        type=Path,
        help="fit: a latents .npz (umap_levers.py encode's format); report, pairs: their folder",
    )
    parser.add_argument("--seeds", type=int, default=10, help="fit: N mixture seeds, from --first")
    parser.add_argument("--first", type=int, default=0, help="fit: the first mixture seed")
    parser.add_argument("--epochs", type=int, default=22, help="cifake: the cached encoders' epochs")
    parser.add_argument(
        "--reduced-dim",
        type=count_or_auto,
        default="auto",
        help="fit: UMAP's output size (auto: the mixture's 10)",
    )
    parser.add_argument("--no-scores", action="store_true", help="fit: accuracies and labels only")
    parser.add_argument(
        "--normalize", default="auto", help="fit: the mixture's normalize setting (auto: L2 under UMAP)"
    )
    parser.add_argument(
        "--rows", type=Path, nargs="*", default=[], help="report: the fit steps' .jsonl files"
    )
    parser.add_argument("--out", type=Path, default=None, help="fit: the .jsonl; report: a folder")
    parser.add_argument(
        "--right", type=float, default=RIGHT, help="report: accuracy above which a partition is right"
    )
    parser.add_argument(
        "--windows", default="3,5", help="report: comma list of candidate counts C (windows of C seeds)"
    )
    parser.add_argument("--smoke", action="store_true", help="3 seeds on 400 random 16-D points, then report")
    args = parser.parse_args(argv)
    command = "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    if args.smoke:
        smoke(output_folder(args.out, True))
    elif args.step in ("digits", "mnist", "mnist3k"):
        cached_latents(args.cache, args.step, args.out)
    elif args.step == "pairs":
        write_pairs(args.latents, args.out)
    elif args.step == "tail":
        long_tailed(args.out)
    elif args.step == "cifake":
        cifake_latents(args.cache, args.out, args.epochs)
    elif args.step == "fit":
        fit_rows(
            args.latents,
            args.seeds,
            args.out,
            normalize=args.normalize,
            scores=not args.no_scores,
            first=args.first,
            reduced_dim=args.reduced_dim,
        )
    else:
        windows = tuple(int(c) for c in args.windows.split(","))
        report(args.rows, args.out, command, args.right, args.latents, windows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
