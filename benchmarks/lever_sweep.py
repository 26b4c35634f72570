"""Issue 13 levers: train an encoder ONCE, save its features, then sweep the mixture side cheaply.

    # 1. train the NT-Xent encoder once (seed 0) and save fit / held-out features + labels + weights
    PYTHONPATH=src python benchmarks/lever_sweep.py train --dataset cifake --epochs 12 \
        --out /tmp/exp13/cifake_feats.npz
    # 2. sweep the mixture side on the saved features (no training)
    PYTHONPATH=src python benchmarks/lever_sweep.py sweep --feats /tmp/exp13/cifake_feats.npz \
        --name cifake_sweep

Everything runs on ONE thread (torch, OMP/MKL, threadpoolctl). Held-out scoring: every clusterer
is fitted on the fit features only and predicts the held-out ones; acc = Hungarian accuracy, NMI
against the CIFAR class (digit on MNIST). Single seed unless a row says otherwise.

The feature file holds fit_pooled, fit_bottleneck, test_pooled, test_bottleneck (float32),
fit_y, test_y (int64), and the weights go next to it as <stem>_model.pt (autoencoder state_dict,
model config and normalizer), for the self-labelling refinement (scan_refine.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from sklearn.cluster import KMeans  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.mixture import GaussianMixture  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, agreement, machine  # noqa: E402

K = 10
OUT = RESULTS / "levers"
REFERENCE = [{"feature": f, "l2": False, "pca": 20, "whiten": True} for f in ("pooled", "bottleneck")]


# -- the clusterer of one setting -----------------------------------------------------------------


def l2(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def prepare(fit_x, test_x, *, l2norm=False, standardise=True, pca=20, whiten=True, seed=0):
    """(fit, test) after optional L2, standardising (fit statistics) and PCA (fit on fit)."""
    fit_x, test_x = fit_x.astype(np.float64), test_x.astype(np.float64)
    if l2norm:
        fit_x, test_x = l2(fit_x), l2(test_x)
    if standardise:
        mu, sd = fit_x.mean(0), fit_x.std(0)
        sd = np.where(sd < 1e-8, 1.0, sd)
        fit_x, test_x = (fit_x - mu) / sd, (test_x - mu) / sd
    if pca and pca < fit_x.shape[1]:
        p = PCA(n_components=pca, whiten=whiten, random_state=seed).fit(fit_x)
        fit_x, test_x = p.transform(fit_x), p.transform(test_x)
    return fit_x, test_x


def umap_reduce(fit_x, test_x, *, dim=10, n_neighbors=20, metric="euclidean", seed=0):
    import umap

    reducer = umap.UMAP(
        n_components=dim, n_neighbors=n_neighbors, min_dist=0.0, metric=metric, random_state=seed, n_jobs=1
    )
    fit_e = reducer.fit_transform(fit_x.astype(np.float32))
    test_e = reducer.transform(test_x.astype(np.float32))
    return fit_e.astype(np.float64), test_e.astype(np.float64)


def cluster(fit_x, test_x, *, method="gmm", cov="full", init="kmeans", n_init=3, reg_covar=1e-4, seed=0):
    """Held-out labels (and fit labels, fit posteriors when a GMM) of one clusterer."""
    if method == "kmeans":
        km = KMeans(K, init="k-means++", n_init=n_init, random_state=seed).fit(fit_x)
        return km.predict(test_x), km.labels_, None
    gmm = GaussianMixture(
        K,
        covariance_type=cov,
        init_params=init,
        n_init=n_init,
        reg_covar=reg_covar,
        max_iter=300,
        random_state=seed,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gmm.fit(fit_x)
    post = gmm.predict_proba(fit_x)
    return gmm.predict(test_x), post.argmax(1), post


def evaluate(feats: dict, setting: dict) -> dict:
    """Run one setting: feature kind, L2, standardise, PCA, whiten, UMAP, clusterer; scores + seconds."""
    s = dict(setting)
    t0 = time.perf_counter()
    fit_x, test_x = feats[f"fit_{s['feature']}"], feats[f"test_{s['feature']}"]
    fit_x, test_x = prepare(
        fit_x,
        test_x,
        l2norm=s.get("l2", False),
        standardise=s.get("standardise", True),
        pca=s.get("pca", 20),
        whiten=s.get("whiten", True),
        seed=s.get("seed", 0),
    )
    if s.get("umap"):
        fit_x, test_x = umap_reduce(
            fit_x,
            test_x,
            dim=s["umap"],
            n_neighbors=s.get("umap_neighbors", 20),
            metric=s.get("umap_metric", "euclidean"),
            seed=s.get("seed", 0),
        )
    test_pred, fit_pred, _ = cluster(
        fit_x,
        test_x,
        method=s.get("method", "gmm"),
        cov=s.get("cov", "full"),
        init=s.get("init", "kmeans"),
        n_init=s.get("n_init", 3),
        seed=s.get("seed", 0),
    )
    held = agreement(feats["test_y"], test_pred)
    fit = agreement(feats["fit_y"], fit_pred)
    return {
        "setting": setting,
        "acc": held["acc"],
        "nmi": held["nmi"],
        "ari": held["ari"],
        "fit_acc": fit["acc"],
        "seconds": round(time.perf_counter() - t0, 1),
    }


def describe(s: dict) -> str:
    parts = [s["feature"] + ("+L2" if s.get("l2") else "")]
    if not s.get("standardise", True):
        parts.append("no-std")
    pca = s.get("pca", 20)
    parts.append(f"PCA{pca}{'w' if s.get('whiten', True) else ''}" if pca else "noPCA")
    if s.get("umap"):
        extra = f",{s['umap_metric']}" if s.get("umap_metric", "euclidean") != "euclidean" else ""
        parts.append(f"UMAP{s['umap']}(nn{s.get('umap_neighbors', 20)}{extra})")
    if s.get("method", "gmm") == "kmeans":
        method = f"KMeans(n_init {s.get('n_init', 3)})"
    else:
        method = f"GMM {s.get('cov', 'full')}, init {s.get('init', 'kmeans')}, n_init {s.get('n_init', 3)}"
    if s.get("seed", 0):
        method += f", seed {s['seed']}"
    return " ".join(parts) + " -> " + method


# -- the sweep grid ----------------------------------------------------------------------------------


def grid(dims: dict[str, int], quick_umap: bool = True) -> list[tuple[str, dict]]:
    """(group, setting) pairs; group names the lever a block of rows varies."""
    rows = []
    for f in ("pooled", "bottleneck"):
        d = dims[f]
        for use_l2 in (False, True):
            for pca in (0, 10, 20, 32, 64):
                if pca >= d:
                    continue
                for whiten in (True, False) if pca else (True,):
                    rows.append(
                        (
                            "A: L2 x PCA size x whitening (GMM full, n_init 3)",
                            {"feature": f, "l2": use_l2, "pca": pca, "whiten": whiten},
                        )
                    )
    for f in ("pooled", "bottleneck"):
        for use_l2 in (False, True):
            for cov in ("diag", "spherical", "tied"):
                rows.append(
                    (
                        "B: covariance type (PCA 20 whitened)",
                        {"feature": f, "l2": use_l2, "pca": 20, "cov": cov},
                    )
                )
    for f in ("pooled", "bottleneck"):
        for init in ("k-means++", "random_from_data"):
            rows.append(("C: GMM init_params / n_init (PCA 20 whitened, full)", {"feature": f, "init": init}))
        for n_init in (1, 10):
            rows.append(
                ("C: GMM init_params / n_init (PCA 20 whitened, full)", {"feature": f, "n_init": n_init})
            )
    for f in ("pooled", "bottleneck"):
        for use_l2 in (False, True):
            for pca in (0, 20):
                rows.append(
                    (
                        "D: plain K-Means",
                        {
                            "feature": f,
                            "l2": use_l2,
                            "pca": pca,
                            "whiten": False,
                            "method": "kmeans",
                            "n_init": 10,
                        },
                    )
                )
    for f in ("pooled", "bottleneck"):
        for use_l2 in (False, True):
            rows.append(
                (
                    "E: UMAP(10) before the GMM (PCA 50 unwhitened of pooled; full GMM)",
                    {
                        "feature": f,
                        "l2": use_l2,
                        "pca": 50 if f == "pooled" else 0,
                        "whiten": False,
                        "umap": 10,
                    },
                )
            )
    return rows


def seeds_rows(best: list[dict]) -> list[tuple[str, dict]]:
    rows = []
    for s in best:
        for seed in (1, 2):
            rows.append(("F: mixture seed spread of the best rows", dict(s["setting"], seed=seed)))
    return rows


def markdown_table(results: list[dict]) -> str:
    lines, group = [], None
    for r in results:
        if r["group"] != group:
            group = r["group"]
            lines += [
                "",
                f"### {group}",
                "",
                "| setting | acc | NMI | ARI | fit acc | seconds |",
                "| --- | ---: | ---: | ---: | ---: | ---: |",
            ]
        lines.append(
            f"| {describe(r['setting'])} | {r['acc']:.3f} | {r['nmi']:.3f} | {r['ari']:.3f} | "
            f"{r['fit_acc']:.3f} | {r['seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def sweep(args) -> int:
    with np.load(args.feats) as z:
        feats = {k: z[k] for k in z.files}
    dims = {f: feats[f"fit_{f}"].shape[1] for f in ("pooled", "bottleneck")}
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{args.name}.json"
    results = json.loads(path.read_text())["results"] if (args.resume and path.exists()) else []
    done = {json.dumps(r["setting"], sort_keys=True) for r in results}
    rows = grid(dims)  # "PCA20w -> GMM full, init kmeans, n_init 3" is aegmm's LatentMixture
    if args.only:
        rows = [r for r in rows if r[0][0] in args.only]
    header = {"command": " ".join(sys.argv), "feats": str(args.feats), "machine": machine(), "dims": dims}

    def save():
        path.write_text(json.dumps(header | {"results": results}, indent=1) + "\n")
        (OUT / f"{args.name}.md").write_text(markdown_table(results))

    def run(todo: list[tuple[str, dict]]) -> None:
        """Evaluate each setting not yet done, saving after each."""
        for group, setting in todo:
            if json.dumps(setting, sort_keys=True) in done:
                continue
            r = evaluate(feats, setting) | {"group": group}
            results.append(r)
            line = f"{describe(setting)}: acc {r['acc']:.3f} NMI {r['nmi']:.3f} ({r['seconds']:.0f} s)"
            print(f"{group[:2]} {line}", flush=True)
            save()

    run(rows)
    if args.seeds or args.umap_seeds:
        base = [r for r in results if r["group"][0] != "F"]
        ranked = sorted([r for r in base if not r["setting"].get("umap")], key=lambda r: -r["nmi"])[
            : args.seeds
        ]
        reference = [r for r in base if r["setting"] in REFERENCE]  # aegmm's LatentMixture, both features
        ranked += [r for r in reference if r not in ranked]
        extra = []
        umap_rows = sorted([r for r in base if r["setting"].get("umap")], key=lambda r: -r["nmi"])
        if umap_rows and args.umap_seeds:  # UMAP costs minutes per run: only the best row, fewer seeds
            extra = [
                ("F: mixture seed spread of the best rows", dict(umap_rows[0]["setting"], seed=seed))
                for seed in range(1, args.umap_seeds + 1)
            ]
        run(seeds_rows(ranked) + extra)
    save()
    print(f"wrote {OUT / args.name}.md")
    return 0


# -- training once and saving the features ------------------------------------------------------------


def train(args) -> int:
    import torch

    from aegmm.config import ModelConfig, TrainConfig
    from aegmm.contrastive import encode_features, train_contrastive
    from aegmm.preprocess import Normalizer
    from common import load_cifake, split_cifake
    from contrastive_probe import load_mnist

    torch.set_num_threads(1)
    t_start = time.perf_counter()
    if args.dataset == "cifake":
        fit, test = split_cifake(load_cifake())
    else:
        fit, test = load_mnist(8000, 2000)
    load_s = time.perf_counter() - t_start
    print(f"loaded {fit.images.shape} / {test.images.shape} in {load_s:.0f} s", flush=True)
    mc = ModelConfig(image_size=32, channels=fit.images.shape[-1], latent_dim=32, width=args.width)
    tc = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=1e-3,
        device="cpu",
        precision=args.precision,
        seed=args.seed,
    )
    normalizer = Normalizer.fit(fit.images)
    t0 = time.perf_counter()
    model, history = train_contrastive(
        fit.images,
        mc,
        tc,
        normalizer,
        progress=False,
        temperature=args.temperature,
        on_epoch=lambda e, m, h: print(
            f"epoch {e}: loss {h[-1]['train_loss']:.4f} val {h[-1]['val_loss']:.4f} {h[-1]['seconds']:.0f} s",
            flush=True,
        ),
    )
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    fit_f = encode_features(model, fit.images, normalizer)
    test_f = encode_features(model, test.images, normalizer)
    encode_s = time.perf_counter() - t0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        out,
        fit_pooled=fit_f["pooled"],
        fit_bottleneck=fit_f["bottleneck"],
        test_pooled=test_f["pooled"],
        test_bottleneck=test_f["bottleneck"],
        fit_y=fit.classes,
        test_y=test.classes,
    )
    torch.save(
        {
            "state_dict": model.state_dict(),
            "model_config": mc.__dict__,
            "normalizer": {"mean": normalizer.mean, "std": normalizer.std},
        },
        out.with_name(out.stem + "_model.pt"),
    )
    meta = {
        "command": " ".join(sys.argv),
        "machine": machine(),
        "load_seconds": load_s,
        "train_seconds": train_s,
        "encode_seconds": encode_s,
        "history": history,
        "model": mc.__dict__,
        "train": tc.__dict__,
        "temperature": args.temperature,
    }
    out.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"trained in {train_s:.0f} s, encoded in {encode_s:.0f} s; wrote {out}", flush=True)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--dataset", choices=("cifake", "mnist"), default="cifake")
    t.add_argument("--epochs", type=int, default=8)
    t.add_argument("--batch-size", type=int, default=256)
    t.add_argument("--width", type=float, default=0.25)
    t.add_argument("--temperature", type=float, default=0.2)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument(
        "--precision",
        default="float32",
        help="bfloat16 is ~15x slower on a CPU without native bf16 (AVX2-only EPYC)",
    )
    t.add_argument("--out", default="/tmp/exp13/cifake_feats.npz")
    s = sub.add_parser("sweep")
    s.add_argument("--feats", default="/tmp/exp13/cifake_feats.npz")
    s.add_argument("--name", default="cifake_sweep")
    s.add_argument("--only", default="", help="group letters to run, e.g. AB")
    s.add_argument(
        "--seeds", type=int, default=3, help="re-run the N best non-UMAP rows (by NMI) with seeds 1, 2"
    )
    s.add_argument("--umap-seeds", type=int, default=1, help="re-run the best UMAP row with seeds 1..N")
    s.add_argument("--resume", action="store_true", help="keep rows already in the results file")
    args = parser.parse_args(argv)
    with threadpool_limits(1):
        return train(args) if args.cmd == "train" else sweep(args)


if __name__ == "__main__":
    raise SystemExit(main())
