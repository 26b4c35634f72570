"""`quality.py` with another contrastive loss patched into the library: does the loss, rather
than the budget, hold the CIFAKE features back? (issue 13)

    python benchmarks/loss_probe.py cluster-head 10 1.0 --datasets cifake --tasks cifar10 \\
        --seeds 0 --methods aegmm --no-default --variant epochs=auto --out /tmp/exp/cc10
    python benchmarks/loss_probe.py decoupled --datasets cifake ...

cluster-head K WEIGHT: Contrastive Clustering's cluster-level loss (Li et al., AAAI 2021) beside
NT-Xent: an MLP head on the pooled features gives K soft assignments per view; the K assignment
columns of one view are contrasted with those of the other (temperature 1), and the entropy of the
mean assignment is kept high. WEIGHT scales it against NT-Xent. The head is used only by the loss:
the mixture still clusters the pooled features.

decoupled: the decoupled contrastive loss (Yeh et al., ECCV 2022): NT-Xent with the positive taken
out of the softmax's denominator, said to converge faster at small batches.

multicrop N SIZE: SwAV's multi-crop (Caron et al., NeurIPS 2020) for NT-Xent: besides the two
views, N small views of SIZE pixels (crop area 0.05-0.4 of the image) per image, through the same
encoder in a second pass. Every view's positives are the other views of its image (SupCon's
multi-positive form, which is NT-Xent at N = 0). A 16-pixel view costs a quarter of a 32-pixel one.

nnclr SUPPORT WEIGHT: nearest-neighbour positives (NNCLR, Dwibedi et al., ICCV 2021): each first
view's projection is replaced by its nearest neighbour in a support set of the last SUPPORT
first-view projections and contrasted with the second views (and the other way round); WEIGHT
blends this loss with plain NT-Xent (1: NNCLR's loss alone).

The patches replace functions of `aegmm.contrastive` for this process only. quality.md records the
command without the probe's own arguments; the NOTES beside committed results give them. No
`--cache`: its key does not know the patch.
"""

from __future__ import annotations

import math
import sys
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aegmm.contrastive as contrastive  # noqa: E402
import quality  # noqa: E402

USAGE = (
    "usage: loss_probe.py {cluster-head K WEIGHT | decoupled | multicrop N SIZE | nnclr SUPPORT WEIGHT} "
    "[quality.py options, without --cache]"
)
SMALL_CROP_SCALE = (0.05, 0.4)  # multi-crop's small views: area as a fraction of the image
CLUSTER_TEMPERATURE = 1.0  # Contrastive Clustering's cluster-level temperature


def cluster_loss(a: Tensor, b: Tensor) -> Tensor:
    """Cluster-level contrast of two views' (B, K) logits, plus log K minus the entropy of each
    view's mean assignment (0 when the clusters are used evenly)."""
    k = a.shape[1]
    pa, pb = a.float().softmax(1), b.float().softmax(1)  # (B, K)
    means = (pa.mean(0), pb.mean(0))  # (K,) each: how often each cluster is used
    spread = sum(math.log(k) + (m * m.log()).sum() for m in means)
    columns = F.normalize(torch.cat([pa.T, pb.T]), dim=1)  # (2K, B)
    logits = columns @ columns.T / CLUSTER_TEMPERATURE
    logits = logits.masked_fill(torch.eye(2 * k, dtype=torch.bool, device=a.device), float("-inf"))
    positives = torch.cat([torch.arange(k, 2 * k), torch.arange(k)]).to(a.device)
    return F.cross_entropy(logits, positives) + spread


def decoupled_loss(z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
    """NT-Xent's call signature; the denominator sums over the 2B - 2 negatives only."""
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)  # (2B, D)
    n = len(z1)
    logits = z @ z.T / temperature
    rows = torch.arange(2 * n, device=z.device)
    positives = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    excluded = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    excluded[rows, positives] = True
    negatives = torch.logsumexp(logits.masked_fill(excluded, float("-inf")), dim=1)
    return (negatives - logits[rows, positives]).mean()


def patch_cluster_head(k: int, weight: float) -> None:
    """ContrastiveModel gains a cluster head on the pooled features; the loss gains its term."""
    model, run = contrastive.ContrastiveModel, contrastive._Run
    init, losses = model.__init__, run.losses

    def patched_init(self, model_config, options) -> None:
        init(self, model_config, options)  # the same draws as before for the encoder and head
        width = self.autoencoder.encoder.bottleneck.in_features
        self.cluster = nn.Sequential(
            nn.Linear(width, options.hidden_dim, bias=False),
            nn.BatchNorm1d(options.hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(options.hidden_dim, k),
        )

    def patched_forward(self, x: Tensor) -> tuple[Tensor, None]:
        h = self.autoencoder.encoder.pooled(x)  # (2B, 512 x width)
        self.cluster_logits = self.cluster(h)  # (2B, K), read by the loss below
        return self.head(self.autoencoder.encoder.bottleneck(h)), None

    def patched_losses(self, x: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        out = losses(self, x, generator)
        logits, n = self.model.cluster_logits, len(x)
        out["cluster"] = cluster_loss(logits[:n], logits[n:])
        return out

    model.__init__, model.forward, run.losses = patched_init, patched_forward, patched_losses
    run.total = lambda self, parts: parts["contrastive"] + weight * parts["cluster"]


def multiview_loss(projections: list[Tensor], temperature: float) -> Tensor:
    """NT-Xent over V views of B images, (B, D) each: every view's positives are the other V - 1
    views of its image, its negatives every view of the other images (SupCon's form)."""
    z = F.normalize(torch.cat(projections).float(), dim=1)  # (VB, D)
    v, n = len(projections), len(projections[0])
    itself = torch.eye(v * n, dtype=torch.bool, device=z.device)
    log_prob = (z @ z.T / temperature).masked_fill(itself, float("-inf")).log_softmax(1)
    ids = torch.arange(n, device=z.device).repeat(v)
    positive = (ids[:, None] == ids[None, :]) & ~itself
    return -(log_prob.masked_fill(~positive, 0.0).sum(1) / (v - 1)).mean()


def patch_multicrop(count: int, size: int) -> None:
    """Each step adds `count` small views per image to the two views; the loss sees all of them."""
    run = contrastive._Run

    def patched_losses(self, x: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        policy = replace(self.policy, size=size, crop_scale=SMALL_CROP_SCALE)
        small = torch.cat([contrastive.augment(x, policy, self.normalizer, generator) for _ in range(count)])
        with contrastive.autocast(self.device, self.plan):
            large, _ = self.model(self.views(x, generator))
            little, _ = self.model(small.contiguous(memory_format=torch.channels_last))
        n = len(x)
        views = [large[:n], large[n:], *little.split(n)]
        return {"contrastive": multiview_loss(views, self.options.temperature)}

    run.losses = patched_losses


def neighbour_loss(z1: Tensor, z2: Tensor, support: Tensor, temperature: float) -> Tensor:
    """NNCLR's symmetric loss on unit vectors (B, D): each view's nearest vector in `support` (S, D),
    without gradient, must pick its image's other view among the other view's batch."""
    rows = torch.arange(len(z1), device=z1.device)

    def one_way(a: Tensor, b: Tensor) -> Tensor:
        nearest = support[(a.detach() @ support.T).argmax(1)]  # (B, D)
        return F.cross_entropy(nearest @ b.T / temperature, rows)

    return 0.5 * (one_way(z1, z2) + one_way(z2, z1))


def patch_nnclr(support: int, weight: float) -> None:
    """NT-Xent blended with NNCLR's nearest-neighbour loss; the support set lives on the run."""
    run = contrastive._Run

    def patched_losses(self, x: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        with contrastive.autocast(self.device, self.plan):
            projections, _ = self.model(self.views(x, generator))
        n = len(x)
        z1, z2 = (F.normalize(p.float(), dim=1) for p in (projections[:n], projections[n:]))
        if not hasattr(self, "support"):  # NNCLR starts from random unit vectors
            g = torch.Generator().manual_seed(self.train.seed)
            self.support = F.normalize(torch.randn(support, z1.shape[1], generator=g), dim=1)
            self.next_slot = 0
        neighbours = neighbour_loss(z1, z2, self.support, self.options.temperature)
        slots = (self.next_slot + torch.arange(n)) % support
        self.support[slots], self.next_slot = z1.detach(), int(slots[-1] + 1) % support
        plain = contrastive.nt_xent(z1, z2, self.options.temperature)
        return {"contrastive": (1 - weight) * plain + weight * neighbours}

    run.losses = patched_losses


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or "--cache" in argv:
        raise SystemExit(USAGE)
    if argv[0] == "cluster-head":
        try:
            k, weight, rest = int(argv[1]), float(argv[2]), argv[3:]
        except (IndexError, ValueError):
            wanted = "cluster-head takes K (a whole number) and WEIGHT"
            raise SystemExit(f"{USAGE}\n{wanted}, got {argv[1:3]}") from None
        patch_cluster_head(k, weight)
        print(f"cluster head: K={k}, weight {weight}", flush=True)
    elif argv[0] == "decoupled":
        contrastive.nt_xent, rest = decoupled_loss, argv[1:]
        print("decoupled contrastive loss", flush=True)
    elif argv[0] in ("multicrop", "nnclr"):
        multicrop = argv[0] == "multicrop"
        try:  # multicrop N SIZE: two whole numbers; nnclr SUPPORT WEIGHT: a whole number and a weight
            a, b, rest = int(argv[1]), (int if multicrop else float)(argv[2]), argv[3:]
        except (IndexError, ValueError):
            raise SystemExit(f"{USAGE}\n{argv[0]} takes two numbers, got {argv[1:3]}") from None
        (patch_multicrop if multicrop else patch_nnclr)(a, b)
        print(f"{argv[0]}: {a}, {b}", flush=True)
    else:
        raise SystemExit(USAGE)
    return quality.main(rest)


if __name__ == "__main__":
    raise SystemExit(main())
