"""`quality.py` with SGD in place of Adam for every training run of the process: the optimiser,
one of issue 13's levers not yet measured. SimCLR trains with momentum SGD (under LARS at large
batches); aegmm's Adam at 1e-3 came from the study's autoencoder.

    python benchmarks/optimizer_probe.py 0.9 5e-4 --datasets cifake --tasks cifar10 --seeds 0 \\
        --methods aegmm --no-default --variant lr=0.1 --out /tmp/exp/sgd

MOMENTUM and WEIGHT_DECAY are SGD's; the learning rate is the run's own (`--variant lr=...`),
under the same schedule as Adam's (cosine to 0 for contrastive training). The patch wraps
`aegmm.train.Session.start` for this process only, so every trainer gets the SGD optimiser;
quality.md records the command without MOMENTUM and WEIGHT_DECAY, and the NOTES beside committed
results give them. No `--cache`: its key does not know the patch.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aegmm.train as train  # noqa: E402
import quality  # noqa: E402
from common import number_argument  # noqa: E402

USAGE = "usage: optimizer_probe.py MOMENTUM WEIGHT_DECAY [quality.py options, without --cache]"


def sgd_start(momentum: float, weight_decay: float):
    """`Session.start` with the session's Adam replaced by SGD at the same learning rate."""
    original = train.Session.start.__func__

    def start(cls, *args, **kwargs):
        session = original(cls, *args, **kwargs)
        lr = session.train_config.lr
        params = session.model.parameters()
        session.optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
        return session

    return classmethod(start)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2 or "--cache" in argv:
        raise SystemExit(USAGE)
    momentum = number_argument(argv[0], USAGE, "MOMENTUM, a number in [0, 1)", lambda m: 0 <= m < 1)
    weight_decay = number_argument(argv[1], USAGE, "WEIGHT_DECAY, a number in [0, 1)", lambda w: 0 <= w < 1)
    train.Session.start = sgd_start(momentum, weight_decay)
    print(f"SGD in place of Adam: momentum {momentum}, weight decay {weight_decay}", flush=True)
    return quality.main(argv[2:])


if __name__ == "__main__":
    raise SystemExit(main())
