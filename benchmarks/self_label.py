"""Issue 13: does self-labelling lift the default CIFAKE encoders? The mixture's confident
assignments train the encoder further (the self-labelling step of SCAN, Van Gansbeke et al., 2020).

    python benchmarks/self_label.py --cache /tmp/qcache22 --out DIR [--epochs 5] [--threshold 0.9]
        [--keep 0.3] [--lr 1e-4] [--threads 2]

Reads every CIFAKE run that `quality.py --datasets cifake --cache DIR` trained on the split of
seed 0 (16,000 fit / 4,000 held-out images). For each, with the run's own encoder and mixture:

1. targets: the mixture's cluster of each fit image whose largest membership is >= --threshold
   (the others get no target); with --keep Q instead, in each cluster the Q share of its images
   whose 20 nearest fit images (cosine, pooled features) most often share their cluster;
2. --epochs more epochs on the fit images: two augmented views of each (the colour policy the
   encoder was trained with), a new linear head on the pooled features, cross-entropy of both
   views against the targets, each cluster weighted by the inverse of its count (as SCAN does);
   Adam at --lr, bfloat16 autocast where the CPU has bf16 instructions (as the default training);
3. the new pooled features of the fit images clustered again by a mixture with the run's own
   settings (UMAP candidates kept by agreement), the held-out images placed by it.

Each row gives the held-out accuracy / NMI of the run's mixture before, of the mixture refitted
after, and of the head's own argmax; the targets' share of the fit images and their accuracy;
the seconds of the extra epochs and of the refit.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import agreement, append_row, cached_features, load_cifake, machine, split_cifake  # noqa: E402

K = 10


def targets_from(proba: np.ndarray, threshold: float) -> np.ndarray:
    """Each row's most likely cluster where its membership is >= threshold, else -1 (no target)."""
    return np.where(proba.max(1) >= threshold, proba.argmax(1), -1)


def neighbour_targets(x: np.ndarray, labels: np.ndarray, keep: float, neighbours: int = 20) -> np.ndarray:
    """Each cluster's `keep` share of images whose `neighbours` nearest images (cosine) most often
    share their label keep it as a target (images tied at the cut too, so a little more than `keep`);
    the rest get -1 (no target)."""
    from sklearn.neighbors import NearestNeighbors

    from feature_neighbours import unit

    x = unit(x)
    near = NearestNeighbors(n_neighbors=neighbours + 1).fit(x).kneighbors(x, return_distance=False)
    same = (labels[near[:, 1:]] == labels[:, None]).mean(1)
    targets = np.full(len(labels), -1)
    for k in np.unique(labels):
        members = np.flatnonzero(labels == k)
        chosen = members[same[members] >= np.quantile(same[members], 1 - keep)]
        targets[chosen] = k
    return targets


def class_weights(targets: np.ndarray, k: int = K) -> torch.Tensor:
    """Inverse counts of the targets' clusters, mean 1 over the clusters that have targets."""
    counts = np.bincount(targets[targets >= 0], minlength=k).astype(float)
    weights = np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0)
    return torch.tensor(weights * (counts > 0).sum() / weights.sum(), dtype=torch.float32)


def self_label(
    clusterer, images: np.ndarray, targets: np.ndarray, width: int, args
) -> tuple[torch.nn.Module, float]:
    """Train the run's encoder further on `images` with `targets` through a new linear head on its
    `width` pooled features; (the head, seconds)."""
    from aegmm.augment import augment, default_policy
    from aegmm.precision import native_bfloat16

    net = clusterer.autoencoder_
    encoder, normalizer = net.encoder, clusterer.normalizer_
    policy = default_policy(images.shape[-1])
    torch.manual_seed(args.seed)
    head = torch.nn.Linear(width, K)
    params = [*encoder.parameters(), *head.parameters()]
    optimizer = torch.optim.Adam(params, lr=args.lr, weight_decay=1e-4)
    weights = class_weights(targets)
    bf16 = native_bfloat16(torch.device("cpu"))
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(args.seed)
    net.train()
    for epoch in range(args.epochs):
        order = torch.randperm(len(images), generator=generator).numpy()
        total, steps = 0.0, 0
        for start in range(0, len(order) - args.batch + 1, args.batch):
            batch = np.sort(order[start : start + args.batch])
            x = normalizer.to_tensor(images[batch])
            views = torch.cat([augment(x, policy, normalizer, generator) for _ in range(2)])
            views = views.contiguous(memory_format=torch.channels_last)
            y = torch.from_numpy(np.concatenate([targets[batch], targets[batch]]))
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                h = encoder.pooled(views)
                logits = head(h)
            loss = F.cross_entropy(logits.float(), y, weight=weights, ignore_index=-1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, steps = total + float(loss.detach()), steps + 1
        print(f"  epoch {epoch + 1}/{args.epochs}: loss {total / max(steps, 1):.4f}", flush=True)
    net.eval()
    return head.eval(), time.perf_counter() - started


def one_run(folder: Path, fit, held_out, args) -> dict:
    from aegmm import load
    from aegmm.contrastive import encode_features
    from aegmm.mixture import LatentMixture

    fit_x, test_x = cached_features(folder, fit, held_out)
    clusterer = load(folder / "run", progress=False)
    before = agreement(held_out.classes, clusterer.mixture_.predict(test_x))
    proba = clusterer.mixture_.predict_proba(fit_x)
    if args.keep:
        targets = neighbour_targets(fit_x, proba.argmax(1), args.keep)
    else:
        targets = targets_from(proba, args.threshold)
    sure = targets >= 0
    head, train_seconds = self_label(clusterer, fit.images, targets, fit_x.shape[1], args)
    new_fit, new_test = (
        encode_features(clusterer.autoencoder_, x, clusterer.normalizer_, ("pooled",))["pooled"]
        for x in (fit.images, held_out.images)
    )
    with torch.no_grad():
        head_labels = head(torch.from_numpy(new_test)).argmax(1).numpy()
    started = time.perf_counter()
    mixture = LatentMixture(clusterer.config_.mixture).fit(new_fit, n_jobs=args.threads)
    refit_seconds = time.perf_counter() - started
    return {
        "folder": folder.name,
        "seed": int(clusterer.config_.train.seed),
        "epochs_before": int(clusterer.config_.train.epochs),
        "settings": {k: getattr(args, k) for k in ("epochs", "threshold", "keep", "lr", "batch")},
        "targets_share": round(float(sure.mean()), 4),
        "targets_acc": agreement(fit.classes[sure], targets[sure])["acc"],
        "before": before,
        "after": agreement(held_out.classes, mixture.predict(new_test)),
        "head": agreement(held_out.classes, head_labels),
        "train_seconds": round(train_seconds, 1),
        "refit_seconds": round(refit_seconds, 1),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", type=Path, required=True, help="quality.py's --cache folder")
    p.add_argument("--out", type=Path, required=True, help="folder for rows.jsonl")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--threshold", type=float, default=0.9)
    p.add_argument(
        "--keep",
        type=float,
        default=0.0,
        help="targets: each cluster's share of images "
        "whose 20 nearest neighbours agree most (0: the mixture's memberships >= --threshold)",
    )
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", default="", help="comma-separated cache folder names (default: all)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    fit, held_out = split_cifake(load_cifake())
    args.out.mkdir(parents=True, exist_ok=True)
    wanted = set(filter(None, args.only.split(",")))
    print(json.dumps({"command": "python " + " ".join(sys.argv), "machine": machine()}), flush=True)
    with threadpool_limits(args.threads):
        for folder in sorted(args.cache.iterdir()):
            if not (folder / "arrays.npz").exists() or (wanted and folder.name not in wanted):
                continue
            append_row(one_run(folder, fit, held_out, args), args.out / "rows.jsonl")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
