"""Issue 13: SCAN-style self-labelling on top of a saved contrastive encoder (lever_sweep.py train).

    PYTHONPATH=src python benchmarks/scan_refine.py --feats /tmp/exp13/cifake_feats.npz \
        --feature pooled --pca 20 --finetune-epochs 2

Starting point: a mixture (standardise, PCA, GMM full) fitted on the saved fit-set features. Then:

1. frozen features, linear head on the mixture's confident fit-set labels (posterior > 0.9, or the
   top 50% by posterior of each cluster); the head predicts the held-out features.
2. frozen features, SCAN's neighbour-consistency head (Van Gansbeke et al. 2020): a linear softmax head
   trained so that each fit image and its 20 nearest neighbours (cosine, pooled features) agree,
   minus an entropy term on the mean assignment (weight 5); best of 5 heads by loss; then
   self-labelled on its own confident (> 0.99) fit images.
3. fine-tuning the encoder + a linear head (initialised from step 1) for a few epochs with
   cross-entropy on augmented views (aegmm.augment.COLOUR) of the confident fit images; scored
   by the head on the held-out images and by a re-fitted mixture on the new features.

Everything on ONE thread; fit on the 16,000 fit images only, scored on the 4,000 held-out ones.
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

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from sklearn.neighbors import NearestNeighbors  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import agreement, machine  # noqa: E402
from lever_sweep import OUT, K, cluster, l2, prepare  # noqa: E402

ROWS: list[dict] = []


def record(name: str, test_y, pred, seconds: float, extra: dict | None = None, path: Path | None = None):
    a = agreement(test_y, pred)
    row = {"setting": name, "acc": a["acc"], "nmi": a["nmi"], "ari": a["ari"], "seconds": round(seconds, 1)}
    ROWS.append(row | (extra or {}))
    print(f"{name}: acc {a['acc']:.3f} NMI {a['nmi']:.3f} ({seconds:.0f} s) {extra or ''}", flush=True)
    if path is not None:
        path.with_suffix(".json").write_text(
            json.dumps({"command": " ".join(sys.argv), "machine": machine(), "rows": ROWS}, indent=1) + "\n"
        )
        lines = [
            "| setting | acc | NMI | ARI | seconds | notes |",
            "| --- | ---: | ---: | ---: | ---: | --- |",
        ]
        for r in ROWS:
            notes = ", ".join(
                f"{k} {v}" for k, v in r.items() if k not in ("setting", "acc", "nmi", "ari", "seconds")
            )
            lines.append(
                f"| {r['setting']} | {r['acc']:.3f} | {r['nmi']:.3f} | {r['ari']:.3f} | "
                f"{r['seconds']:.0f} | {notes} |"
            )
        path.with_suffix(".md").write_text("\n".join(lines) + "\n")


class Head(torch.nn.Module):
    """Fixed standardisation (fit statistics) then a linear layer to K logits."""

    def __init__(self, mu: np.ndarray, sd: np.ndarray, k: int = K) -> None:
        super().__init__()
        self.register_buffer("mu", torch.tensor(mu, dtype=torch.float32))
        self.register_buffer("sd", torch.tensor(sd, dtype=torch.float32))
        self.linear = torch.nn.Linear(len(mu), k)

    def forward(self, h):
        return self.linear((h - self.mu) / self.sd)


def train_head(
    head: Head, x: np.ndarray, y: np.ndarray, epochs: int = 60, lr: float = 1e-2, wd: float = 1e-4
):
    """Cross-entropy on (frozen) features with full-batch-ish Adam; returns the head."""
    xt, yt = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.long)
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=wd)
    g = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for idx in torch.randperm(len(xt), generator=g).split(512):
            loss = F.cross_entropy(head(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return head


@torch.no_grad()
def head_predict(head: Head, x: np.ndarray) -> np.ndarray:
    return head(torch.tensor(x, dtype=torch.float32)).softmax(1).numpy()


def confident(post: np.ndarray, rule: str) -> np.ndarray:
    """Indices of confident fit images: posterior > 0.9, or the top half of each cluster."""
    labels, top = post.argmax(1), post.max(1)
    if rule == "p>0.9":
        return np.flatnonzero(top > 0.9)
    keep = []
    for k in range(post.shape[1]):
        members = np.flatnonzero(labels == k)
        if len(members):
            order = members[np.argsort(-top[members])]
            keep.append(order[: max(1, len(order) // 2)])
    return np.sort(np.concatenate(keep))


def scan_heads(fit_x, mu, sd, n_neighbors=20, heads=5, epochs=40, entropy_weight=5.0, seed=0):
    """SCAN's clustering step on frozen features: best (lowest total loss) of `heads` linear heads."""
    nn_index = NearestNeighbors(n_neighbors=n_neighbors + 1, metric="cosine").fit(fit_x)
    neigh = nn_index.kneighbors(fit_x, return_distance=False)[:, 1:]  # (N, k) without the point itself
    xt = torch.tensor(fit_x, dtype=torch.float32)
    best, best_loss = None, float("inf")
    for h in range(heads):
        torch.manual_seed(seed + h)
        head = Head(mu, sd)
        opt = torch.optim.Adam(head.parameters(), lr=1e-3, weight_decay=1e-4)
        g = torch.Generator().manual_seed(seed + h)
        for _ in range(epochs):
            total = 0.0
            for idx in torch.randperm(len(xt), generator=g).split(256):
                j = torch.from_numpy(
                    neigh[idx.numpy(), torch.randint(n_neighbors, (len(idx),), generator=g).numpy()]
                )
                p, q = head(xt[idx]).softmax(1), head(xt[j]).softmax(1)
                consistency = -torch.log((p * q).sum(1).clamp_min(1e-8)).mean()
                mean_p = p.mean(0)
                entropy = (mean_p * torch.log(mean_p.clamp_min(1e-8))).sum()  # minus the entropy
                loss = consistency + entropy_weight * entropy
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss) * len(idx)
        if total < best_loss:
            best, best_loss = head, total
    return best, neigh


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--feats", default="/tmp/exp13/cifake_feats.npz")
    p.add_argument("--feature", default="pooled")
    p.add_argument("--l2", action="store_true")
    p.add_argument("--pca", type=int, default=20)
    p.add_argument("--no-whiten", action="store_true")
    p.add_argument("--cov", default="full")
    p.add_argument("--finetune-epochs", type=int, default=2)
    p.add_argument(
        "--rule", default="p>0.9", choices=("p>0.9", "top50"), help="confident set for fine-tuning"
    )
    p.add_argument("--name", default="cifake_scan")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    path = OUT / args.name
    OUT.mkdir(parents=True, exist_ok=True)
    with np.load(args.feats) as z:
        feats = {k: z[k] for k in z.files}
    fit_raw = feats[f"fit_{args.feature}"].astype(np.float64)
    test_raw = feats[f"test_{args.feature}"].astype(np.float64)
    if args.l2:
        fit_raw, test_raw = l2(fit_raw), l2(test_raw)
    fit_y, test_y = feats["fit_y"], feats["test_y"]

    # 0. the mixture
    t0 = time.perf_counter()
    fx, tx = prepare(fit_raw, test_raw, pca=args.pca, whiten=not args.no_whiten)
    test_pred, fit_pred, post = cluster(fx, tx, cov=args.cov)
    mix_s = time.perf_counter() - t0
    record(
        f"0 mixture ({args.feature}{'+L2' if args.l2 else ''}, PCA{args.pca}, GMM {args.cov})",
        test_y,
        test_pred,
        mix_s,
        {"fit acc": agreement(fit_y, fit_pred)["acc"]},
        path,
    )
    mu, sd = fit_raw.mean(0), np.where(fit_raw.std(0) < 1e-8, 1.0, fit_raw.std(0))

    # 1. linear head on confident mixture labels, frozen features
    heads = {}
    for rule in ("p>0.9", "top50"):
        t0 = time.perf_counter()
        keep = confident(post, rule)
        head = train_head(Head(mu, sd), fit_raw[keep], fit_pred[keep])
        heads[rule] = head
        pred = head_predict(head, test_raw).argmax(1)
        pseudo = agreement(fit_y[keep], fit_pred[keep])["acc"]
        record(
            f"1 linear head on confident mixture labels ({rule}), frozen",
            test_y,
            pred,
            time.perf_counter() - t0,
            {"confident": int(len(keep)), "their label acc": pseudo},
            path,
        )

    # 2. SCAN neighbour-consistency head, frozen features, then self-labelling
    t0 = time.perf_counter()
    scan, neigh = scan_heads(fit_raw, mu, sd)
    fit_p = head_predict(scan, fit_raw)
    nn_purity = float((fit_y[neigh] == fit_y[:, None]).mean())
    record(
        "2a SCAN head (20-NN consistency + entropy), frozen",
        test_y,
        head_predict(scan, test_raw).argmax(1),
        time.perf_counter() - t0,
        {"20-NN label purity": round(nn_purity, 3)},
        path,
    )
    t0 = time.perf_counter()
    keep = np.flatnonzero(fit_p.max(1) > 0.99)
    if len(keep) < 10 * K:
        keep = confident(fit_p, "top50")
    self_head = train_head(Head(mu, sd), fit_raw[keep], fit_p.argmax(1)[keep])
    record(
        "2b SCAN head then self-label (p>0.99 of its own), frozen",
        test_y,
        head_predict(self_head, test_raw).argmax(1),
        time.perf_counter() - t0,
        {"confident": int(len(keep))},
        path,
    )

    # 3. fine-tune the encoder + linear head with CE on augmented views of confident images
    if args.finetune_epochs:
        finetune(args, feats, fit_pred, post, heads[args.rule], path)
    print(f"wrote {path}.md")
    return 0


def finetune(args, feats, fit_pred, post, head: Head, path: Path) -> None:
    from aegmm.augment import COLOUR, GRAYSCALE, augment
    from aegmm.config import ModelConfig
    from aegmm.contrastive import encode_features, pooled
    from aegmm.nn import AutoEncoder
    from aegmm.preprocess import Normalizer
    from common import load_cifake, split_cifake

    if args.feature != "pooled" or args.l2:
        raise SystemExit("fine-tuning is written for the raw pooled feature")
    t_load = time.perf_counter()
    fit, test = split_cifake(load_cifake())
    assert (fit.classes == feats["fit_y"]).all() and (test.classes == feats["test_y"]).all()
    saved = torch.load(Path(args.feats).with_name(Path(args.feats).stem + "_model.pt"), weights_only=False)
    model = AutoEncoder(ModelConfig(**saved["model_config"]))
    model.load_state_dict(saved["state_dict"])
    normalizer = Normalizer(tuple(saved["normalizer"]["mean"]), tuple(saved["normalizer"]["std"]))
    policy = COLOUR if fit.images.shape[-1] == 3 else GRAYSCALE
    print(f"loaded images and weights in {time.perf_counter() - t_load:.0f} s", flush=True)
    # 0b. a free lever first: average the pooled features of each image and its mirror image
    t0 = time.perf_counter()
    flip_fit = encode_features(model, fit.images[:, :, ::-1].copy(), normalizer)["pooled"]
    flip_test = encode_features(model, test.images[:, :, ::-1].copy(), normalizer)["pooled"]
    avg_fit = (feats["fit_pooled"].astype(np.float64) + flip_fit) / 2
    avg_test = (feats["test_pooled"].astype(np.float64) + flip_test) / 2
    fx, tx = prepare(avg_fit, avg_test, pca=args.pca, whiten=not args.no_whiten)
    test_pred, _, _ = cluster(fx, tx, cov=args.cov)
    record(
        "0b mixture on flip-averaged pooled features (image + mirror)",
        feats["test_y"],
        test_pred,
        time.perf_counter() - t0,
        None,
        path,
    )

    keep = confident(post, args.rule)
    labels = torch.tensor(fit_pred, dtype=torch.long)
    enc = model.encoder
    opt = torch.optim.Adam(
        [{"params": enc.parameters(), "lr": 1e-4}, {"params": head.parameters(), "lr": 1e-3}]
    )
    g = torch.Generator().manual_seed(1)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for epoch in range(1, args.finetune_epochs + 1):
        enc.train()
        te = time.perf_counter()
        order = rng.permutation(keep)
        total = 0.0
        for start in range(0, len(order), 256):
            idx = np.sort(order[start : start + 256])
            x = augment(normalizer.to_tensor(fit.images[idx]), policy, normalizer, g)
            loss = F.cross_entropy(head(pooled(enc, x)), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss) * len(idx)
        enc.eval()
        train_s = time.perf_counter() - te
        fit_f = encode_features(model, fit.images, normalizer)["pooled"].astype(np.float64)
        test_f = encode_features(model, test.images, normalizer)["pooled"].astype(np.float64)
        with torch.no_grad():
            pred = head(torch.tensor(test_f, dtype=torch.float32)).argmax(1).numpy()
        record(
            f"3 fine-tune encoder+head, CE on views of confident ({args.rule}), epoch {epoch}: head",
            feats["test_y"],
            pred,
            time.perf_counter() - t0,
            {"train loss": round(total / len(order), 4), "epoch train s": round(train_s)},
            path,
        )
        tr = time.perf_counter()
        fx, tx = prepare(fit_f, test_f, pca=args.pca, whiten=not args.no_whiten)
        test_pred, _, _ = cluster(fx, tx, cov=args.cov)
        record(
            f"3 fine-tune epoch {epoch}: re-fitted mixture on the new pooled features",
            feats["test_y"],
            test_pred,
            time.perf_counter() - tr,
            None,
            path,
        )


if __name__ == "__main__":
    with threadpool_limits(1):
        raise SystemExit(main())
