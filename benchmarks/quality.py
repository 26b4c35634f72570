"""Clustering quality of aegmm against peers on CIFAKE (held-out), scikit-learn's digits and MNIST.

    python benchmarks/quality.py                      # full run: CIFAKE 16,000 / 4,000, digits, MNIST
    python benchmarks/quality.py --quick              # 1,000 fit / 400 scored, 1 epoch
    python benchmarks/quality.py --smoke --out /tmp/q  # does it run? tiny network and subsets, seconds
    python benchmarks/quality.py --variant reducer=umap --variant noise=0.1
    python benchmarks/quality.py --seeds 0,1,2        # every method over 3 seeds: mean +- sd rows

Tasks (K is given to every method, never selected):
- cifar10: the 10 CIFAR-10 classes over REAL and FAKE together (K=10); acc, NMI, ARI.
- real_fake: REAL vs FAKE (K=2); acc, NMI, and the ROC AUC of label-free per-image scores.
- digits: scikit-learn's 1,797 digits (K=10), fitted and scored on all of them as peers do.
- digits_tail: a long-tailed 823 of those digits (170 of one digit down to 30 of another, the digits
  in a random order, seed --seed; common.tail_indices), fitted and scored alike (K=10): a small
  collection with unequal groups; --tail-scale 0.5 halves every count (413 digits).
- mnist: mnist_train_10k.npz, 8,000 fit / 2,000 held-out (stratified by digit, seed --seed), K=10;
  28x28 digits, which aegmm resizes to its image_size (32) and the pixel peers use as they are.
CIFAKE split: 16,000 fit / 4,000 held-out, stratified by domain x CIFAR class, seed --seed.
--seeds reruns every method (peers and aegmm's training) with each seed on the same split, and
quality.md adds a table of mean +- sd over the seeds per task.
Writes quality.json and quality.md under --out (benchmarks/results by default; a smoke run
writes to a temporary folder and refuses benchmarks/results).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from common import (
    CIFAKE_SUBSET,
    CIFAKE_ZIP,
    Labelled,
    agreement,
    auroc,
    load_cifake,
    load_cifake_subset,
    load_digits,
    load_mnist,
    machine,
    max_rss_mib,
    measure,
    output_folder,
    split_cifake,
    stratified_subset,
    tail_indices,
)
from peers import CLUSTIMAGE_NOTE, PEERS
from report import TARGETS, write_markdown
from variants import Variant, cluster, network_params, parse_variant, resolved_network, train

METHODS = (*PEERS, "clustimage", "aegmm")
QUICK = {"fit_size": 1000, "test_size": 400, "epochs": 1}
# --smoke: CIFAKE from the decoded 6,000-image subset, these many images, and a tiny network
SMOKE = {"fit_size": 200, "test_size": 100, "digits_size": 200}
SMOKE_NETWORK = {
    "image_size": 16,
    "width": 0.125,
    "latent_dim": 8,
    "epochs": 1,
    "batch_size": 32,
    "reduced_dim": 4,
    "n_init": 1,
}


DATASETS = ("cifake", "digits", "digits_tail", "mnist")
TASKS = ("cifar10", "real_fake", "digits", "digits_tail", "mnist")


def tasks_of(dataset: str, scored: Labelled, only: set[str] | None = None) -> list[dict]:
    """Each task: name, K, true labels of the scored images, and the AUROC target if any; only
    those named in ``only`` when it is given."""
    if dataset in ("digits", "digits_tail", "mnist"):
        tasks = [{"task": dataset, "k": 10, "y": scored.classes, "positive": None}]
    else:
        tasks = [
            {"task": "cifar10", "k": 10, "y": scored.classes, "positive": None},
            {"task": "real_fake", "k": 2, "y": scored.domains, "positive": scored.domains == 1},
        ]
    return [task for task in tasks if only is None or task["task"] in only]


def score_outcome(outcome, task: dict) -> dict:
    row = {"metrics": agreement(task["y"], outcome.labels), "notes": outcome.notes}
    if task["positive"] is not None:
        row["scores"] = {name: auroc(s, task["positive"]) for name, s in outcome.scores.items()}
    return row


def run_peers(methods, dataset, fit, scored, seeds, emit, only=None) -> None:
    for method in methods:
        if method == "clustimage":
            emit({"dataset": dataset, "method": method, "skipped": CLUSTIMAGE_NOTE})
            continue
        for seed in seeds:
            for task in tasks_of(dataset, scored, only):
                print(
                    f"[{time.strftime('%H:%M:%S')}] {dataset} {task['task']} {method} seed {seed}", flush=True
                )
                with measure() as cost:
                    outcome = PEERS[method](fit.images, scored.images, task["k"], seed)
                row = {
                    "dataset": dataset,
                    "task": task["task"],
                    "k": task["k"],
                    "method": method,
                    "seed": seed,
                }
                emit({**row, **score_outcome(outcome, task), "time": cost.as_dict()})


def seeded(variants: list[Variant], seeds: list[int]) -> list[tuple[Variant, int]]:
    """Each variant once per seed: the seed trains the network and seeds the mixture, unless the
    variant fixes its own seed (then it runs once, with that seed)."""
    runs = []
    for variant in variants:
        own = dict(variant.train).get("seed")
        if own is not None:
            runs.append((variant, own))
            continue
        for seed in seeds:
            train = tuple(sorted((dict(variant.train) | {"seed": seed}).items()))
            runs.append((replace(variant, train=train), seed))
    return runs


def run_aegmm(
    runs: list[tuple[Variant, int]], dataset, fit, scored, epochs, emit, cache=None, base=None, only=None
):
    """`runs` from `seeded`: variants whose settings resolve to one network (seed included) share it."""
    groups: dict[str, list[tuple[Variant, int]]] = {}
    for variant, seed in runs:
        network = resolved_network(network_params(variant, epochs, base), fit.images)
        groups.setdefault(json.dumps(network, sort_keys=True), []).append((variant, seed))
    tasks = tasks_of(dataset, scored, only)
    for members in groups.values():
        first, seed = members[0]
        print(
            f"[{time.strftime('%H:%M:%S')}] {dataset} aegmm training for {first.name}, seed {seed}",
            flush=True,
        )
        trained = train(first, fit.images, scored.images, tasks[0]["k"], epochs, cache, base)
        print(f"    trained: {json.dumps(trained.timings)}", flush=True)
        for variant, seed in members:
            for task in tasks:
                outcome, mixing = cluster(variant, trained, task["k"])
                row = {"dataset": dataset, "task": task["task"], "k": task["k"], "method": "aegmm"}
                row.update(variant=variant.name, seed=seed, settings=variant.settings)
                row.update(score_outcome(outcome, task))
                emit({**row, "time": mixing, "train": trained.timings})
                print(f"    {variant.name} {task['task']}: {row['metrics']}", flush=True)


def datasets(args) -> dict[str, tuple[Labelled, Labelled, dict]]:
    out = {}
    if "cifake" in args.datasets:
        source = CIFAKE_SUBSET if args.smoke else CIFAKE_ZIP
        everything = load_cifake_subset(source) if args.smoke else load_cifake(source)
        fit, held_out = split_cifake(everything, test_size=4000, seed=args.seed)
        sizes = (len(fit.images), len(held_out.images), len(everything.images))
        split = "{:,} fit / {:,} held-out of the {:,}".format(*sizes)
        fit = stratified_subset(fit, args.fit_size, seed=args.seed)
        held_out = stratified_subset(held_out, args.test_size, seed=args.seed)
        info = {
            "source": source.name,
            "split": f"{split}, stratified by domain x CIFAR class "
            f"(sklearn train_test_split, random_state={args.seed})",
            "fit_images": len(fit.images),
            "scored_images": len(held_out.images),
            "scored": "held-out images only (never fitted)",
        }
        out["cifake"] = (fit, held_out, info)
    if "digits" in args.datasets:
        digits = load_digits()
        if args.smoke:
            digits = stratified_subset(digits, SMOKE["digits_size"], seed=args.seed)
        n = len(digits.images)
        info = {
            "source": "builtin:digits (sklearn load_digits, 8x8, 0..16 scaled to 0..255)",
            "fit_images": n,
            "scored_images": n,
            "scored": f"the same {n:,} images that were fitted (transductive, as the peers report it)",
        }
        out["digits"] = (digits, digits, info)
    if "digits_tail" in args.datasets:
        digits = load_digits()
        scale = SMOKE["digits_size"] / len(digits.images) if args.smoke else args.tail_scale
        tail = digits.take(tail_indices(digits.classes, args.seed, scale))
        shares = np.bincount(tail.classes, minlength=10)
        info = {
            "source": "builtin:digits, a long-tailed subset (common.tail_indices, seed --seed)",
            "digits_per_class": shares.tolist(),
            "fit_images": len(tail.images),
            "scored_images": len(tail.images),
            "scored": f"the same {len(tail.images):,} images that were fitted (transductive)",
        }
        out["digits_tail"] = (tail, tail, info)
    if "mnist" in args.datasets:
        sizes = (SMOKE["fit_size"], SMOKE["test_size"]) if args.smoke else (8000, 2000)
        fit, held_out = load_mnist(*sizes, seed=args.seed)
        info = {
            "source": "mnist_train_10k.npz (28x28x1)",
            "split": f"{sizes[0]:,} fit / {sizes[1]:,} held-out, stratified by digit "
            f"(sklearn train_test_split, random_state={args.seed})",
            "fit_images": len(fit.images),
            "scored_images": len(held_out.images),
            "scored": "held-out images only (never fitted)",
        }
        out["mnist"] = (fit, held_out, info)
    return out


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1,000 fit / 400 scored CIFAKE images, 1 epoch")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="check that the script runs: CIFAKE from cifake_train_subset.npz, 200 fit / 100 scored, "
        "200 digits, aegmm with a tiny network (16x16, width 0.125, latent 8, 1 epoch, PCA to 4, "
        "1 EM restart); writes to a temporary folder unless --out is given",
    )
    parser.add_argument("--epochs", type=int, default=None, help="aegmm epochs (default: the library's)")
    parser.add_argument(
        "--out", type=Path, default=None, help="folder for quality.json and quality.md (default results/)"
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="aegmm settings to try besides the defaults, e.g. reducer=umap or latent_dim=64,noise=0.1",
    )
    parser.add_argument("--no-default", action="store_true", help="leave aegmm's defaults out")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma list of {', '.join(METHODS)}")
    parser.add_argument(
        "--datasets", default="cifake,digits,mnist", help=f"comma list of {', '.join(DATASETS)}"
    )
    parser.add_argument(
        "--tasks",
        default=None,
        help=f"comma list of the tasks to run, of {', '.join(TASKS)} (default: every task of the datasets)",
    )
    parser.add_argument("--fit-size", type=int, default=16000, help="CIFAKE fit images (stratified subset)")
    parser.add_argument("--test-size", type=int, default=4000, help="CIFAKE held-out images scored")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split")
    parser.add_argument("--tail-scale", type=float, default=1.0, help="digits_tail: images per digit x this")
    parser.add_argument(
        "--seeds",
        default=None,
        help="comma list of method seeds, each run on the same split (default: --seed alone)",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="save trained autoencoders and latents here and reuse them (mixture-only variants)",
    )
    args = parser.parse_args(argv)
    try:
        args.out = output_folder(args.out, args.smoke)
    except ValueError as exc:
        parser.error(str(exc))
    if args.smoke:
        args.fit_size = min(args.fit_size, SMOKE["fit_size"])
        args.test_size = min(args.test_size, SMOKE["test_size"])
    args.base = SMOKE_NETWORK if args.smoke else {}
    if args.quick:
        args.fit_size, args.test_size = min(args.fit_size, QUICK["fit_size"]), min(args.test_size, 400)
        args.epochs = args.epochs or QUICK["epochs"]
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    args.datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    unknown = sorted(set(args.methods) - set(METHODS)) + sorted(set(args.datasets) - set(DATASETS))
    if unknown:
        parser.error(f"unknown methods or datasets {unknown}")
    if args.tasks is not None:
        args.tasks = {t.strip() for t in args.tasks.split(",") if t.strip()}
        if not args.tasks or args.tasks - set(TASKS):
            parser.error(f"--tasks is a comma list of {', '.join(TASKS)}, got {sorted(args.tasks)}")
    args.variants = ([] if args.no_default else [parse_variant("default")]) + [
        parse_variant(v) for v in args.variant
    ]
    try:
        args.seeds = [args.seed] if args.seeds is None else [int(x) for x in args.seeds.split(",") if x]
    except ValueError:
        parser.error(f"--seeds is a comma list of whole numbers, got {args.seeds!r}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    report = {
        "command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        "settings": {
            "quick": args.quick,
            "smoke": args.smoke,
            "base": args.base,
            "cache": None if args.cache is None else str(args.cache),
            "epochs": args.epochs,
            "seed": args.seed,
            "seeds": args.seeds,
            "methods": args.methods,
            "tasks": None if args.tasks is None else sorted(args.tasks),
            "variants": [v.name for v in args.variants],
        },
        "machine_start": machine(),
        "datasets": {},
        "targets": TARGETS,
        "runs": [],
    }

    def emit(row: dict) -> None:
        report["runs"].append(row)
        report["max_rss_mib"] = round(max_rss_mib(), 1)
        (args.out / "quality.json").write_text(json.dumps(report, indent=1, default=_plain))
        write_markdown(report, args.out / "quality.md")

    started = time.perf_counter()
    peers = [m for m in args.methods if m != "aegmm"]
    for name, (fit, scored, info) in datasets(args).items():
        report["datasets"][name] = info
        run_peers(peers, name, fit, scored, args.seeds, emit, args.tasks)
        if "aegmm" in args.methods and args.variants:
            runs = seeded(args.variants, args.seeds)
            run_aegmm(runs, name, fit, scored, args.epochs, emit, args.cache, args.base, args.tasks)
    report["machine_end"] = machine()
    report["total_seconds"] = round(time.perf_counter() - started, 1)
    report["max_rss_mib"] = round(max_rss_mib(), 1)
    (args.out / "quality.json").write_text(json.dumps(report, indent=1, default=_plain))
    write_markdown(report, args.out / "quality.md")
    print(f"wrote {args.out / 'quality.md'} and quality.json in {report['total_seconds']} s", flush=True)
    return 0


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


if __name__ == "__main__":
    raise SystemExit(main())
