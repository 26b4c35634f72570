"""Issue 13 on MNIST: which features, reduced by UMAP, let a GMM find the digits? Held-out scoring.

    PYTHONPATH=src python benchmarks/mnist_levers.py pixels
    PYTHONPATH=src python benchmarks/mnist_levers.py contrastive --epochs 6
    PYTHONPATH=src python benchmarks/mnist_levers.py recon --epochs 5

Data: mnist_train_10k.npz, 8,000 fit / 2,000 held-out stratified by digit (random_state 0), 28x28
padded to 32x32 (contrastive_probe.load_mnist). Every reducer and mixture is fitted on the fit set;
UMAP (n_neighbors 20, min_dist 0, seed 0) is fitted on the fit set and `.transform`s the held-out.
Features of the trained encoders are saved to /tmp/exp13/mnist_<objective>_<epochs>ep_feats.npz (same keys as
lever_sweep.py), so more mixture settings can be run on them later with `lever_sweep.py sweep`.
ONE thread throughout; single seed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402
from contrastive_probe import load_mnist  # noqa: E402
from lever_sweep import OUT, describe, evaluate  # noqa: E402

RESULTS_FILE = OUT / "mnist.json"


def settings_for(kind: str, dims: dict[str, int]) -> list[dict]:
    if kind == "pixels":
        base = {"feature": "pixels", "standardise": False, "pca": 50, "whiten": False}
        return [
            base | {"umap": 10},
            base | {"umap": 10, "method": "kmeans", "n_init": 10},
            base | {"whiten": True},  # GMM on 50 whitened PCA components, no UMAP
        ]
    rows = []
    for f in ("bottleneck", "pooled"):
        if f not in dims:
            continue
        rows.append({"feature": f, "pca": 20})  # aegmm LatentMixture equivalent
        for use_l2 in (False, True):
            rows.append(
                {"feature": f, "l2": use_l2, "pca": 50 if dims[f] > 50 else 0, "whiten": False, "umap": 10}
            )
        rows.append({"feature": f, "l2": True, "pca": 0, "method": "kmeans", "n_init": 10})
    return rows


def save_rows(rows: list[dict]) -> None:
    lines = [
        "| objective | setting | acc | NMI | ARI | fit acc | seconds | train s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['objective']} | {describe(r['setting'])} | {r['acc']:.3f} | {r['nmi']:.3f} | "
            f"{r['ari']:.3f} | {r['fit_acc']:.3f} | {r['seconds']:.0f} | {r.get('train_seconds', 0):.0f} |"
        )
    (OUT / "mnist.md").write_text("\n".join(lines) + "\n")
    RESULTS_FILE.write_text(json.dumps({"machine": machine(), "rows": rows}, indent=1) + "\n")


def feature_file(kind: str, epochs: int) -> str:
    return f"/tmp/exp13/mnist_{kind}_{epochs}ep_feats.npz"


def train_features(kind: str, args, fit, test) -> tuple[dict, float, list]:
    import torch

    from aegmm.config import ModelConfig, TrainConfig
    from aegmm.contrastive import encode_features, train_contrastive
    from aegmm.preprocess import Normalizer
    from aegmm.train import train_autoencoder

    torch.set_num_threads(1)
    mc = ModelConfig(image_size=32, channels=1, latent_dim=32, width=0.25)
    batch = 256 if kind == "contrastive" else 128  # contrastive probe / ImageClusterer default
    tc = TrainConfig(epochs=args.epochs, batch_size=batch, device="cpu", precision="float32", seed=0)
    normalizer = Normalizer.fit(fit.images)
    t0 = time.perf_counter()
    if kind == "contrastive":
        model, history = train_contrastive(fit.images, mc, tc, normalizer, progress=True, temperature=0.2)
    else:
        model, history = train_autoencoder(fit.images, mc, tc, normalizer, progress=True)
    train_s = time.perf_counter() - t0
    f_fit = encode_features(model, fit.images, normalizer)
    f_test = encode_features(model, test.images, normalizer)
    feats = {"fit_y": fit.classes, "test_y": test.classes}
    for f in ("pooled", "bottleneck"):
        feats[f"fit_{f}"], feats[f"test_{f}"] = f_fit[f], f_test[f]
    np.savez(feature_file(kind, args.epochs), **feats)
    return feats, train_s, history


def seeds(rows: list[dict], fit, test) -> int:
    """Seeds 1 and 2 of every seed-0 UMAP row so far, on the saved features (pixels recomputed)."""
    sources = {"raw pixels": None}
    for r in rows:
        if r["objective"] != "raw pixels":
            kind = "contrastive" if r["objective"].startswith("contrastive") else "recon"
            sources[r["objective"]] = feature_file(kind, int(r["objective"].split(", ")[1].split()[0]))
    base = [r for r in rows if r["setting"].get("umap") and not r["setting"].get("seed")]
    done = {(r["objective"], json.dumps(r["setting"], sort_keys=True)) for r in rows}
    for r in base:
        path = sources.get(r["objective"])
        if path is None:
            feats = {
                "fit_pixels": fit.images.reshape(len(fit.images), -1) / 255.0,
                "test_pixels": test.images.reshape(len(test.images), -1) / 255.0,
                "fit_y": fit.classes,
                "test_y": test.classes,
            }
        else:
            with np.load(path) as z:
                feats = {k: z[k] for k in z.files}
        for seed in (1, 2):
            setting = dict(r["setting"], seed=seed)
            if (r["objective"], json.dumps(setting, sort_keys=True)) in done:
                continue
            out = evaluate(feats, setting) | {
                "objective": r["objective"],
                "train_seconds": r["train_seconds"],
            }
            rows.append(out)
            print(
                f"{r['objective']} {describe(setting)}: acc {out['acc']:.3f} NMI {out['nmi']:.3f}", flush=True
            )
            save_rows(rows)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "kind",
        choices=("pixels", "contrastive", "recon", "seeds"),
        help="seeds: re-run the UMAP rows with mixture/UMAP seeds 1 and 2 on the saved features",
    )
    p.add_argument("--epochs", type=int, default=6)
    args = p.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    Path("/tmp/exp13").mkdir(parents=True, exist_ok=True)
    rows = json.loads(RESULTS_FILE.read_text())["rows"] if RESULTS_FILE.exists() else []
    fit, test = load_mnist(8000, 2000)
    if args.kind == "seeds":
        return seeds(rows, fit, test)
    train_s, history = 0.0, []
    if args.kind == "pixels":
        feats = {
            "fit_pixels": fit.images.reshape(len(fit.images), -1) / 255.0,
            "test_pixels": test.images.reshape(len(test.images), -1) / 255.0,
            "fit_y": fit.classes,
            "test_y": test.classes,
        }
        dims = {"pixels": 1024}
    else:
        feats, train_s, history = train_features(args.kind, args, fit, test)
        dims = {f: feats[f"fit_{f}"].shape[1] for f in ("pooled", "bottleneck")}
    objective = {
        "pixels": "raw pixels",
        "contrastive": f"contrastive NT-Xent, {args.epochs} ep",
        "recon": f"reconstruction MSE, {args.epochs} ep",
    }[args.kind]
    for setting in settings_for(args.kind, dims):
        r = evaluate(feats, setting) | {
            "objective": objective,
            "train_seconds": round(train_s),
            "epoch_seconds": [round(h["seconds"]) for h in history],
        }
        rows.append(r)
        print(
            f"{objective} {describe(setting)}: acc {r['acc']:.3f} NMI {r['nmi']:.3f} ({r['seconds']:.0f} s)",
            flush=True,
        )
        save_rows(rows)
    print(f"wrote {OUT / 'mnist.md'}")
    return 0


if __name__ == "__main__":
    with threadpool_limits(1):
        raise SystemExit(main())
